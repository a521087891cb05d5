"""The bundled default model: loads on the CPU, embeds deterministically, and ranks each copy
in a fixed set of generated duplicates (``tests/data/bundled_duplicates.npz``, written by
``tests/data/make_bundled_duplicates.py``) above every unrelated image."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import napari_siamforensic as sf
from napari_siamforensic.core.scoring import default_weights_path

DATA = Path(__file__).parents[1] / "data" / "bundled_duplicates.npz"


@pytest.fixture(scope="module")
def duplicates():
    with np.load(DATA) as z:
        n = sum(k.startswith("parent") for k in z.files)
        return [z[f"parent{i}"] for i in range(n)], [z[f"copy{i}"] for i in range(n)], list(z["steps"])


@pytest.fixture(scope="module")
def bundled():
    assert default_weights_path().is_file(), "the package must ship its default model"
    return sf.load_model(device="cpu")


def test_bundled_model_loads_on_the_cpu_and_embeds_deterministically(bundled, duplicates):
    parents, _, _ = duplicates
    assert str(bundled.device) == "cpu"
    a, b = bundled.embed(parents[:4]), bundled.embed(parents[:4])
    assert a.shape == (4, bundled.config.embedding_dim) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    # another batch size may take other BLAS kernels: equal to rounding, not bit for bit
    np.testing.assert_allclose(bundled.embed(parents[2:3]), a[2:3], rtol=1e-4, atol=1e-5)


def test_every_copy_is_closer_than_every_unrelated_image(bundled, duplicates):
    parents, copies, steps = duplicates
    n = len(parents)
    m = np.asarray(bundled.pairwise(parents + copies))     # (2n, 2n), minimum over the model's poses
    for i in range(n):
        copy = m[i, n + i]
        unrelated = np.delete(m[i], [i, n + i])
        assert copy < unrelated.min(), (f"parent {i} ({steps[i]}): its copy scores {copy:.3f}, an unrelated "
                                        f"image {unrelated.min():.3f}")


def test_bundled_distance_adds_its_fitted_pixel_check_and_calls_the_copies_duplicates(bundled, duplicates):
    parents, copies, steps = duplicates
    weight, center = bundled.pixel_check                  # fitted by training/calibrate_default.py
    assert weight > 0 and 0 < center < 1
    fused = np.asarray(bundled.distance(parents, copies))
    f = np.asarray(bundled.distance(parents, copies, pixels=False))
    # every copy, the one turned by 11.9 degrees included (the check's rotation stage, tenth
    # session; before it that copy's low match pulled its distance up to 1.39)
    for i, (d, s) in enumerate(zip(fused, steps)):
        assert d <= 1.0, f"parent {i} ({s}): its copy's distance {d:.3f} is over the threshold 1 (f {f[i]:.3f})"
    # the raw paper f stays one argument away, and does not call every copy a duplicate
    raw = np.asarray(bundled.distance(parents, copies, poses="none"))
    assert raw.shape == fused.shape and not np.allclose(raw, fused)
    # and an unrelated image of the same kind (parent i against copy i + 4: same kinds cycle in 12) is not one
    shifted = np.asarray(bundled.distance(parents, copies[4:] + copies[:4]))
    assert (shifted > 1.0).all(), shifted
