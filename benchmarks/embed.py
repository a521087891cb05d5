"""Embedding throughput fp32 vs bf16, GFLOP/s against the in-run matmul peak, phash, agreement.

    python benchmarks/embed.py                   # quick: 256 images (~1 min on 2 busy cores)
    python benchmarks/embed.py --threads 1       # one thread (robust under load)
    python benchmarks/embed.py --images 1024     # more images
    python benchmarks/embed.py --model my.safetensors --device cuda

The model: ``--model PATH`` if given, else ``runs/default/checkpoint.safetensors`` (the default
model's training run) when it exists, else a freshly initialised ``SiameseNet`` saved to a
temporary file; always loaded with ``napari_siamforensic.load_model``.

Images: 128 x 128 tiles of generated scenes (evaluation seeds, ``core.synthetic``).
Prints, in the same run:

* FLOPs of one forward pass (conv and linear multiply-adds x 2, counted with hooks and
  cross-checked with ``torch.utils.flop_counter``);
* the matrix-multiply peak of these cores now (fp32 and bf16), the reference for GFLOP/s;
* images/s of ``ForensicModel.embed_tensor`` (network only, batch 256, already 128 px tensors)
  and of ``ForensicModel.embed`` (numpy arrays in, normalisation and resizing included), fp32
  and bf16, with GFLOP/s achieved; ``imagehash.phash`` on the same images (PIL conversion
  included);
* agreement of bf16 with fp32 on the paper's distance f for pairs (anchor, deformed copy) and
  (anchor, another image): decision flips (f <= 1), |delta f| percentiles, and |delta f|
  relative to each pair's margin |f_fp32 - 1|.

Benchmarks are not tests: nothing here asserts a time.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (contention_note, forward_flops, load, machine_line, matmul_peak, scenes, set_threads,  # noqa: E402
                     table, timed)

import napari_siamforensic as sf  # noqa: E402
from napari_siamforensic.core.deform import deform_images  # noqa: E402
from napari_siamforensic.core.model import SiameseNet  # noqa: E402
from napari_siamforensic.core.synthetic import EVALUATION_SEED_START  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "runs" / "default" / "checkpoint.safetensors"


def pick_model(path: str | None, tmpdir: str) -> tuple[str, str]:
    if path:
        return path, f"--model {path}"
    if CHECKPOINT.is_file():     # a snapshot: training rewrites the file every few minutes
        import shutil

        from safetensors import safe_open

        snap = os.path.join(tmpdir, "checkpoint.safetensors")
        shutil.copyfile(CHECKPOINT, snap)
        with safe_open(snap, "pt") as fh:
            step = (fh.metadata() or {}).get("step", "?")
        return snap, f"runs/default/checkpoint.safetensors (the default model's training run at step {step})"
    net = SiameseNet()
    g = torch.Generator().manual_seed(0)
    net.reset_parameters(g)
    tmp = os.path.join(tmpdir, "fresh.safetensors")
    sf.ForensicModel(net, "cpu").save(tmp)
    return tmp, "a freshly initialised SiameseNet (no trained checkpoint found)"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=256, help="images to embed per timing (default 256)")
    ap.add_argument("--pairs", type=int, default=128, help="anchors for the agreement check (2 pairs each)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    set_threads(args.threads)
    print(machine_line(args.device))
    note = contention_note()
    if note:
        print(note)
    tmpdir = tempfile.mkdtemp(prefix="sf-embed-")
    path, which = pick_model(args.model, tmpdir)
    print(f"model: {which}")
    models = {p: sf.load_model(path, device=args.device, precision=p, batch_size=args.batch)
              for p in ("fp32", "bf16")}
    dev = models["fp32"].device

    flops = forward_flops(models["fp32"].net, models["fp32"].input_size)
    gflop = flops["hooks"] / 1e9
    fc = flops["flop_counter"]
    print(f"FLOPs of one forward pass (one 128 x 128 image): {gflop:.3f} GFLOP "
          f"(conv + linear multiply-adds x 2; torch.utils.flop_counter: "
          f"{'n/a' if fc is None else f'{fc / 1e9:.3f} GFLOP'})")
    peaks = {"fp32": matmul_peak(torch.float32, device=dev), "bf16": matmul_peak(torch.bfloat16, device=dev)}
    print("matmul peak now (1024^3, best of 5): " + ", ".join(
        f"{p} {v['wall']:.0f} GFLOP/s wall, {v['cpu']:.0f} GFLOP per CPU-s" for p, v in peaks.items()) + f"; {load()}")

    # ------------------------------------------------------------------ images
    n_scenes = max(args.pairs, (args.images + 3) // 4)
    pool = np.stack([im for _, im in scenes(n_scenes, seed=EVALUATION_SEED_START, size=256)])
    tiles = np.concatenate([pool[:, :128, :128], pool[:, :128, 128:], pool[:, 128:, :128],
                            pool[:, 128:, 128:]])[:args.images]
    tiles_u8 = [np.round(t * 255).astype(np.uint8) for t in tiles]
    x = models["fp32"].prepare(list(tiles))                                    # (N, 1, 128, 128)
    n = x.shape[0]

    rows = []
    results = {}
    cpu_device = dev.type == "cpu"
    for p, model in models.items():
        peak = peaks[p]["cpu" if cpu_device else "wall"]
        r = timed(lambda: model.embed_tensor(x), repeats=args.repeats, warmup=1, device=dev)
        ips, ipc = n / r["min"], n / r["cpu"]
        results[p] = ips
        achieved = (ipc if cpu_device else ips) * gflop
        rows.append([f"network {p}: embed_tensor (128 px tensors)", str(dev), f"{ips:.0f}", f"{n / r['median']:.0f}",
                     f"{ipc:.0f}", f"{achieved:.0f} ({100 * achieved / peak:.0f}% of {peak:.0f})", r["load"]])
        r = timed(lambda: model.embed(tiles_u8), repeats=args.repeats, warmup=1, device=dev)
        achieved = (n / r["cpu"] if cpu_device else n / r["min"]) * gflop
        rows.append([f"network {p}: embed (uint8 arrays in)", str(dev), f"{n / r['min']:.0f}", f"{n / r['median']:.0f}",
                     f"{n / r['cpu']:.0f}", f"{achieved:.0f} ({100 * achieved / peak:.0f}%)", r["load"]])
    import imagehash
    from PIL import Image

    r = timed(lambda: [imagehash.phash(Image.fromarray(t)) for t in tiles_u8], repeats=args.repeats, warmup=1)
    results["phash"] = n / r["min"]
    rows.append(["imagehash.phash (uint8 arrays in)", "cpu", f"{n / r['min']:.0f}", f"{n / r['median']:.0f}",
                 f"{n / r['cpu']:.0f}", "", r["load"]])
    print()
    print(f"throughput on {n} images, batch {args.batch} (images/s from the best and the median of "
          f"{args.repeats} runs after a warm-up; per CPU-s = images per process CPU second, user + system)")
    unit = "GFLOP per CPU-s (% of matmul's)" if cpu_device else "GFLOP/s (% of matmul peak)"
    print(table(rows, ["method", "device", "images/s (best)", "images/s (median)", "images per CPU-s", unit, "load"]))
    print(f"bf16 / fp32: {results['bf16'] / results['fp32']:.2f}x; phash / network bf16: "
          f"{results['phash'] / results['bf16']:.2f}x; phash / network fp32: {results['phash'] / results['fp32']:.2f}x")

    # ------------------------------------------------------------------ agreement bf16 vs fp32
    k = args.pairs
    anchors = pool[:k, 64:192, 64:192]
    copies = deform_images(pool[:k], seed=1)                                # (k, 128, 128)
    others = np.roll(anchors, 1, axis=0)
    a = list(anchors) + list(anchors)
    b = list(copies) + list(others)
    f = {p: m.distance(a, b, poses="none").astype(np.float64) for p, m in models.items()}
    delta = np.abs(f["bf16"] - f["fp32"])
    margin = np.abs(f["fp32"] - 1.0)
    rel = delta / np.maximum(margin, 1e-12)
    flips = (f["bf16"] <= 1) != (f["fp32"] <= 1)
    print()
    print(f"agreement bf16 vs fp32 on f over {len(a)} pairs ({k} anchor/deformed-copy, {k} anchor/other); "
          f"f_fp32 median {np.median(f['fp32']):.3f}, share f_fp32 <= 1: {np.mean(f['fp32'] <= 1):.2f}")
    print(table([[f"{np.median(delta):.4f}", f"{np.percentile(delta, 99):.4f}", f"{delta.max():.4f}",
                  f"{100 * np.median(rel):.2f}%", f"{100 * np.percentile(rel, 99):.2f}%", f"{100 * rel.max():.1f}%",
                  f"{int(flips.sum())} ({100 * flips.mean():.2f}%)", load()]],
                ["|df| median", "|df| p99", "|df| max", "|df|/margin median", "|df|/margin p99",
                 "|df|/margin max", "decision flips", "load"]))
    print("(|df| is in units of the decision threshold f = 1, so 0.01 is 1% of it; margin = |f_fp32 - 1|)")


if __name__ == "__main__":
    main()
