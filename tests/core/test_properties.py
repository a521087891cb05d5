"""Property-based test: random shapes, dtypes and special values thrown at the public scoring API.

The only acceptable outcomes are a valid result (right shape, finite, f(x, x) = 0) or a
``ValueError``/``TypeError``. An oracle that restates the documented input rules says which
one each input must give.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import napari_siamforensic as sf

from .conftest import SMALL_MODEL, scene

DTYPES = [np.bool_, np.uint8, np.int16, np.float32, np.float64, np.complex64]
COLOUR = (1, 3, 4)
MIN_SIDE = 16


@pytest.fixture(scope="module")
def model(device):
    imgs = [scene(i, 140) for i in range(2)]
    cfg = sf.TrainConfig(steps=1, batch_size=2, validation_triplets=0, precision="fp32", device=device,
                         patch_size=64, model=SMALL_MODEL)
    return sf.train(imgs, cfg)


# sides 0..70, half of the time at least the minimum, so valid images are common too
SIDE = st.one_of(st.integers(MIN_SIDE, 70), st.integers(0, 70))


@st.composite
def shapes(draw):
    ndim = draw(st.sampled_from([0, 1, 2, 2, 2, 3, 3, 3, 4, 5]))
    if ndim <= 2:
        return tuple(draw(SIDE) for _ in range(ndim))
    if ndim == 3:
        last = draw(st.one_of(st.sampled_from(COLOUR), st.integers(0, 70)))
        first = draw(SIDE) if last in COLOUR else draw(st.integers(0, 6))   # a stack: few images
        return (first, draw(SIDE), last)
    if ndim == 4:
        return (draw(st.integers(0, 3)), draw(st.integers(0, 40)), draw(st.integers(0, 40)),
                draw(st.sampled_from([0, 1, 2, 3, 4, 5])))
    return tuple(draw(st.integers(0, 4)) for _ in range(5))


def special_values(dtype) -> list:
    if dtype == np.bool_:
        return [True, False]
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return [info.min, info.max, 0]
    if np.issubdtype(dtype, np.complexfloating):
        return [complex(np.nan, 0), complex(0, np.inf), 1j]
    info = np.finfo(dtype)
    return [np.nan, np.inf, -np.inf, info.max, info.min, info.tiny, -0.0, 1e-30, 1e30]


@st.composite
def arrays(draw):
    shape = draw(shapes())
    dtype = np.dtype(draw(st.one_of(st.sampled_from(DTYPES), st.sampled_from(DTYPES[1:5]))))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["random", "random", "constant", "tiny-range", "huge-range"]))
    if dtype == np.bool_:
        arr = rng.random(shape) < 0.5
    elif np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        arr = rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype)
    else:
        scale = {"tiny-range": 1e-30, "huge-range": 1e30}.get(kind, 1.0)
        arr = (rng.standard_normal(shape) * scale).astype(dtype)
        if np.issubdtype(dtype, np.complexfloating):
            arr = arr + 1j * rng.standard_normal(shape).astype(np.float32)
    if kind == "constant" and arr.size:
        arr = np.full(shape, arr.flat[0], dtype)
    arr = np.asarray(arr, dtype)
    if arr.size and draw(st.integers(0, 2)) == 0:
        values = special_values(dtype)
        for _ in range(draw(st.integers(1, 3))):
            arr.flat[draw(st.integers(0, arr.size - 1))] = values[draw(st.integers(0, len(values) - 1))]
    return arr


def image_is_valid(arr: np.ndarray) -> bool | None:
    """One image by the documented rules: True valid, False invalid, None either is acceptable."""
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        return False
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in COLOUR)):
        return False
    if arr.shape[0] < MIN_SIDE or arr.shape[1] < MIN_SIDE:
        return False
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            return False
        if arr.dtype == np.float64 and np.abs(arr).max() > np.finfo(np.float32).max:
            return None       # finite, but beyond what float32 holds: refusing it is acceptable
    return True


def images_are_valid(images) -> tuple[bool | None, int]:
    """The ``images`` argument: (validity, number of images)."""
    if isinstance(images, list):
        items = images
    elif images.ndim == 3 and images.shape[-1] not in COLOUR or images.ndim == 4:
        items = list(images)          # a stack (N, H, W) or (N, H, W, C)
    else:
        items = [images]
    if not items:
        return False, 0
    verdicts = [image_is_valid(np.asarray(i)) for i in items]
    if False in verdicts:
        return False, len(items)
    return (None if None in verdicts else True), len(items)


inputs = st.one_of(arrays(), st.lists(arrays(), min_size=0, max_size=3))


def check(call, valid: bool | None, n: int, expected_shape):
    try:
        out = np.asarray(call())
    except (ValueError, TypeError) as exc:
        assert valid is not True, f"a valid input was refused: {exc}"
        return None
    assert valid is not False, "an invalid input was accepted"
    assert out.shape == expected_shape(n)
    assert np.isfinite(out).all()
    return out


SETTINGS = settings(max_examples=40, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@SETTINGS
@given(images=inputs)
def test_embed_accepts_valid_images_and_refuses_the_rest_cleanly(model, images):
    valid, n = images_are_valid(images)
    check(lambda: model.embed(images), valid, n, lambda k: (k, SMALL_MODEL.embedding_dim))


@SETTINGS
@given(images=inputs)
def test_distance_of_an_input_to_itself(model, images):
    valid, n = images_are_valid(images)
    d = check(lambda: model.distance(images, images, poses="none"), valid, n, lambda k: (k,))
    if d is not None:
        assert (d == 0).all()


@SETTINGS
@given(a=inputs, b=inputs)
def test_distance_of_two_inputs(model, a, b):
    valid_a, na = images_are_valid(a)
    valid_b, nb = images_are_valid(b)
    if valid_a is False or valid_b is False or (valid_a and valid_b and na != nb):
        valid = False
    elif valid_a and valid_b:
        valid = True
    else:
        valid = None if na == nb else False
    d = check(lambda: model.distance(a, b), valid, na, lambda k: (k,))
    if d is not None:
        assert (d >= 0).all()
