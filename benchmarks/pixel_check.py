"""The pixel check on strips, on copies resized to another aspect ratio (twelfth session), on
overlapping views (thirteenth session) and on different lanes of one blot (fourteenth session).

    python benchmarks/pixel_check.py [--model PATH] [--n 8] [--threads 2]

Prints, with the bundled model (or ``--model``), on generated panels (``screen.make_panel``,
seeds 5,000,000+; JPEG q70 copies):

* strips of 100 x 300 to 40 x 300 px: match and fused distance of a mirrored, a quarter-turned
  and an identical copy (medians over ``--n`` panels), and the largest match of ``--n``
  unrelated strips of the same shape;
* copies resized to another aspect ratio (0.7 to 1.5 along one axis): median match and how many
  of ``--n`` end over distance 1, with the check's stretch stage and without it
  (``PixelChecker(stretch=False)``), and the median f;
* overlapping views (two regions of one generated picture that share a given part of each,
  the second in a random pose, gamma-changed, JPEG): median match with the check's overlap stage
  (``PixelChecker(overlap=True)``) and without it (the default), how many match 0.6 or more and
  how many end at distance 1 or less (f fused with that match), each way, and the median f; and
  the largest match, with the stage, of views that share at most a tenth (as the re-use set's
  hard negatives do) and of unrelated same-size panels;
* blot-like pictures (lanes with bands at the same heights, each lane its own strengths): the
  match of two regions that share no pixel and of a real cropped copy, by the default check
  and without its line rule (``PixelChecker(structure=False)``; the thirteenth session's weak
  case, which the rule closed in the fourteenth);
* with ``--reuse``: the calibration re-use set (``evaluation.reuse``, 66 generated parents from
  seed 20,000,100, 20 triplets per family; never the test seeds): how many positives, random
  and hard negatives reach 0.6 by the default check, without its line rule, without its
  small-template discount, with the overlap
  stage, and with it but without its uniqueness rule (``OVERLAP_UNIQUE`` margin 0), with and
  without the line rule; about 3 minutes more;
* the check's seconds per pair with and without the stretch stage, with and without the
  overlap stage, with and without the line rule, and with and without the small-template
  discount (fifteenth session), on the same screen-like pairs (best of two, alternating, one
  process): ratios within one run.
"""
from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import check_switch, machine_line  # noqa: E402
from screen import make_panel, plant_copy  # noqa: E402

SEED = 5_000_000


def _jpeg(img: np.ndarray, quality: int = 70) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())), np.float32) / 255


def _resized(img: np.ndarray, sy: float, sx: float) -> np.ndarray:
    h, w = img.shape
    return np.asarray(Image.fromarray(img.astype(np.float32)).resize((round(w * sx), round(h * sy)),
                                                                      Image.Resampling.BILINEAR), np.float32)


def _scores(model, checker_kw, a, b):
    """match (the check with ``checker_kw``), f, and the fused distance of the pairs."""
    from napari_siamforensic.core.pixels import PixelChecker

    images = a + b
    n = len(a)
    match = PixelChecker(lambda i: images[i], **checker_kw)(np.arange(n), np.arange(n, 2 * n)).score
    f = np.asarray(model.distance(a, b, pixels=False), np.float64)
    return match, f, model.fuse(f, match)


def strips(model, n: int) -> None:
    print("| strip (px) | mirrored: match, distance | quarter-turned | identical | unrelated strips: largest match |")
    print("|---|---|---|---|---|")
    for shape in ((100, 300), (60, 360), (40, 300)):
        src = [make_panel(SEED + i, shape).astype(np.float32) for i in range(n)]
        cells = []
        for name, fn in (("mirrored", lambda x: x[:, ::-1]), ("turned", np.rot90), ("identical", lambda x: x)):
            m, _, d = _scores(model, {}, src, [_jpeg(np.ascontiguousarray(fn(x))) for x in src])
            cells.append(f"{np.nanmedian(m):.2f}, {np.median(d):.2f}")
        other = [make_panel(SEED + 1000 + i, shape).astype(np.float32) for i in range(n)]
        m, _, _ = _scores(model, {}, src, other)
        print(f"| {shape[0]} x {shape[1]} | " + " | ".join(cells) + f" | {np.nanmax(m):.2f} |")


