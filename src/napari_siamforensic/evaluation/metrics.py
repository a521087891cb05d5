"""Metrics on distances: lower distance = more alike, for every method (ours and baselines).

* :func:`triplet_accuracy`: share of triplets with ``d(anchor, positive) < d(anchor, negative)``;
  a tie counts one half (the expected score of breaking it at random, as ROC AUC does).
* :func:`pair_auc`: ROC AUC with duplicates as positives and ``-distance`` as the score.
* :func:`decision_accuracy`: accuracy of ``d <= threshold`` means duplicate, on a balanced
  set (the mean of the true-positive and true-negative rates), so it does not depend on
  how many negatives each positive has.

All return plain Python floats.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

__all__ = ["triplet_accuracy", "pair_auc", "decision_accuracy", "family_table"]


def _vec(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    if a.size == 0:
        raise ValueError(f"`{name}` is empty; expected at least one distance")
    if np.isnan(a).any():
        raise ValueError(f"`{name}` contains NaN distances")
    return a


def triplet_accuracy(d_pos, d_neg) -> float:
    """Share of triplets where the copy is closer than the negative (ties count 1/2).

    ``d_pos[i]`` and ``d_neg[i]`` are distances from the same anchor.

    >>> triplet_accuracy([0.1, 2.0, 0.5], [1.0, 1.0, 0.5])
    0.5
    """
    p, n = _vec(d_pos, "d_pos"), _vec(d_neg, "d_neg")
    if p.shape != n.shape:
        raise ValueError(f"`d_pos` and `d_neg` must have the same length, got {p.size} and {n.size}")
    return float(np.mean((p < n) + 0.5 * (p == n)))


def pair_auc(d_pos, d_neg) -> float:
    """ROC AUC of telling duplicate pairs (``d_pos``) from non-duplicates (``d_neg``).

    >>> pair_auc([0.1, 0.2], [0.15, 0.3])
    0.75
    """
    p, n = _vec(d_pos, "d_pos"), _vec(d_neg, "d_neg")
    y = np.r_[np.ones(p.size), np.zeros(n.size)]
    return float(roc_auc_score(y, -np.r_[p, n]))


def decision_accuracy(d_pos, d_neg, threshold: float = 1.0) -> float:
    """Balanced accuracy of the decision ``d <= threshold`` means "duplicate".

    >>> decision_accuracy([0.5, 1.0, 1.5, 0.2], [2.0, 0.9])
    0.625
    """
    p, n = _vec(d_pos, "d_pos"), _vec(d_neg, "d_neg")
    return float(0.5 * (np.mean(p <= threshold) + np.mean(n > threshold)))


def family_table(families, d_pos, d_neg_random, d_neg_hard, *, threshold: float | None = 1.0) -> pd.DataFrame:
    """Per-family breakdown (one row per family, then ``all``).

    Columns: ``n`` (triplets), ``triplet_acc`` (both negatives pooled), ``triplet_acc_random``,
    ``triplet_acc_hard``, ``auc`` (copies vs both negatives), ``decision_acc`` (at
    ``threshold``; NaN when ``threshold`` is None, e.g. for a hash whose distances have
    another scale).
    """
    fam = np.asarray(families).reshape(-1)
    p = _vec(d_pos, "d_pos")
    r = _vec(d_neg_random, "d_neg_random")
    h = _vec(d_neg_hard, "d_neg_hard")
    if not (fam.size == p.size == r.size == h.size):
        raise ValueError(
            f"`families`, `d_pos`, `d_neg_random` and `d_neg_hard` must have one entry per triplet, "
            f"got {fam.size}, {p.size}, {r.size}, {h.size}"
        )
    order = list(dict.fromkeys(fam.tolist()))
    rows = []
    for name, sel in [(f, fam == f) for f in order] + [("all", np.ones(fam.size, bool))]:
        ps, rs, hs = p[sel], r[sel], h[sel]
        negs = np.r_[rs, hs]
        rows.append({
            "family": name,
            "n": int(sel.sum()),
            "triplet_acc": triplet_accuracy(np.r_[ps, ps], negs),
            "triplet_acc_random": triplet_accuracy(ps, rs),
            "triplet_acc_hard": triplet_accuracy(ps, hs),
            "auc": pair_auc(ps, negs),
            "decision_acc": decision_accuracy(ps, negs, threshold) if threshold is not None else float("nan"),
        })
    return pd.DataFrame(rows).set_index("family")
