"""Texture neighbours (screening.texture) and their place in the screen."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage as ndi

from napari_siamforensic.core.pixels import FIRST_PASS_THRESHOLD, PixelChecker
from napari_siamforensic.screening import DEFAULT_TEXTURE, screen
from napari_siamforensic.screening.texture import (MIN_SIDE, TEXTURE_DIM, texture_descriptor, texture_descriptors,
                                                   texture_pairs)


def fibres(seed: int, angle: float, shape=(200, 240), across: float = 1.2, along: float = 9.0) -> np.ndarray:
    """Oriented smoothed noise in [0, 1] (fibres at ``angle`` degrees)."""
    rng = np.random.default_rng(seed)
    img = ndi.gaussian_filter(rng.standard_normal(shape), (across, along))
    img = ndi.rotate(img, angle, reshape=False, mode="reflect")
    return ((img - img.min()) / (img.max() - img.min())).astype(np.float32)


def blobs(seed: int, shape=(200, 240)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = ndi.gaussian_filter(rng.standard_normal(shape), 4.0)
    return ((img - img.min()) / (img.max() - img.min())).astype(np.float32)


def copy_of(img: np.ndarray, seed: int) -> np.ndarray:
    """A cut (70 % of each side), mirrored, turned, rescaled 0.8x, gamma 1.2 copy."""
    h, w = img.shape
    cut = img[int(0.1 * h):int(0.8 * h), int(0.2 * w):int(0.9 * w)][:, ::-1]
    cut = np.rot90(cut, 1 + seed % 3)
    im = Image.fromarray((np.clip(cut, 0, 1) * 255).astype(np.uint8))
    im = im.resize((round(im.width * 0.8), round(im.height * 0.8)), Image.Resampling.BILINEAR)
    return (np.asarray(im, np.float32) / 255) ** 1.2


def test_descriptor_is_the_same_in_every_flip_and_quarter_turn():
    img = fibres(1, 33.0)
    ref = texture_descriptor(img)
    assert ref.shape == (TEXTURE_DIM,) and ref.dtype == np.float32 and np.isfinite(ref).all()
    for k in range(4):
        for flip in (False, True):
            x = np.rot90(img[:, ::-1] if flip else img, k)
            np.testing.assert_allclose(texture_descriptor(np.ascontiguousarray(x)), ref, atol=1e-5)
    # and it does see the orientation: 33 and 12 degrees differ (they are not dihedral images of each other)
    assert np.abs(texture_descriptor(fibres(1, 12.0)) - ref).max() > 0.2


def test_descriptor_reads_how_strongly_a_picture_is_oriented():
    coherence = lambda img: texture_descriptor(img)[2::3]          # one per scale
    assert (coherence(fibres(2, 70.0)) > 0.5).all()
    assert (coherence(blobs(2)) < 0.2).all()
    # intensity scale and offset change nothing
    img = fibres(3, 20.0)
    np.testing.assert_allclose(texture_descriptor(3.0 * img + 7.0), texture_descriptor(img), atol=1e-4)


def test_descriptor_of_flat_tiny_large_and_bad_images():
    assert (texture_descriptor(np.full((50, 60), 0.3, np.float32)) == 0).all()
    assert np.isnan(texture_descriptor(np.zeros((MIN_SIDE - 1, 100)))).all()
    big = np.kron(fibres(4, 40.0, (300, 250)), np.ones((4, 4), np.float32))      # 1200 x 1000: reduced 3x first
    d_big, d_small = texture_descriptor(big), texture_descriptor(fibres(4, 40.0, (300, 250)))
    assert np.isfinite(d_big).all() and np.abs(d_big - d_small).max() < 0.3
    with pytest.raises(ValueError, match="2D gray image"):
        texture_descriptor(np.zeros((20, 20, 3)))
    with_nan = fibres(5, 10.0)
    with_nan[3, 4] = np.nan
    assert np.isfinite(texture_descriptor(with_nan)).all()


def test_a_cut_turned_copy_of_fibres_is_among_its_nearest_by_texture():
    """The case the network misses: fibre panels at many orientations; the copy (cut, mirrored,
    turned, rescaled, gamma) is the panel's nearest by texture, and ``texture_descriptors``
    reads items through ``load`` (None: unreadable, a NaN row)."""
    angles = np.linspace(0, 180, 40, endpoint=False)
    images = [fibres(100 + i, float(t)) for i, t in enumerate(angles)]
    images.append(copy_of(images[13], 13))                      # item 40, a copy of item 13
    images.append(None)                                          # item 41, unreadable
    desc = texture_descriptors(lambda i: images[i], len(images))
    assert np.isnan(desc[41]).all() and np.isfinite(desc[:41]).all()
    a, b = texture_pairs(desc, k=1)
    assert (13, 40) in set(zip(a.tolist(), b.tolist()))
    assert 41 not in set(a.tolist()) | set(b.tolist())


def brute_force(desc, k, groups=None, mode="all"):
    out = set()
    ok = np.flatnonzero(np.isfinite(desc).all(1))
    for i in ok:
        others = [j for j in ok if j != i and (mode == "all" or (groups[i] == groups[j]) == (mode == "within"))]
        d = [float(((desc[i].astype(np.float64) - desc[j]) ** 2).sum()) for j in others]
        for j in np.array(others)[np.argsort(d, kind="stable")[:k]]:
            out.add((min(i, int(j)), max(i, int(j))))
    return out


@pytest.mark.parametrize("mode", ["all", "within", "across"])
@pytest.mark.parametrize("k, block", [(1, 512), (3, 4), (50, 7)])
def test_texture_pairs_are_each_items_k_nearest(mode, k, block):
    rng = np.random.default_rng(k)
    desc = rng.random((37, TEXTURE_DIM)).astype(np.float32)
    desc[[5, 20]] = np.nan
    groups = rng.integers(0, 4, 37)
    a, b = texture_pairs(desc, groups, k=k, mode=mode, block=block)
    assert (a < b).all() and len(set(zip(a.tolist(), b.tolist()))) == len(a)
    assert set(zip(a.tolist(), b.tolist())) == brute_force(desc, k, groups, mode)


def test_texture_pairs_bad_arguments_and_edge_cases():
    desc = np.random.default_rng(0).random((6, TEXTURE_DIM)).astype(np.float32)
    assert len(texture_pairs(desc, k=0)[0]) == 0
    assert len(texture_pairs(desc[:1], k=3)[0]) == 0
    with pytest.raises(ValueError, match="`mode` must be"):
        texture_pairs(desc, k=2, mode="some")
    with pytest.raises(ValueError, match="one group per item"):
        texture_pairs(desc, k=2, mode="within")
    with pytest.raises(ValueError, match="`k` must be >= 0"):
        texture_pairs(desc, k=-1)
    with pytest.raises(ValueError, match=r"\(items, 9\) array"):
        texture_pairs(desc[0], k=2)


def test_the_screen_first_passes_exactly_the_new_texture_pairs(model):
    """``texture``: each item's nearest by texture that the embedding search has not paired
    stay where the first pass reaches ``FIRST_PASS_THRESHOLD``; nothing else changes."""
    arrays = [fibres(200 + i, float(t)) for i, t in enumerate(np.linspace(0, 180, 12, endpoint=False))]
    for j, src in enumerate((1, 4, 7, 10)):
        arrays.append(copy_of(arrays[src], j))                            # items 12-15: copies
    arrays = [(np.clip(x, 0, 1) * 255).astype(np.uint8) for x in arrays]
    # (the L1 search: with it the untrained test network misses two copies, see below)
    plain = screen(arrays, model, candidates=1, wider=0, texture=0, localize=0, metric="l1")
    tex = screen(arrays, model, candidates=1, wider=0, texture=2, localize=0, metric="l1")
    pairs = lambda res: {(int(x), int(y)) for x, y in zip(res.pairs["a"], res.pairs["b"])}
    floats = [x.astype(np.float32) for x in arrays]
    ta, tb = texture_pairs(texture_descriptors(lambda i: floats[i], len(floats)), k=2)
    new = [(x, y) for x, y in zip(ta.tolist(), tb.tolist()) if (x, y) not in pairs(plain)]
    first = PixelChecker(lambda i: floats[i]).first_pass(*np.array(new).T)
    passed = {p for p, f in zip(new, first) if f >= FIRST_PASS_THRESHOLD}
    # the untrained test network misses two copies that their texture finds
    assert {(1, 12), (4, 13)} <= passed and not {(1, 12), (4, 13)} & pairs(plain)
    assert pairs(tex) == pairs(plain) | passed
    assert tex.info["texture"] == 2 and tex.info["texture_pairs"] == len(new)
    assert tex.info["texture_pairs_kept"] == len(passed) and tex.info["wider_pairs"] == 0
    assert tex.info["first_pass_threshold"] == FIRST_PASS_THRESHOLD and tex.info["seconds_texture"] >= 0
    assert plain.info["texture_pairs"] == 0 and plain.info["first_pass_threshold"] is None
    row = tex.pairs[(tex.pairs["a"] == 4) & (tex.pairs["b"] == 13)].iloc[0]
    assert row["method"] == "pixels" and np.isfinite(tex.pairs["f"]).all() and np.isfinite(tex.pairs["match"]).all()


def test_the_texture_step_and_the_check_read_each_image_once(model, monkeypatch):
    """The texture step reads every item; the check's thumbnails are made from that same read."""
    import napari_siamforensic.screening as screening

    reads = []
    real = screening.load_item_image

    def counting(ref, *args, **kwargs):
        reads.append(ref.source)
        return real(ref, *args, **kwargs)

    monkeypatch.setattr(screening, "load_item_image", counting)
    arrays = [fibres(400 + i, 25.0 * i) for i in range(6)]
    res = screen(arrays, model, candidates=1, wider=2, texture=2, localize=0, metric="l1")   # (with L2 the search pairs all 6)
    assert res.info["texture_pairs"] > 0 and np.isfinite(res.pairs["match"]).all()
    assert sorted(reads) == sorted(set(reads)) and len(reads) == len(arrays)


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(texture=-1), ValueError, "`texture` must be >= 0"),
    (dict(texture=2.5), TypeError, "`texture` must be an integer"),
    (dict(texture=3, verify=False), ValueError, "needs the pixel check"),
])
def test_bad_texture_is_refused_with_what_is_accepted(model, kwargs, error, words):
    with pytest.raises(error, match=words):
        screen([fibres(1, 0.0), fibres(2, 9.0)], model, localize=0, **kwargs)


def test_texture_defaults_to_on_with_the_check_and_off_without(model):
    arrays = [fibres(300 + i, 20.0 * i) for i in range(4)]
    on = screen(arrays, model, candidates=1, wider=0, localize=0)
    off = screen(arrays, model, candidates=1, localize=0, verify=False)
    assert DEFAULT_TEXTURE > 0 and on.info["texture"] == DEFAULT_TEXTURE and on.info["texture_pairs"] > 0
    assert off.info["texture"] == 0 and off.info["texture_pairs"] == 0
