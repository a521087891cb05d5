"""The figure-re-use test set: every manipulation changes the image; negatives are what they say."""
import numpy as np
import pytest

from napari_siamforensic.core.synthetic import EVALUATION_SEED_START, generate_scene
from napari_siamforensic.evaluation.reuse import FAMILIES, MANIPULATIONS, make_reuse_set, manipulate, view_boxes


@pytest.fixture(scope="module")
def parents():
    return [generate_scene(k, EVALUATION_SEED_START + i, (320, 320)) for i, k in enumerate(("nuclei", "tissue", "blot"))]


@pytest.mark.parametrize("family", FAMILIES)
def test_each_manipulation_changes_the_image_and_keeps_float32_2d(parents, family):
    anchor = parents[1][40:200, 60:240].copy()
    for seed in range(3):
        out, steps = manipulate(anchor, family, np.random.default_rng(seed))
        assert out.dtype == np.float32 and out.ndim == 2
        assert 0.0 <= out.min() and out.max() <= 1.0
        assert min(out.shape) >= 32
        assert steps and len(steps) == (3 if family == "combo" else 1)
        changed = out.shape != anchor.shape or float(np.abs(out - anchor).mean()) > 1e-3
        assert changed, f"{family} left the image unchanged ({steps})"


def test_manipulations_do_not_use_training_deformations():
    import napari_siamforensic.evaluation.reuse as reuse

    import ast

    tree = ast.parse(open(reuse.__file__, encoding="utf-8").read())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
    assert imported and not any("deform" in m or m.startswith("napari_siamforensic") for m in imported), imported


def test_reuse_set_structure_and_hard_negatives(parents):
    triplets = make_reuse_set(parents, seed=5, n_per_family=2)
    assert len(triplets) == 2 * len(FAMILIES)
    assert [t.family for t in triplets[::2]] == list(FAMILIES)
    for t in triplets:
        for img in (t.anchor, t.positive, t.negative_random, t.negative_hard):
            assert img.dtype == np.float32 and img.ndim == 2 and min(img.shape) >= 32
        assert 96 <= min(t.anchor.shape) and max(t.anchor.shape) <= 300
        # hard negative: same parent, other region (at most 10 % shared), and really that crop
        assert t.parent_random != t.parent
        assert t.hard_overlap <= 0.1
        assert t.hard_box != t.anchor_box
        p = parents[t.parent]
        y0, x0, y1, x1 = t.hard_box
        np.testing.assert_array_equal(t.negative_hard, p[y0:y1, x0:x1])
        y0, x0, y1, x1 = t.anchor_box
        np.testing.assert_array_equal(t.anchor, p[y0:y1, x0:x1])
        assert not np.array_equal(t.anchor, t.negative_hard)


def test_reuse_set_is_reproducible(parents):
    a = make_reuse_set(parents, seed=9, n_per_family=1, families=("combo", "labels"))
    b = make_reuse_set(parents, seed=9, n_per_family=1, families=("combo", "labels"))
    c = make_reuse_set(parents, seed=10, n_per_family=1, families=("combo", "labels"))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.positive, y.positive)
        assert x.steps == y.steps
    assert any(x.anchor.shape != z.anchor.shape or not np.array_equal(x.anchor, z.anchor) for x, z in zip(a, c))


def test_view_boxes_refuses_too_small_parent():
    with pytest.raises(ValueError, match="too small"):
        view_boxes(np.random.default_rng(0), (100, 100))


def test_unknown_family_is_named():
    with pytest.raises(ValueError, match="unknown manipulation family 'warp'"):
        manipulate(np.zeros((64, 64), np.float32), "warp", np.random.default_rng(0))
    assert set(MANIPULATIONS) | {"combo"} == set(FAMILIES)
