"""Scribble segmentation benchmark: the forensic features vs an ilastik-like filter bank.

    python benchmarks/segmentation.py                      # default model, else the checkpoint
    python benchmarks/segmentation.py --model my.safetensors --size 384 --threads 2

Images with ground truth we may use: generated scenes (``labelled_scene``: nuclei, cells,
phase; evaluation seeds, never training seeds) and scikit-image's ``coins`` with labels derived
by the classic sobel + watershed recipe (checked by eye). Scribbles are simulated from the
ground truth: a few short strokes per class inside the eroded class area, about 1% of the
pixels in all. Every method is fitted on the same painted pixels with the same forest
(the Segmenter's default ``RandomForestClassifier``, 50 trees, leaves >= 2 px) and scored on every pixel:

* ``siam+filters``: Segmenter with the model (blocks 1-3 = 224 conv features + 16 filters)
* ``siam``: the paper's features only (blocks 1-3, no filters)
* ``random+filters``: the same network freshly initialised (seed 0), + filters
* ``filters``: our 16 filter features alone
* ``skimage-mbf``: ``skimage.feature.multiscale_basic_features`` (intensity, edges, texture at
  sigma 1..16; what ilastik users know) + the same forest

Then timings on a 1024 x 1024 image: features (cold), fit + predict with cached features,
refit after one new stroke. Prints the machine, the torch threads and the load average, since
timings on a shared machine vary.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[1]


def coins_with_truth():
    """skimage's coins and a foreground mask: watershed of the sobel elevation map from
    markers at dark (< 30) and bright (> 150) pixels, holes filled (the scikit-image tutorial)."""
    from skimage import data, filters, segmentation

    img = data.coins()
    markers = np.zeros_like(img, np.int32)
    markers[img < 30] = 1
    markers[img > 150] = 2
    ws = segmentation.watershed(filters.sobel(img), markers)
    truth = ndi.binary_fill_holes(ws == 2)
    return img.astype(np.float32), truth


def scenes(size: int):
    from napari_siamforensic.core.synthetic import EVALUATION_SEED_START, labelled_scene

    out = []
    for kind in ("nuclei", "cells", "phase"):
        for k in range(2):
            seed = EVALUATION_SEED_START + 500 + k
            img, lab = labelled_scene(kind, seed, (size, size))
            out.append((f"{kind}-{seed}", img, lab > 0))
    img, truth = coins_with_truth()
    out.append(("skimage-coins", img, truth))
    return out


def simulate_scribbles(truth: np.ndarray, seed: int, fraction: float = 0.01, stroke: int = 25) -> np.ndarray:
    """Labels: 1 = background, 2 = foreground; short 3-px-wide random-walk strokes inside each
    eroded class area until about ``fraction`` of the pixels are painted (half per class)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(truth.shape, np.uint8)
    target = fraction * truth.size / 2
    for value, area in ((1, ~truth), (2, truth)):
        inner = ndi.binary_erosion(area, iterations=3)
        if not inner.any():
            inner = area
        pts = np.argwhere(inner)
        painted = 0
        for _ in range(200):
            if painted >= target:
                break
            y, x = pts[rng.integers(len(pts))]
            angle = rng.uniform(0, 2 * np.pi)
            for _ in range(stroke):
                angle += rng.normal(0, 0.3)
                y = int(np.clip(round(y + np.sin(angle) * 1.5), 1, truth.shape[0] - 2))
                x = int(np.clip(round(x + np.cos(angle) * 1.5), 1, truth.shape[1] - 2))
                if not inner[y, x]:
                    break
                block = (slice(y - 1, y + 2), slice(x - 1, x + 2))
                new = (labels[block] == 0) & inner[block]
                labels[block][new] = value
                painted += int(new.sum())
    return labels


