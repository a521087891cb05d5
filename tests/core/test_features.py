"""Per-pixel features: tiling, filters, settings, the cache and the model fallback."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from napari_siamforensic.core.features import (
    FALLBACK_SEED,
    FeatureCache,
    FeatureExtractor,
    FeatureSettings,
    fallback_model,
    filter_features,
    image_fingerprint,
    resolve_model,
)


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return fallback_model(device="cpu")


def textured(shape, seed=0):
    rng = np.random.default_rng(seed)
    img = ndi.gaussian_filter(rng.normal(size=shape), 2) + 0.3 * rng.normal(size=shape)
    return (img * 1000 + 5000).astype(np.uint16)


@pytest.mark.parametrize("rescale", [1.0, 0.5, 1.5])
def test_tiled_equals_untiled(model, rescale):
    settings = FeatureSettings(blocks=(1, 2, 3), filters=True, rescale=rescale, tile_size=48)
    fx = FeatureExtractor(model, settings)
    prepared = fx.prepare(textured((100, 130)).astype(np.float32))
    whole = fx.compute(prepared)
    tiled = fx.compute_tiled(prepared)
    assert whole.shape == tiled.shape == (100, 130, settings.n_features(1, 1))
    assert len(fx.tiles(prepared.shape)) == 9
    scale = np.abs(whole).max()
    # away from tile borders (and, with the automatic halo, at them too)
    inner = np.ones((100, 130), bool)
    for b in (48, 96):
        inner[max(0, b - 8):b + 8] = False
    inner[:, 40:56] = inner[:, 88:104] = False
    np.testing.assert_allclose(tiled[inner], whole[inner], atol=1e-4 * scale)
    np.testing.assert_allclose(tiled, whole, atol=1e-3 * scale)


def test_a_too_small_halo_breaks_tiles(model):
    """The comparison above can fail: without a halo, tile borders differ."""
    fx0 = FeatureExtractor(model, FeatureSettings(tile_size=48, overlap=0, filters=False))
    prepared = fx0.prepare(textured((96, 96)).astype(np.float32))
    assert np.abs(fx0.compute_tiled(prepared) - fx0.compute(prepared)).max() > 1e-2


def test_box_is_a_crop_of_the_whole(model):
    fx = FeatureExtractor(model, FeatureSettings(blocks=(2,), filters=True))
    prepared = fx.prepare(textured((90, 70), seed=3).astype(np.float32))
    whole = fx.compute(prepared)
    part = fx.compute(prepared, ((17, 61), (5, 33)))
    np.testing.assert_allclose(part, whole[17:61, 5:33], atol=1e-4 * np.abs(whole).max())


def test_feature_count_and_channels(model):
    s = FeatureSettings(blocks=(0, 1, 2, 3), filters=True)
    assert s.n_features(1, 1) == 16 + 32 + 64 + 128 + 16
    assert s.n_features(2, 3) == 2 * 240 + 3 * 16
    fx = FeatureExtractor(model, FeatureSettings(blocks=(1,), filters=True))
    rgb = np.random.default_rng(0).random((40, 50, 3)).astype(np.float32)
    prepared = fx.prepare(rgb, net_channels=rgb.mean(-1))
    assert fx.compute(prepared).shape == (40, 50, 32 + 3 * 16)
    fx = FeatureExtractor(model, FeatureSettings(blocks=(3,), filters=False))
    assert fx.compute(fx.prepare(rgb)).shape == (40, 50, 3 * 128)


def test_filters_match_scipy():
    x = np.random.default_rng(1).normal(size=(80, 90))
    f = filter_features(torch.from_numpy(x).float()[None, None])[0].numpy()
    for k, sigma in enumerate((1.0, 2.0, 4.0)):
        smooth = ndi.gaussian_filter(x, sigma, mode="nearest")
        gy = ndi.gaussian_filter(x, sigma, order=(1, 0), mode="nearest")
        gx = ndi.gaussian_filter(x, sigma, order=(0, 1), mode="nearest")
        c = slice(15, -15)
        np.testing.assert_allclose(f[4 * k][c, c], smooth[c, c], atol=5e-3)
        np.testing.assert_allclose(f[4 * k + 1][c, c], np.hypot(gy, gx)[c, c] * sigma, atol=5e-3)
        assert (f[4 * k + 2] >= f[4 * k + 3] - 1e-6).all()   # eigenvalues ordered


def test_features_ignore_intensity_scale(model):
    """The image is standardised globally: any dtype or gain gives the same features."""
    fx = FeatureExtractor(model, FeatureSettings())
    img = textured((64, 64))
    a = fx.compute(fx.prepare(img.astype(np.float32)))
    b = fx.compute(fx.prepare(img.astype(np.float32) / 65535 * 3 + 7))
    np.testing.assert_allclose(a, b, atol=1e-3 * np.abs(a).max())


@pytest.mark.parametrize("kwargs", [dict(blocks=(4,)), dict(blocks=(), filters=False), dict(rescale=0.0),
                                    dict(rescale=True), dict(tile_size=8), dict(overlap=-1)])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        FeatureSettings(**kwargs)


def test_cache_is_bounded_and_least_recently_used():
    cache = FeatureCache(max_bytes=3 * 400)
    for k in range(3):
        cache.put(k, np.zeros(100, np.float32))
    assert cache.get(0) is not None                 # 0 is now the most recent
    cache.put(3, np.zeros(100, np.float32))         # evicts 1
    assert cache.get(1) is None and cache.get(0) is not None and cache.nbytes == 1200
    cache.put("huge", np.zeros(1000, np.float32))   # larger than the budget: not kept
    assert cache.get("huge") is None and len(cache) == 3


def test_fingerprint_tracks_content():
    a = np.zeros((20, 20), np.float32)
    b = a.copy()
    assert image_fingerprint(a) == image_fingerprint(b)
    b[3, 4] = 1
    assert image_fingerprint(a) != image_fingerprint(b)
    assert image_fingerprint(a) != image_fingerprint(a.astype(np.float64))


def test_fallback_model_is_reproducible():
    a, b = fallback_model("cpu"), fallback_model("cpu")
    assert a.identity() == b.identity()
    model, source = resolve_model(None, "cpu")
    assert source in ("default", f"random-init(seed={FALLBACK_SEED})")
    if source != "default":
        assert model.identity() == a.identity()
    with pytest.raises(TypeError):
        resolve_model(42)
