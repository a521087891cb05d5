"""Metrics on hand-made distances whose answers are known exactly."""
import numpy as np
import pandas as pd
import pytest

from napari_siamforensic.evaluation.metrics import decision_accuracy, family_table, pair_auc, triplet_accuracy


def test_triplet_accuracy_counts_wins_and_half_ties():
    # wins, loses, tie, wins
    assert triplet_accuracy([0.1, 2.0, 0.5, 0.3], [1.0, 1.0, 0.5, 0.4]) == pytest.approx(2.5 / 4)
    assert triplet_accuracy([0.1, 0.2], [1.0, 2.0]) == 1.0
    assert triplet_accuracy([3.0], [1.0]) == 0.0
    assert isinstance(triplet_accuracy([0.1], [1.0]), float)


def test_pair_auc_known_value():
    # positives scores -0.1, -0.2; negatives -0.15, -0.3: 3 of the 4 (pos, neg) pairs ordered right
    assert pair_auc([0.1, 0.2], [0.15, 0.3]) == pytest.approx(0.75)
    assert pair_auc([0.1, 0.2], [2.0, 3.0]) == 1.0
    assert pair_auc([2.0, 3.0], [0.1, 0.2]) == 0.0


def test_decision_accuracy_is_balanced_at_threshold_one():
    # positives: 3 of 4 <= 1 (d == 1 counts as duplicate); negatives: 1 of 2 > 1
    assert decision_accuracy([0.5, 1.0, 1.5, 0.2], [2.0, 0.9]) == pytest.approx(0.5 * (0.75 + 0.5))
    # another threshold moves the answer
    assert decision_accuracy([0.5, 1.0, 1.5, 0.2], [2.0, 0.9], threshold=0.8) == pytest.approx(0.5 * (0.5 + 1.0))


def test_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="same length"):
        triplet_accuracy([0.1, 0.2], [0.3])
    with pytest.raises(ValueError, match="empty"):
        pair_auc([], [0.1])
    with pytest.raises(ValueError, match="NaN"):
        decision_accuracy([np.nan], [1.0])


def test_family_table_breaks_down_by_family_and_negative_kind():
    fam = ["a", "a", "b", "b"]
    pos = [0.1, 0.1, 0.5, 3.0]
    neg_random = [2.0, 2.0, 2.0, 2.0]
    neg_hard = [0.05, 2.0, 0.2, 2.0]
    t = family_table(fam, pos, neg_random, neg_hard)
    assert isinstance(t, pd.DataFrame)
    assert list(t.index) == ["a", "b", "all"]
    assert t.loc["a", "triplet_acc_random"] == 1.0
    assert t.loc["a", "triplet_acc_hard"] == 0.5
    assert t.loc["b", "triplet_acc_random"] == 0.5
    assert t.loc["b", "triplet_acc_hard"] == 0.0
    assert t.loc["all", "triplet_acc"] == pytest.approx((2 + 1 + 1 + 0) / 8)
    assert t.loc["all", "n"] == 4
    # decision at 1: positives 3/4 duplicates; negatives > 1: 2,2,2,2 random + 2,2 hard = 6/8
    assert t.loc["all", "decision_acc"] == pytest.approx(0.5 * (0.75 + 0.75))
    assert np.isnan(family_table(fam, pos, neg_random, neg_hard, threshold=None).loc["all", "decision_acc"])