def stretched(model, n: int) -> None:
    print("| aspect change (sy x sx) | match with / without the stage (median) | over distance 1 with / without | "
          "median f | unrelated, largest match with the stage |")
    print("|---|---|---|---|---|")
    src = [make_panel(SEED + 2000 + i, (200, 200)).astype(np.float32) for i in range(n)]
    for sy, sx in ((1.0, 0.9), (1.0, 0.8), (0.8, 1.0), (1.0, 1.25), (1.0, 0.7), (1.0, 1.5)):
        copies = [_jpeg(_resized(x, sy, sx)) for x in src]
        m1, f, d1 = _scores(model, {}, src, copies)
        m0, _, d0 = _scores(model, {"stretch": False}, src, copies)
        other = [make_panel(SEED + 3000 + i, c.shape).astype(np.float32) for i, c in enumerate(copies)]
        mo, _, _ = _scores(model, {}, src, other)
        print(f"| {sy} x {sx} | {np.median(m1):.2f} / {np.median(m0):.2f} | {int((d1 > 1).sum())} / "
              f"{int((d0 > 1).sum())} of {n} | {np.median(f):.2f} | {np.nanmax(mo):.2f} |")


def overlapping(model, n: int) -> None:
    print("| views share (rows x columns) | match with / without the stage (median) | match >= 0.6 with / without | "
          "distance <= 1 with / without | median f |")
    print("|---|---|---|---|---|")
    rng = np.random.default_rng(11)
    H, W = 180, 200
    for fy, fx in ((0.8, 0.8), (0.6, 0.6), (0.9, 0.45), (0.5, 0.5)):
        a, b = [], []
        for i in range(n):
            big = make_panel(SEED + 4000 + i, (2 * H, 2 * W)).astype(np.float32)
            dy, dx = round(H * (1 - fy)), round(W * (1 - fx))
            a.append(big[:H, :W])
            q = int(rng.integers(8))
            v = big[dy:dy + H, dx:dx + W]
            v = np.rot90(v[:, ::-1] if q >= 4 else v, q % 4)
            b.append(_jpeg(np.ascontiguousarray(v) ** float(rng.uniform(0.8, 1.25))))
        m1, f, d1 = _scores(model, {"overlap": True}, a, b)
        m0, _, d0 = _scores(model, {}, a, b)
        print(f"| {fy:.0%} x {fx:.0%} ({fy * fx:.0%} of each) | {np.nanmedian(m1):.2f} / {np.nanmedian(m0):.2f} | "
              f"{int(np.sum(m1 >= 0.6))} / {int(np.sum(m0 >= 0.6))} of {n} | {int((d1 <= 1).sum())} / "
              f"{int((d0 <= 1).sum())} | {np.median(f):.2f} |")
    a, b, o = [], [], []
    for i in range(n):
        big = make_panel(SEED + 5000 + i, (H, 2 * W)).astype(np.float32)
        a.append(big[:, :W])
        b.append(_jpeg(np.ascontiguousarray(big[:, round(0.9 * W):round(1.9 * W)])))
        o.append(make_panel(SEED + 6000 + i, (H, W)).astype(np.float32))
    m, _, _ = _scores(model, {"overlap": True}, a, b)
    mo, _, _ = _scores(model, {"overlap": True}, a, o)
    print(f"\nwith the stage, the largest match of {n} pairs of views sharing a tenth: {np.nanmax(m):.2f}; "
          f"of {n} unrelated pairs: {np.nanmax(mo):.2f}")


def blot_lanes(n: int) -> None:
    from napari_siamforensic.evaluation.reuse import blot_lanes as lane_picture

    different, crops = [], []
    for seed in range(n):
        lanes = lane_picture(seed)
        different.append((np.ascontiguousarray(lanes[:, :200]), _jpeg(np.ascontiguousarray(lanes[:, 210:410]), 80)))
        crops.append((np.ascontiguousarray(lanes[:, :200]), _jpeg(np.ascontiguousarray(lanes[20:200, 15:175]), 80)))
    from napari_siamforensic.core.pixels import PixelChecker

    images = [x for pair in different + crops for x in pair]
    a, b = np.arange(0, len(images), 2), np.arange(1, len(images), 2)
    for label, kw in (("the default check", {}), ("without the line rule", {"structure": False})):
        m = PixelChecker(images.__getitem__, **kw)(a, b).score
        md, mc = m[:n], m[n:]
        print(f"blot-like pictures ({n}), {label}: two regions sharing no pixel match {np.nanmin(md):.2f}-"
              f"{np.nanmax(md):.2f} ({int(np.sum(md >= 0.6))} of {n} at 0.6 or more); real cropped copies "
              f"{np.nanmin(mc):.2f}-{np.nanmax(mc):.2f}")


