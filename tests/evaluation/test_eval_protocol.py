"""The paper's protocol with a stand-in deformation and distance (no torch needed)."""
import numpy as np
import pytest

from napari_siamforensic.evaluation import evaluate_model
from napari_siamforensic.evaluation.protocol import PAPER_SYNTHETIC_ACCURACY, paper_protocol


def _crop_deform(batch, seed):
    rng = np.random.default_rng(seed)
    out = []
    for img in batch:
        gain = rng.uniform(0.9, 1.1)  # centre crop, a little contrast change and noise
        out.append(gain * img[64:192, 64:192] + rng.normal(0, 0.01, (128, 128)))
    return np.stack(out).astype(np.float32)


def _mean_abs(list_a, list_b):
    def small(a):
        a = np.asarray(a, np.float32)
        h, w = a.shape
        return a[h // 2 - 16 : h // 2 + 16, w // 2 - 16 : w // 2 + 16]

    return np.array([np.abs(small(a) - small(b)).mean() for a, b in zip(list_a, list_b)])


def _sources(n=6):
    rng = np.random.default_rng(0)
    return [rng.random((300, 280)).astype(np.float32) for _ in range(n)]


def test_protocol_structure_and_a_distance_that_works():
    r = paper_protocol(_sources(), _mean_abs, _crop_deform, n_repeats=3, seed=1)
    assert r["n_classes"] == 6 and r["n_per_class"] == 10
    assert len(r["per_repeat"]) == 3
    assert r["paper_accuracy"] == PAPER_SYNTHETIC_ACCURACY
    assert r["accuracy"] > 0.9  # copies differ by gain and noise only


def test_protocol_with_a_blind_distance_is_at_chance():
    r = paper_protocol(_sources(), lambda a, b: np.zeros(len(a)), _crop_deform, n_repeats=2)
    assert r["accuracy"] == 0.5  # every triplet is a tie


def test_protocol_checks_deform_output():
    with pytest.raises(ValueError, match=r"\(54, 128, 128\)"):
        paper_protocol(_sources(), _mean_abs, lambda b, s: b[:, :64, :64], n_repeats=1)


def test_evaluate_model_runs_model_and_baselines_on_the_same_pairs():
    rng = np.random.default_rng(3)
    parents = [rng.random((260, 260)).astype(np.float32) for _ in range(3)]
    calls = []

    def fake(list_a, list_b):
        calls.append(len(list_a))
        return np.array([0.0 if a.shape == b.shape and np.allclose(a, b) else 2.0 for a, b in zip(list_a, list_b)])

    r = evaluate_model(fake, parents=parents, seed=0, n_per_family=1, baselines=["phash"],
                       families=("invert", "noise"))
    assert calls == [6]  # one call: 2 triplets x (positive, random, hard)
    s = r["summary"]
    assert list(s.index) == ["siamforensic", "phash"]
    assert s.loc["siamforensic", "n_pairs"] == 6
    assert list(r["per_family"].index) == ["invert", "noise", "all"]
    assert np.isnan(s.loc["phash", "decision_acc"])


def test_protocol_default_deformation_is_frozen_without_the_later_families():
    from napari_siamforensic.core.config import DeformConfig
    from napari_siamforensic.core.deform import deform_images
    from napari_siamforensic.evaluation.protocol import _default_deform, protocol_deform_config

    cfg = protocol_deform_config()
    assert cfg.p_stretch == 0.0 and cfg.p_erase == 0.0
    # everything else is the training default
    assert cfg == DeformConfig(p_stretch=0.0, p_erase=0.0)
    batch = np.random.default_rng(0).random((3, 256, 256), dtype=np.float32)
    np.testing.assert_array_equal(_default_deform(batch, 5), deform_images(batch, cfg, seed=5))