def scores(pred_fg: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    iou = (pred_fg & truth).sum() / max(1, (pred_fg | truth).sum())
    return float(iou), float((pred_fg == truth).mean())


def skimage_mbf_method(img, labels, forest):
    """The filter bank + an unfitted copy of the Segmenter's forest (same class and options)."""
    from skimage.feature import multiscale_basic_features
    from sklearn.base import clone

    from napari_siamforensic.core.data import normalise_intensity

    feats = multiscale_basic_features(normalise_intensity(img), sigma_min=1, sigma_max=16)
    m = labels > 0
    clf = clone(forest).fit(feats[m], labels[m])
    return clf.predict(feats.reshape(-1, feats.shape[-1])).reshape(img.shape)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="model file (default: bundled default, else the checkpoint)")
    ap.add_argument("--size", type=int, default=384, help="side of the generated scenes")
    ap.add_argument("--threads", type=int, default=2, help="torch threads and forest jobs")
    ap.add_argument("--timing-size", type=int, default=1024)
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--sng-model", default=None, metavar="PATH",
                    help="a model trained with geometric deformations only (SN[G], e.g. training/train_default.py "
                         "--sng): adds its siam+filters column")
    ap.add_argument("--forest", choices=("random", "extra"), default=None,
                    help="the forest of every method in the accuracy table (default: the Segmenter's default)")
    ap.add_argument("--big", type=int, default=0, metavar="N",
                    help="also predict an N x N image tile by tile (e.g. 10000) and report the peak memory")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    from napari_siamforensic.core.features import fallback_model
    from napari_siamforensic.core.scoring import default_weights_path, load_model
    if args.model:
        model_path, which = Path(args.model), f"given file {args.model}"
    elif default_weights_path().is_file():
        model_path, which = default_weights_path(), "bundled default model"
    else:
        model_path = ROOT / "runs" / "default" / "checkpoint.safetensors"
        which = f"training checkpoint {model_path.relative_to(ROOT)} (no bundled default model yet)"
    model = load_model(model_path, device="auto")
    random_model = fallback_model(device=str(model.device))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import machine_line

    print(f"# {machine_line(str(model.device))}; device {model.device}")
    steps = sum(r.get("steps", 0) for r in model.info.get("runs", [])) or model.info.get("step", "?")
    print(f"# model: {which}, identity {model.identity()}, training steps {steps}")
    print(f"# load average at start: {os.getloadavg()}")

    forest = dict(n_jobs=args.threads, random_state=0)       # Segmenter's default forest otherwise
    if not args.skip_accuracy:
        sng = load_model(args.sng_model, device="auto") if args.sng_model else None
        if sng is not None:
            print(f"# SN[G] model: {args.sng_model}, identity {sng.identity()}, "
                  f"steps {sum(r.get('steps', 0) for r in sng.info.get('runs', [])) or '?'}")
        accuracy(args, model, random_model, forest if args.forest is None else {**forest, "forest": args.forest},
                 sng=sng)
    if not args.skip_timing:
        timing(args, model, forest)
    if args.big:
        big_image(args, model, forest)
    return 0


def accuracy(args, model, random_model, forest, sng=None):
    from napari_siamforensic.core.segment import Segmenter

    methods = {
        "siam+filters": lambda: Segmenter(model, **forest),
        "siam": lambda: Segmenter(model, filters=False, **forest),
        "random+filters": lambda: Segmenter(random_model, **forest),
        "filters": lambda: Segmenter(model, blocks=(), filters=True, **forest),
    }
    if sng is not None:
        methods["SN[G]+filters"] = lambda: Segmenter(sng, **forest)
    names = list(methods) + ["skimage-mbf"]
    print(f"# forest (all methods): forest={forest.get('forest', Segmenter().forest)!r} "
          f"n_estimators={Segmenter().n_estimators} min_samples_leaf={Segmenter().min_samples_leaf}")
    rows = []
    print(f"{'image':<22}{'painted':>8}  " + "  ".join(f"{n:>16}" for n in names) + "   (IoU / accuracy)")
    for i, (name, img, truth) in enumerate(scenes(args.size)):
        labels = simulate_scribbles(truth, seed=i)
        row = {}
        for mname, make in methods.items():
            seg = make().fit(img, labels)
            row[mname] = scores(seg.predict(img) == 2, truth)
        row["skimage-mbf"] = scores(skimage_mbf_method(img, labels, seg.forest_) == 2, truth)
        rows.append(row)
        print(f"{name:<22}{(labels > 0).mean():>8.3%}  " +
              "  ".join(f"{row[n][0]:>8.3f} / {row[n][1]:.3f}" for n in names), flush=True)
    mean = {n: (np.mean([r[n][0] for r in rows]), np.mean([r[n][1] for r in rows])) for n in names}
    print(f"{'mean':<22}{'':>8}  " + "  ".join(f"{mean[n][0]:>8.3f} / {mean[n][1]:.3f}" for n in names))
    print(f"# mean IoU siam+filters - skimage-mbf: {mean['siam+filters'][0] - mean['skimage-mbf'][0]:+.3f}; "
          f"siam - skimage-mbf: {mean['siam'][0] - mean['skimage-mbf'][0]:+.3f}")
    print(f"# load average after accuracy: {os.getloadavg()}", flush=True)