def reuse_overlap(n_parents: int = 66, per_family: int = 20, seed: int = 20_000_100) -> None:
    from napari_siamforensic._validation import as_image_list
    from napari_siamforensic.core import pixels
    from napari_siamforensic.core.synthetic import SCENE_KINDS, generate_scene
    from napari_siamforensic.evaluation.reuse import make_reuse_set

    kinds = [SCENE_KINDS[i % len(SCENE_KINDS)] for i in range(n_parents)]
    trip = make_reuse_set([generate_scene(k, seed + i) for i, k in enumerate(kinds)], seed, per_family, groups=kinds)
    anchors = as_image_list([t.anchor for t in trip], "anchors")
    print(f"| calibration re-use set ({len(trip)} triplets, seeds {seed:,}+): reach 0.6 | positives | random negatives "
          f"| hard negatives |")
    print("|---|---|---|---|")
    variants = (("the default check (no overlap stage)", {}, None),
                ("without the line rule", {"structure": False}, None),
                ("without the small-template discount", {"template_full_area": None}, None),
                ("with the overlap stage", {"overlap": True}, None),
                ("with it, no uniqueness rule", {"overlap": True}, (pixels.OVERLAP_UNIQUE[0], 0.0)),
                ("with it, no uniqueness rule, no line rule", {"overlap": True, "structure": False},
                 (pixels.OVERLAP_UNIQUE[0], 0.0)))
    others = {name: as_image_list([getattr(t, name) for t in trip], name)
              for name in ("positive", "negative_random", "negative_hard")}
    for label, kw, unique in variants:
        default, cells = pixels.OVERLAP_UNIQUE, []
        try:
            if unique is not None:
                pixels.OVERLAP_UNIQUE = unique
            for name, imgs in others.items():
                ims = anchors + imgs
                m = pixels.PixelChecker(ims.__getitem__, **kw)(np.arange(len(trip)), np.arange(len(trip), 2 * len(trip)))
                cells.append(f"{int(np.sum(np.nan_to_num(m.score) >= pixels.MATCH_THRESHOLD))}")
        finally:
            pixels.OVERLAP_UNIQUE = default
        print(f"| {label} | " + " | ".join(cells) + " |")


def stage_cost(stage: str, pairs_per_item: int = 20) -> None:
    """The check's seconds per pair with and without one stage (``"stretch"``, ``"overlap"``,
    ``"structure"``, the line rule, or ``"discount"``, the small-template discount; the others
    as they are by default) on the same screen-like pairs."""
    from napari_siamforensic.core.pixels import PixelChecker

    rng = np.random.default_rng(5)
    imgs = []
    for i in range(400):
        img = make_panel(7_000_000 + i, (int(rng.integers(128, 257)), int(rng.integers(128, 257))))
        imgs.append(img.astype(np.float32))
        if i % 4 == 0:
            imgs.append(plant_copy(img, np.random.default_rng(i))[0].astype(np.float32))
    a = np.repeat(np.arange(len(imgs)), pairs_per_item)
    b = rng.integers(0, len(imgs), len(a))
    a, b = a[a != b], b[a != b]
    times, scores = {True: [], False: []}, {}
    for _ in range(2):
        for st in (False, True):
            chk = PixelChecker(imgs.__getitem__, **check_switch(stage, st))
            for i in range(len(imgs)):
                chk.thumb(i)
            t = time.perf_counter()
            scores[st] = chk(a, b).score
            times[st].append(time.perf_counter() - t)
    ms = {k: 1e3 * min(v) / len(a) for k, v in times.items()}
    raised = scores[True] - scores[False]
    print(f"check on {len(a)} screen-like pairs of {len(imgs)} panels: {ms[False]:.3f} ms per pair without the "
          f"{stage} stage, {ms[True]:.3f} with ({ms[True] / ms[False]:.2f}x); scores it raised: "
          f"{int(np.sum(raised > 1e-6))}, by at most {np.nanmax(raised):.3f}, to at most "
          f"{np.nanmax(np.where(raised > 1e-6, scores[True], np.nan)) if np.any(raised > 1e-6) else float('nan'):.3f}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model file (default: the bundled model)")
    p.add_argument("--n", type=int, default=8, help="panels per row")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reuse", action="store_true",
                   help="also count the calibration re-use set's pairs at 0.6 with and without the overlap stage")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    import napari_siamforensic as sf

    model = sf.load_model(args.model, device="cpu")
    print(machine_line())
    print(f"model: {args.model or 'bundled default'} ({model.identity()}), pixel_check {model.pixel_check}\n")
    strips(model, args.n)
    print()
    stretched(model, args.n)
    print()
    overlapping(model, args.n)
    print()
    blot_lanes(max(args.n, 6))
    print()
    if args.reuse:
        reuse_overlap()
        print()
    stage_cost("stretch")
    stage_cost("overlap")
    stage_cost("structure")
    stage_cost("discount")


if __name__ == "__main__":
    main()
