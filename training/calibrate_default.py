"""Fit a model's pixel check and calibrate ``same_probability`` on held-out figure-re-use pairs.

    python training/calibrate_default.py --model src/napari_siamforensic/weights/default.safetensors --write

Pairs come from `napari_siamforensic.evaluation.reuse` (manipulations written independently of
training) on generated scenes from seeds 20,000,000+ (neither training, < 1,000,000, nor the
evaluation benchmark, 10,000,000+). Parents are split in two. On the first half:

1. ``pixel_check`` (weight, center) by a class-balanced logistic regression of "duplicate" on
   (f, match) (``calibrate_pixels``; skipped with ``--no-pixels``, which removes it);
2. ``calibration`` (scale, offset) by logistic regression on 1 - distance, the fused distance
   (``calibrate``).

The second half reports the decision accuracy at ``distance <= 1`` (mean of the two classes'),
the Brier score and the reliability curve before and after. ``--write`` stores both in the model
file; ``--plot`` writes the reliability diagram.
"""
from __future__ import annotations

import argparse

import numpy as np

import napari_siamforensic as sf
from napari_siamforensic.core.pixels import pair_match
from napari_siamforensic.core.scoring import calibrate_pixels
from napari_siamforensic.core.synthetic import SCENE_KINDS, generate_scene
from napari_siamforensic.evaluation.metrics import decision_accuracy
from napari_siamforensic.evaluation.reuse import make_reuse_set

CALIBRATION_SEED_START = 20_000_000


def pairs(model, parents, seed, n_per_family):
    """f (pose minimum, no pixel check), the pixel check's match, and the labels of the
    re-use triplets' (anchor, positive), (anchor, random negative), (anchor, hard negative)."""
    trip = make_reuse_set(parents, seed, n_per_family)
    a = [t.anchor for t in trip] * 3
    b = [t.positive for t in trip] + [t.negative_random for t in trip] + [t.negative_hard for t in trip]
    y = np.r_[np.ones(len(trip)), np.zeros(2 * len(trip))].astype(bool)
    f = np.asarray(model.distance(a, b, pixels=False), np.float64)
    match = pair_match(a, b).score.astype(np.float64)
    return f, match, y


def reliability(p, y, bins=10):
    edges = np.linspace(0, 1, bins + 1)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (p >= lo) & ((p < hi) if hi < 1 else (p <= hi))
        if m.any():
            rows.append((lo, hi, int(m.sum()), float(p[m].mean()), float(y[m].mean())))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--parents", type=int, default=44)
    ap.add_argument("--n-per-family", type=int, default=8)
    ap.add_argument("--no-pixels", action="store_true",
                    help="fit no pixel check (and remove the model's): the distance stays f")
    ap.add_argument("--write", action="store_true", help="store the fitted pixel check and calibration in the model file")
    ap.add_argument("--plot", default=None, help="PNG path for the reliability diagram")
    args = ap.parse_args()
    model = sf.load_model(args.model, device="cpu")
    parents = [generate_scene(SCENE_KINDS[i % len(SCENE_KINDS)], CALIBRATION_SEED_START + i, (512, 512))
               for i in range(args.parents)]
    half = len(parents) // 2
    f_fit, m_fit, y_fit = pairs(model, parents[:half], CALIBRATION_SEED_START, args.n_per_family)
    f_test, m_test, y_test = pairs(model, parents[half:], CALIBRATION_SEED_START + 1, args.n_per_family)
    print(f"fit pairs {len(y_fit)}, report pairs {len(y_test)} ({int(y_test.sum())} duplicates)")
    model.pixel_check = None
    model.calibration = (1.0, 0.0)
    p_before = model.probability_from_distance(f_test)          # the paper's sigmoid(1 - f)
    if args.no_pixels:
        print("pixel check: none (distance = f)")
    else:
        weight, center = calibrate_pixels(model, f_fit, m_fit, y_fit)
        print(f"pixel check: distance = soft_floor(f + {weight:.3f} * ({center:.3f} - match))")
    d_fit, d_test = model.fuse(f_fit, m_fit), model.fuse(f_test, m_test)
    print(f"decision accuracy (<= 1) on the report pairs: f {decision_accuracy(f_test[y_test], f_test[~y_test]):.3f}, "
          f"distance {decision_accuracy(d_test[y_test], d_test[~y_test]):.3f}")
    scale, offset = sf.calibrate(model, d_fit, y_fit)
    p_after = model.probability_from_distance(d_test)
    brier = lambda p: float(np.mean((p - y_test) ** 2))  # noqa: E731
    print(f"calibration: p = sigmoid({scale:.3f} * (1 - distance) + {offset:.3f})")
    print(f"Brier score on held-out pairs: paper sigmoid(1 - f) {brier(p_before):.4f}, calibrated {brier(p_after):.4f}")
    print("| bin | pairs | mean p (paper) | mean p (calibrated) | observed duplicate share |")
    print("|---|---|---|---|---|")
    rb = {(r[0]): r for r in reliability(p_before, y_test)}
    for lo, hi, n, mp, obs in reliability(p_after, y_test):
        print(f"| {lo:.1f}-{hi:.1f} | {n} | - | {mp:.3f} | {obs:.3f} |")
    for lo, hi, n, mp, obs in rb.values():
        print(f"| {lo:.1f}-{hi:.1f} (paper) | {n} | {mp:.3f} | - | {obs:.3f} |")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        ax.plot([0, 1], [0, 1], "k:", lw=1, label="perfect")
        for p, name in ((p_before, f"paper sigmoid(1-f), Brier {brier(p_before):.3f}"),
                        (p_after, f"calibrated distance, Brier {brier(p_after):.3f}")):
            rows = reliability(p, y_test)
            line, = ax.plot([r[3] for r in rows], [r[4] for r in rows], "o-", label=name)
            for r in rows:        # pairs per bin: a bin of one pair is not a curve
                ax.annotate(str(r[2]), (r[3], r[4]), textcoords="offset points", xytext=(4, 4), fontsize=7,
                            color=line.get_color())
        ax.set_xlabel("predicted probability of 'duplicate'")
        ax.text(0.04, 0.5, "numbers: pairs in the bin", transform=ax.transAxes, fontsize=7)
        ax.set_ylabel("observed share of duplicates")
        ax.set_title(f"Reliability on {len(y_test)} held-out pairs")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)
        print("wrote", args.plot)
    if args.write:
        model.save(args.model, dtype="float16")
        print("pixel check and calibration written to", args.model)


if __name__ == "__main__":
    main()