class Clock:
    """Wall time and this process's CPU time (all threads) of a block: on a shared machine the
    CPU seconds show what the work costs; CPU / cores is what an idle machine would take."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu

    def __str__(self):
        return f"{self.wall:.2f} s wall ({self.cpu:.2f} CPU s)"


def timing(args, model, forest):
    from napari_siamforensic.core.segment import Segmenter
    from napari_siamforensic.core.synthetic import EVALUATION_SEED_START, labelled_scene

    n = args.timing_size
    img, lab = labelled_scene("nuclei", EVALUATION_SEED_START + 900, (n, n))
    truth = lab > 0
    labels = simulate_scribbles(truth, seed=99)
    new = simulate_scribbles(truth, seed=123, fraction=0.0005)       # one more stroke per class
    labels2 = np.where(labels == 0, new, labels)
    seg = Segmenter(model, **forest)
    with Clock() as c_feat:
        for _ in seg.iter_cache_features(img):
            pass
    with Clock() as c_fit:
        seg.fit(img, labels)
    with Clock() as c_pred:
        pred = seg.predict(img)
    with Clock() as c_refit:
        seg.fit(img, labels2)
    with Clock() as c_view:
        seg.predict(img, region=(slice(0, 512), slice(0, 512)))
    seg_x = Segmenter(model, forest="extra", **forest)
    seg_x._cache = seg._cache                                # share the cached features
    with Clock() as x_fit:
        seg_x.fit(img, labels)
    with Clock() as x_pred:
        seg_x.predict(img)
    with Clock() as x_refit:
        seg_x.fit(img, labels2)
    f = seg.n_features_in_
    print(f"# {n}x{n} nuclei scene, {(labels > 0).sum()} painted px ({(labels > 0).mean():.2%}), "
          f"{f} features, IoU {scores(pred == 2, truth)[0]:.3f}; one new stroke adds "
          f"{int((labels2 > 0).sum() - (labels > 0).sum())} px")
    print(f"features, cold (all tiles, cached as float16, {seg._cache.nbytes / 2**20:.0f} MiB): {c_feat}")
    print(f"forest='random' (default): fit {c_fit}; predict {n}x{n} {c_pred}; "
          f"fit + predict {c_fit.wall + c_pred.wall:.2f} s wall ({c_fit.cpu + c_pred.cpu:.2f} CPU s); "
          f"refit after the new stroke {c_refit}; predict a 512x512 viewport {c_view}")
    print(f"forest='extra': fit {x_fit}; predict {n}x{n} {x_pred}; "
          f"fit + predict {x_fit.wall + x_pred.wall:.2f} s wall ({x_fit.cpu + x_pred.cpu:.2f} CPU s); "
          f"refit after the new stroke {x_refit}")
    print(f"feature memory per {seg.tile_size} px tile: {seg.tile_size ** 2 * f * 4 / 2**20:.0f} MiB float32 "
          f"(window with halo {seg.feature_settings_.halo} px), independent of the image size")
    print(f"# load average at end: {os.getloadavg()}")


def big_image(args, model, forest):
    """Fit on a 1024 px scene, then predict an N x N image (the scene tiled) through
    ``iter_predict``, writing each tile into a uint8 label image; peak resident memory is
    sampled in a thread. Features exist for one tile at a time (the feature cache is kept small
    here, ``cache_mb=64``), so the peak should not grow with N beyond the image itself, its
    float32 working copy and the labels."""
    from _common import PeakRSS
    from napari_siamforensic.core.segment import Segmenter
    from napari_siamforensic.core.synthetic import EVALUATION_SEED_START, labelled_scene

    n = args.big
    img, lab = labelled_scene("nuclei", EVALUATION_SEED_START + 900, (1024, 1024))
    labels = simulate_scribbles(lab > 0, seed=99)
    seg = Segmenter(model, cache_mb=64, **forest).fit(img, labels)
    reps = -(-n // 1024)
    big = np.tile((img * 255).clip(0, 255).astype(np.uint8), (reps, reps))[:n, :n]
    out = np.zeros((n, n), np.uint8)
    with PeakRSS() as mem, Clock() as c:
        tiles = 0
        for tp in seg.iter_predict(big):
            out[tp.rows, tp.cols] = tp.labels
            tiles += 1
    mib = 2 ** 20
    print(f"# {n}x{n} uint8 image ({big.nbytes / mib:.0f} MiB; a float32 copy is {n * n * 4 / mib:.0f} MiB), "
          f"{tiles} tiles of {seg.tile_size} px, {seg.n_features_in_} features: predicted in {c}; "
          f"peak RSS {(mem.peak - mem.start) / mib:.0f} MiB above the start of the prediction "
          f"(a full float32 feature stack would be {n * n * seg.n_features_in_ * 4 / 2**30:.0f} GiB); "
          f"foreground share {(out == 2).mean():.3f}")


if __name__ == "__main__":
    sys.exit(main())
