"""The pixel check of image pairs (core.pixels) and its place in the screen."""
from __future__ import annotations

import copy
import io
import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import ndimage as ndi

from napari_siamforensic.screening import screen
from napari_siamforensic.screening.localize import box_iou, describe, pose_match
from napari_siamforensic.core.pixels import (FIRST_PASS_SCALES, FIRST_PASS_THRESHOLD, GATED_MATCH, MATCH_THRESHOLD,
                                             PixelChecker, _correlate, _dihedral,
                                             _posed, _templates, check_thumbnail)
from napari_siamforensic.evaluation.reuse import blot_lanes
from napari_siamforensic.screening.verify import match_transform


def texture(seed: int, shape=(180, 220), smooth: float = 2.5) -> np.ndarray:
    """Smooth random texture in [0, 1]: different seeds are different images of one kind (the
    case where the embedding finds look-alikes and the pixels must tell them apart)."""
    rng = np.random.default_rng(seed)
    t = ndi.gaussian_filter(rng.standard_normal(shape), smooth)
    return ((t - t.min()) / (t.max() - t.min())).astype(np.float32)


def jpeg(img: np.ndarray, quality: int = 60) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())), np.float32) / 255


def resize(img: np.ndarray, s: float) -> np.ndarray:
    h, w = img.shape
    return np.asarray(Image.fromarray(img).resize((round(w * s), round(h * s)), Image.Resampling.BILINEAR), np.float32)


def checker_of(images):
    return PixelChecker(lambda i: images[i])


def test_check_thumbnail_has_the_side_and_refuses_colour():
    t = check_thumbnail(texture(0, (100, 300)))
    assert t.shape == (21, 64) and t.dtype == np.float32
    assert abs(float(t.mean())) < 0.05                      # band-passed: no offset left
    assert check_thumbnail(texture(0, (20, 30))).shape == (43, 64)      # small images are enlarged
    with pytest.raises(ValueError, match="2D gray"):
        check_thumbnail(np.zeros((50, 50, 3)))


def test_the_fft_correlation_equals_a_direct_one():
    """Every offset's |NCC| (template zero-mean, window's own mean and variance) as a direct loop
    computes it; the maximum and its place are what _correlate returns."""
    rng = np.random.default_rng(3)
    S = 32
    img = ndi.gaussian_filter(rng.standard_normal((27, 31)), 1.0).astype(np.float32)
    tmp = img[5:22, 9:25] + 0.3 * rng.standard_normal((17, 16)).astype(np.float32)
    frames, shapes = _posed(img, [0, 5], S)
    tmps, sizes = _templates(tmp, (1.0,), S)
    val, pj, cj, oy, ox, sign, fits, _ = _correlate(frames[None], shapes[None], tmps[None], sizes[None])
    best = (0.0, None)
    for p in (0, 5):
        im = _dihedral(img, p)
        t = tmp - tmp.mean()
        for y in range(im.shape[0] - 17 + 1):
            for x in range(im.shape[1] - 16 + 1):
                w = im[y:y + 17, x:x + 16]
                w = w - w.mean()
                r = abs(float((w * t).sum() / np.sqrt((w * w).sum() * (t * t).sum())))
                if r > best[0]:
                    best = (r, (p, y, x))
    assert val[0] == pytest.approx(best[0], abs=1e-4)
    assert ([0, 5][pj[0]], oy[0], ox[0]) == best[1] == (0, 5, 9)
    assert sign[0] > 0 and fits[0]


@pytest.mark.parametrize("pose", range(8))
def test_a_cropped_posed_rescaled_jpeg_copy_matches_with_its_transform_and_region(pose):
    src = texture(1)
    box = (30, 20, 190, 150)                                   # x0, y0, x1, y1: 73 % x 72 % of the panel
    crop = src[box[1]:box[3], box[0]:box[2]]
    copy = jpeg(resize(np.ascontiguousarray(_dihedral(crop, pose)), 0.8) ** 1.3)
    chk = checker_of({0: src, 1: copy})
    res = chk(np.array([0]), np.array([1]))
    assert res.score[0] >= 0.8
    # the reported relation is the one that made the copy: that pose of a (then a scale of 0.8)
    m = pose_match((1, 1), (1, 1), pose, False)
    want = [w for w in describe(m.mirrored, m.rotation_deg, 1.0, False).split(", ") if w != "identity"]
    got = match_transform(res, 0).split(", ")
    assert [w for w in got if not w.startswith("scale")] == want and got[-1].startswith("scale 0.")
    assert res.scale[0] == pytest.approx(0.8, rel=0.05)
    assert box_iou(res.box_a[0], box) >= 0.85                  # the region in the panel
    assert res.box_b[0] == (0, 0, copy.shape[1], copy.shape[0])  # all of the copy
    # the other way round: the same score, the boxes swapped
    back = chk(np.array([1]), np.array([0]))
    assert back.score[0] == pytest.approx(res.score[0], abs=1e-5)
    assert back.box_b[0] == res.box_a[0]


def test_an_inverted_copy_matches_and_says_so():
    src = texture(2)
    chk = checker_of({0: src, 1: 1 - np.rot90(src).copy()})
    res = chk(np.array([0]), np.array([1]))
    assert res.score[0] >= 0.95
    assert "inverted" in match_transform(res, 0) and "rotated 90°" in match_transform(res, 0)


def test_different_images_of_one_kind_do_not_match():
    images = {i: texture(10 + i) for i in range(8)}
    a, b = np.triu_indices(8, 1)
    res = checker_of(images)(a, b)
    assert res.score.max() < MATCH_THRESHOLD - 0.1, res.score.max()


def test_unreadable_flat_and_too_thin_items_are_not_compared():
    """Nothing to compare is no evidence: NaN (which ``ForensicModel.fuse`` leaves to f), not a
    score of 0 (which the fused distance would read as pixels that differ)."""
    images = {0: texture(3), 1: None, 2: np.full((90, 90), 0.5, np.float32), 3: texture(3),
              4: texture(3, (16, 300))}                       # a 64 x 3 px check thumbnail
    res = checker_of(images)(np.array([0, 0, 0, 0]), np.array([1, 2, 3, 4]))
    assert np.isnan(res.score[[0, 1, 3]]).all() and res.compared.tolist() == [False, False, True, False]
    assert res.box_a[:2] == [None, None] and res.box_b[:2] == [None, None] and res.box_a[3] is None
    assert res.score[2] == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("shape", [(100, 300), (60, 360), (40, 300)])
@pytest.mark.parametrize("pose", [0, 1, 4, 6])
def test_strips_match_their_posed_copies_and_not_other_strips(shape, pose):
    """Panels 3 to 7.5 times as wide as high (a blot's lane, a wide panel): before the twelfth
    session the coarse stage, which picks the pose, fitted no template from 2.7 times on (a
    mirrored or turned copy matched 0.0-0.2), and from 5.3 times nothing was compared at all."""
    src = texture(3, shape)
    copy = jpeg(np.ascontiguousarray(_dihedral(src, pose)), 70)
    others = [texture(40 + i, shape, smooth=s) for i, s in enumerate((1.0, 2.5, 4.0))]
    res = checker_of([src, copy] + others)(np.zeros(4, int), np.arange(1, 5))
    assert res.compared.all()
    assert res.score[0] >= 0.9 > MATCH_THRESHOLD > res.score[1:].max()
    assert res.box_b[0] == (0, 0, copy.shape[1], copy.shape[0])


def test_pairs_in_any_order_and_blocks_give_the_same_scores():
    images = {i: texture(20 + i % 3) if i < 6 else np.rot90(texture(20 + i % 3)).copy() for i in range(9)}
    a = np.array([0, 6, 1, 7, 2, 8, 0, 3])
    b = np.array([6, 0, 7, 1, 8, 2, 3, 0])
    one = PixelChecker(lambda i: images[i], block=128)(a, b).score
    small = PixelChecker(lambda i: images[i], block=3)(a[::-1], b[::-1]).score[::-1]
    np.testing.assert_allclose(one, small, atol=1e-5)


@pytest.mark.parametrize("pose", range(8))
def test_the_first_pass_keeps_posed_cropped_copies_and_not_other_images(pose):
    """The first pass (the coarse stage alone) must keep what the full check verifies: the
    cropped, posed, rescaled JPEG copies of the test above, and an inverted one; other images
    of the kind fall below it; an unreadable item is NaN."""
    src = texture(1)
    crop = src[20:150, 30:190]
    copy = jpeg(resize(np.ascontiguousarray(_dihedral(crop, pose)), 0.8) ** 1.3)
    images = {0: src, 1: copy, 2: 1 - copy, 3: None, **{4 + i: texture(10 + i) for i in range(4)}}
    chk = checker_of(images)
    first = chk.first_pass(np.array([0, 0, 1, 0, 0, 0, 0]), np.array([1, 2, 0, 3, 4, 5, 6]))
    full = chk(np.array([0, 0]), np.array([1, 2]))
    assert (full.score >= MATCH_THRESHOLD).all()
    assert (first[:3] >= FIRST_PASS_THRESHOLD + 0.1).all(), first
    assert first[2] == pytest.approx(first[0], abs=1e-5)            # either order
    assert np.isnan(first[3])
    assert (first[4:] < FIRST_PASS_THRESHOLD).all(), first


def _first_pass_pair_by_pair(images, a, b):
    """The first pass as the coarse stage at the first pass's sizes computes it for one pair at
    a time (the reference the grouped computation must equal)."""
    chk = PixelChecker(lambda i: images[i], coarse_scales=FIRST_PASS_SCALES)
    out = np.full(len(a), np.nan)
    for r in range(len(a)):
        if chk.thumb(int(a[r])) is None or chk.thumb(int(b[r])) is None:
            continue
        ab, ba = chk._coarse([r], a, b)
        if ab[6][0] or ba[6][0]:
            out[r] = max(ab[0][0], ba[0][0])
    return out


def test_the_first_pass_equals_the_coarse_stage_pair_by_pair():
    """The first pass sorts both directions of every pair by item and shares each image's
    window sums among the templates of one shape: its scores must be the coarse stage's at the
    first pass's sizes, pair by pair, for pictures of several shapes (portrait, landscape, a
    strip), a flat one (NaN) and an unreadable one (NaN), in any order, with any block and
    however few templates are kept."""
    rng = np.random.default_rng(0)
    shapes = [(100, 100), (80, 120), (120, 60), (50, 300)]
    images = {i: texture(100 + i, shapes[i % 4], smooth=1.0 + i % 3) for i in range(16)}
    images[16] = np.full((50, 50), 0.5, np.float32)
    images[17] = None
    images[18] = jpeg(np.rot90(images[1][10:70, 5:100]).copy())
    a = rng.integers(0, 19, 300)
    b = rng.integers(0, 19, 300)
    a[:3], b[:3] = [1, 18, 16], [18, 1, 2]
    ref = _first_pass_pair_by_pair(images, a, b)
    assert np.isnan(ref).any() and ref[0] > 0.8 and np.nanmin(ref) < 0.5       # the case covers both
    got = checker_of(images).first_pass(a, b)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_allclose(got, ref, atol=1e-3)         # templates are kept in float16
    small = PixelChecker(lambda i: images[i], block=7, first_pass_cache=3)
    perm = rng.permutation(len(a))
    again = np.empty(len(a))
    again[perm] = small.first_pass(a[perm], b[perm])
    np.testing.assert_allclose(again, got, atol=1e-6)
    assert len(small._first_tmp) <= 3
    none = PixelChecker(lambda i: images[i], first_pass_cache=0)
    np.testing.assert_allclose(none.first_pass(a, b), got, atol=1e-6)
    assert len(none._first_tmp) == 0
    with pytest.raises(ValueError, match="`first_pass_cache` must be >= 0"):
        PixelChecker(lambda i: images[i], first_pass_cache=-1)


def test_iter_first_pass_reports_progress_and_returns_the_scores():
    images = {i: texture(200 + i) for i in range(12)}
    a, b = np.triu_indices(12, 1)
    run = PixelChecker(lambda i: images[i], block=8).iter_first_pass(a, b, every=40)
    steps = []
    while True:
        try:
            steps.append(next(run))
        except StopIteration as stop:
            scores = stop.value
            break
    assert len(steps) >= 2 and all(t == 2 * len(a) for _, t in steps)
    assert [d for d, _ in steps] == sorted(d for d, _ in steps) and steps[-1][0] < 2 * len(a)
    np.testing.assert_allclose(scores, checker_of(images).first_pass(a, b), atol=1e-6)
    assert checker_of(images).first_pass(np.zeros(0, int), np.zeros(0, int)).shape == (0,)


def test_the_wider_search_keeps_exactly_the_pairs_the_first_pass_passes(model):
    """``wider``: the pairs beyond each item's first ``candidates`` neighbours stay exactly
    where the first pass reaches ``FIRST_PASS_THRESHOLD``, and get the full check; the
    nearest ``candidates`` are kept as without it."""
    src = texture(1)
    arrays = [texture(40 + i) for i in range(6)] + [src, jpeg(resize(np.rot90(src[20:160, 30:200]).copy(), 0.8))]
    arrays = [(np.clip(x, 0, 1) * 255).astype(np.uint8) for x in arrays]
    near = screen(arrays, model, candidates=1, wider=0, texture=0, localize=0)
    wide = screen(arrays, model, candidates=1, wider=7, texture=0, localize=0)
    pairs = lambda res: {(int(x), int(y)) for x, y in zip(res.pairs["a"], res.pairs["b"])}
    a, b = np.triu_indices(len(arrays), 1)
    beyond = [(int(x), int(y)) for x, y in zip(a, b) if (x, y) not in pairs(near)]
    first = checker_of([x.astype(np.float32) for x in arrays]).first_pass(*np.array(beyond).T)
    passed = {p for p, f in zip(beyond, first) if f >= FIRST_PASS_THRESHOLD}
    assert (6, 7) in pairs(wide) and len(passed) < len(beyond)     # something was dropped
    assert pairs(wide) == pairs(near) | passed
    assert wide.info["wider_pairs"] == len(beyond) and wide.info["wider_pairs_kept"] == len(passed)
    assert wide.info["first_pass_threshold"] == FIRST_PASS_THRESHOLD and wide.info["seconds_first_pass"] >= 0
    copy = wide.pairs[(wide.pairs["a"] == 6) & (wide.pairs["b"] == 7)].iloc[0]
    assert copy["match"] >= MATCH_THRESHOLD and copy["method"] == "pixels" and wide.pairs.index[0] == copy.name
    assert np.isfinite(wide.pairs["match"]).all()                  # every kept pair had the full check
    assert near.info["wider_pairs"] == 0 and near.info["first_pass_threshold"] is None


def test_the_gate_spares_the_full_check_of_nearest_pairs_the_first_pass_rules_out(model):
    """``gate_nearest``: the same pairs in the same table, but a nearest pair whose first pass
    stays under ``FIRST_PASS_THRESHOLD`` gets no full check (match NaN), and its distance fuses
    ``GATED_MATCH`` in place of the check's match; the pairs it lets through are checked exactly
    as without the gate."""
    src = texture(1)
    arrays = [texture(40 + i) for i in range(6)] + [src, jpeg(resize(np.rot90(src[20:160, 30:200]).copy(), 0.8))]
    arrays = [(np.clip(x, 0, 1) * 255).astype(np.uint8) for x in arrays]
    gm = copy.copy(model)
    gm.pixel_check = (8.0, 0.4)
    kw = dict(candidates=3, wider=2, texture=0, localize=0)
    plain = screen(arrays, gm, **kw)
    gated = screen(arrays, gm, gate_nearest=True, **kw)
    key = lambda res: [(int(x), int(y)) for x, y in zip(res.pairs["a"], res.pairs["b"])]
    assert set(key(gated)) == set(key(plain))                    # the gate drops no nearest pair
    first = dict(zip(key(plain), checker_of([x.astype(np.float32) for x in arrays]).first_pass(
        *np.array(key(plain)).T)))
    p, g = plain.pairs.set_index(["a", "b"]), gated.pairs.set_index(["a", "b"])
    stopped = [k for k in key(plain) if not first[k] >= FIRST_PASS_THRESHOLD]
    assert stopped and len(stopped) < len(first)                  # it stopped some, not all
    assert gated.info["gate_nearest"] and gated.info["nearest_pairs_gated"] == len(stopped)
    assert not plain.info["gate_nearest"] and plain.info["nearest_pairs_gated"] == 0
    for k in key(plain):
        if k in stopped:
            assert np.isnan(g.loc[k, "match"])
            want = gm.fuse(np.array([g.loc[k, "f"]]), np.array([GATED_MATCH]))[0]
            assert g.loc[k, "distance"] == pytest.approx(want, abs=1e-6)
            assert g.loc[k, "distance"] > g.loc[k, "f"] + 1.0          # pushed away: 8 * (0.4 - 0.2) = 1.6
        else:
            assert g.loc[k, "match"] == pytest.approx(p.loc[k, "match"], abs=1e-6)
            assert g.loc[k, "distance"] == pytest.approx(p.loc[k, "distance"], abs=1e-6)
    assert key(gated)[0] == key(plain)[0] == (6, 7) and gated.pairs.iloc[0]["method"] == "pixels"
    for col in ("transform", "box_a", "box_b"):                     # the check's own row, not a neighbour's
        assert g.loc[(6, 7), col] == p.loc[(6, 7), col]
    with pytest.raises(ValueError, match="`gate_nearest=True` needs the pixel check"):
        screen(arrays, gm, gate_nearest=True, verify=False, localize=0)
    with pytest.raises(TypeError, match="`gate_nearest` must be True or False"):
        screen(arrays, gm, gate_nearest="yes", localize=0)


def test_the_screen_keeps_first_pass_templates_for_every_item_up_to_a_cap(model, monkeypatch):
    """The screen's checker keeps the first pass's templates of every item (FIRST_PASS_CACHE_ITEMS
    at most): its jobs come sorted by image item, so template items recur in no order. What the
    screen finds does not depend on it."""
    import napari_siamforensic.screening as screening

    sizes = []

    class Spy(screening.PixelChecker):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            sizes.append(self.first_pass_cache)

    monkeypatch.setattr(screening, "PixelChecker", Spy)
    src = texture(1)
    arrays = [texture(40 + i) for i in range(6)] + [src, jpeg(resize(np.rot90(src[20:160, 30:200]).copy(), 0.8))]
    arrays = [(np.clip(x, 0, 1) * 255).astype(np.uint8) for x in arrays]
    every = screen(arrays, model, candidates=1, wider=7, texture=0, localize=0)
    monkeypatch.setattr(screening, "FIRST_PASS_CACHE_ITEMS", 3)
    capped = screen(arrays, model, candidates=1, wider=7, texture=0, localize=0)
    assert sizes == [len(arrays), 3]
    assert checker_of(arrays).first_pass_cache == 16384             # PixelChecker's own default is unchanged
    assert every.info["wider_pairs_kept"] < every.info["wider_pairs"]            # the first pass ran and dropped some
    cols = ["a", "b", "match"]
    pd.testing.assert_frame_equal(every.pairs[cols], capped.pairs[cols])
    assert ((every.pairs["a"] == 6) & (every.pairs["b"] == 7)).any()


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(wider=-1), ValueError, "`wider` must be >= 0"),
    (dict(wider=2.5), TypeError, "`wider` must be an integer"),
    (dict(wider=3, verify=False), ValueError, "needs the pixel check"),
])
def test_bad_wider_is_refused_with_what_is_accepted(model, kwargs, error, words):
    with pytest.raises(error, match=words):
        screen([texture(1), texture(2)], model, localize=0, **kwargs)


def test_wider_defaults_to_the_first_pass_with_the_check_and_to_none_without(model):
    """Not given, ``wider`` is ``DEFAULT_WIDER`` where the pixel check runs (its first pass
    decides) and 0 where it does not (nothing could decide), so ``verify=False`` alone is
    never refused."""
    from napari_siamforensic.screening import DEFAULT_WIDER

    arrays = [texture(300 + i) for i in range(4)]
    on = screen(arrays, model, candidates=1, localize=0)
    off = screen(arrays, model, candidates=1, localize=0, verify=False)
    assert DEFAULT_WIDER > 0 and on.info["wider"] == DEFAULT_WIDER and on.info["wider_pairs"] > 0
    assert off.info["wider"] == 0 and off.info["wider_pairs"] == 0


def test_the_screen_puts_pixel_verified_pairs_first_with_their_region(model, tmp_path):
    """A copy cut from a panel (3/4 of each side, mirrored, rescaled, JPEG) among look-alikes:
    the pixel check verifies it, it leads the table with method "pixels" and the cut's box;
    without the check the match column is NaN."""
    src = texture(30, (200, 240))
    Image.fromarray((src * 255).astype(np.uint8)).save(tmp_path / "panel.png")
    cut = resize(np.ascontiguousarray(src[10:160, 40:220][:, ::-1]), 0.9)
    Image.fromarray((np.clip(cut, 0, 1) * 255).astype(np.uint8)).save(tmp_path / "cut.jpg", quality=70)
    for i in range(6):
        Image.fromarray((texture(31 + i, (200, 240)) * 255).astype(np.uint8)).save(tmp_path / f"other{i}.png")
    res = screen([str(tmp_path)], model, candidates=6, localize=0)
    names = {i: os.path.basename(s) for i, s in zip(res.items["id"], res.items["source"])}
    best = res.pairs.iloc[0]
    assert {names[best["a"]], names[best["b"]]} == {"panel.png", "cut.jpg"}
    assert best["match"] >= 0.8 and best["method"] == "pixels" and "mirrored" in best["transform"]
    panel_box = best["box_a"] if names[best["a"]] == "panel.png" else best["box_b"]
    assert box_iou(panel_box, (40, 10, 220, 160)) >= 0.85
    others = res.pairs.iloc[1:]
    assert (others["match"] < MATCH_THRESHOLD).all() and (others["method"] == "pose").all()
    assert res.info["verified_by_pixels"] == 1 and res.info["seconds_verify"] >= 0
    plain = screen([str(tmp_path)], model, candidates=6, localize=0, verify=False)
    assert plain.pairs["match"].isna().all() and plain.info["match_threshold"] is None
    # a threshold on the distance keeps a pair the pixels verified
    strict = screen([str(tmp_path)], model, candidates=6, localize=0, threshold=1e-9)
    assert len(strict.pairs) == 1 and strict.pairs["match"].iloc[0] >= 0.8
    with pytest.raises(TypeError, match="verify"):
        screen([str(tmp_path)], model, verify="yes")


@pytest.mark.parametrize("sy, sx, pose", [(1.0, 0.7, 0), (1.0, 1.5, 5), (0.6, 1.0, 2), (1.0, 0.8, 3)])
def test_a_copy_squeezed_to_another_aspect_ratio_matches_in_the_stretch_stage(sy, sx, pose):
    """A panel resized without keeping its aspect ratio (to fit a figure's layout cell), in a
    pose, JPEG: the stretch stage matches the whole pictures and says how the aspect changed;
    without it the check finds no template of that shape (before the twelfth session such
    copies matched 0.25-0.4, and the fused distance pushed some over 1)."""
    src = texture(70, (180, 200))
    h, w = src.shape
    squeezed = np.asarray(Image.fromarray(src).resize((round(w * sx), round(h * sy)), Image.Resampling.BILINEAR),
                          np.float32)
    copy = jpeg(np.ascontiguousarray(_dihedral(squeezed, pose)), 70)
    others = [texture(71 + i, copy.shape, smooth=s) for i, s in enumerate((1.0, 2.5, 4.0))]
    images = [src, copy] + others
    res = checker_of(images)(np.zeros(4, int), np.arange(1, 5))
    assert res.score[0] >= 0.9 > MATCH_THRESHOLD > res.score[1:].max()
    assert res.stretch[0] == pytest.approx(sx / sy, rel=0.03)             # in a's frame, whatever the pose
    assert f"aspect x{res.stretch[0]:.2f}" in match_transform(res, 0)
    assert (res.box_a[0], res.box_b[0]) == ((0, 0, w, h), (0, 0, copy.shape[1], copy.shape[0]))
    m = pose_match((1, 1), (1, 1), pose, False)
    want = [x for x in describe(m.mirrored, m.rotation_deg, 1.0, False).split(", ") if x != "identity"]
    got = [x for x in match_transform(res, 0).split(", ") if not x.startswith(("scale", "aspect"))]
    assert got == want
    without = PixelChecker(lambda i: images[i], stretch=False)(np.zeros(1, int), np.ones(1, int))
    assert without.score[0] < MATCH_THRESHOLD and without.stretch[0] == 1.0


def test_the_screen_verifies_a_turned_copy_of_a_strip_and_leaves_a_too_thin_one_to_f(model, tmp_path):
    """Blot-lane-like strips (60 x 330 px) and a quarter-turned, JPEG copy of one: the check
    verifies it with its pose. A strip too thin to check (16 x 400 px) and its copy are no
    evidence: match NaN, the pair not verified, its distance f."""
    src = texture(50, (60, 330))
    Image.fromarray((src * 255).astype(np.uint8)).save(tmp_path / "lane.png")
    Image.fromarray((np.rot90(src) * 255).astype(np.uint8)).save(tmp_path / "lane_turned.jpg", quality=75)
    for i in range(4):
        Image.fromarray((texture(51 + i, (60, 330)) * 255).astype(np.uint8)).save(tmp_path / f"other{i}.png")
    thin = texture(60, (16, 400))
    Image.fromarray((thin * 255).astype(np.uint8)).save(tmp_path / "thin.png")
    Image.fromarray((thin[:, ::-1] * 255).astype(np.uint8)).save(tmp_path / "thin_mirrored.png")
    res = screen([str(tmp_path)], model, candidates=6, localize=0)
    names = {i: os.path.basename(s) for i, s in zip(res.items["id"], res.items["source"])}
    pair_names = [{names[a], names[b]} for a, b in zip(res.pairs["a"], res.pairs["b"])]
    best = res.pairs.iloc[0]
    assert pair_names[0] == {"lane.png", "lane_turned.jpg"}
    assert best["match"] >= 0.9 and best["method"] == "pixels" and "rotated 90" in best["transform"]
    assert res.info["verified_by_pixels"] == 1
    thin_rows = [r for r, p in enumerate(pair_names) if p == {"thin.png", "thin_mirrored.png"}]
    assert len(thin_rows) == 1                                  # among the candidates
    row = res.pairs.iloc[thin_rows[0]]
    assert np.isnan(row["match"]) and row["method"] == "pose" and row["distance"] == pytest.approx(row["f"])


def test_the_screen_verifies_a_copy_turned_by_a_few_degrees_and_says_by_how_much(model, tmp_path):
    """A fibre panel turned 9 degrees counter-clockwise, cut to its inside and mirrored, among
    other fibre panels: the check's rotation stage verifies it (the flips-and-turns search alone
    does not), the transform names the angle and the box in the panel surrounds the turned cut."""
    from napari_siamforensic.core.synthetic import generate_scene

    src = generate_scene("fibres", 4, (240, 240)).astype(np.float32)
    Image.fromarray((src * 255).astype(np.uint8)).save(tmp_path / "panel.png")
    turned = np.asarray(Image.fromarray(src).rotate(9.0, resample=Image.Resampling.BICUBIC), np.float32)
    cut = np.ascontiguousarray(turned[40:200, 40:200][:, ::-1])
    Image.fromarray((np.clip(cut, 0, 1) * 255).astype(np.uint8)).save(tmp_path / "turned.jpg", quality=85)
    for i in range(5):
        other = generate_scene("fibres", 100 + i, (240, 240)).astype(np.float32)
        Image.fromarray((other * 255).astype(np.uint8)).save(tmp_path / f"other{i}.png")
    res = screen([str(tmp_path)], model, candidates=6, localize=0)
    names = {i: os.path.basename(s) for i, s in zip(res.items["id"], res.items["source"])}
    best = res.pairs.iloc[0]
    assert {names[best["a"]], names[best["b"]]} == {"panel.png", "turned.jpg"}
    assert best["match"] >= MATCH_THRESHOLD and best["method"] == "pixels"
    # turned 9 degrees counter-clockwise, then mirrored = mirrored, then turned 9 degrees clockwise
    assert any(best["transform"] == f"mirrored, rotated {d}° cw" for d in (8, 9, 10)), best["transform"]
    panel_box = best["box_a"] if names[best["a"]] == "panel.png" else best["box_b"]
    half = 80 * (np.cos(np.deg2rad(9)) + np.sin(np.deg2rad(9)))
    assert box_iou(panel_box, (120 - half, 120 - half, 120 + half, 120 + half)) >= 0.8
    assert (res.pairs.iloc[1:]["match"] < MATCH_THRESHOLD).all()
    # the same pair without the rotation stage: not verified
    pair = PixelChecker(lambda i: [src, cut][i], rotations=False)(np.array([0]), np.array([1]))
    assert pair.score[0] < MATCH_THRESHOLD


def test_the_overlap_correlation_equals_a_direct_one():
    """_overlap_ncc: at every offset where the two pictures share enough, the NCC over the shared
    region only (each picture's own mean and variance there), scored down below
    OVERLAP_FULL_AREA as atanh scaled by sqrt(area / OVERLAP_FULL_AREA); the best offset and
    pose are the ones a direct loop finds."""
    from napari_siamforensic.core.pixels import (MIN_TEMPLATE, MIN_TEMPLATE_SIDE, OVERLAP_FULL_AREA,
                                                 OVERLAP_MIN_FRACTION, SIDE, _overlap_ncc)

    rng = np.random.default_rng(5)
    S = 32
    u = SIDE / S
    big = ndi.gaussian_filter(rng.standard_normal((60, 60)), 1.0).astype(np.float32)
    f = big[4:31, 6:36]                                                   # 27 x 30
    g = big[15:40, 20:44] + 0.2 * rng.standard_normal((25, 24)).astype(np.float32)   # shares 16 x 16
    frames, shapes = _posed(f, [0, 3], S)
    G = np.zeros((1, S, S), np.float32)
    G[0, :25, :24] = g
    val, r, pj, oy, ox, sign, ok = _overlap_ncc(frames[None], shapes[None], G, np.array([[25, 24]]), S)
    best = (0.0, None, None)
    for p in (0, 3):
        im = _dihedral(f, p)
        H, W = im.shape
        for y in range(-24, H):
            for x in range(-23, W):
                y0, y1, x0, x1 = max(0, y), min(H, y + 25), max(0, x), min(W, x + 24)
                if y1 - y0 <= 0 or x1 - x0 <= 0:
                    continue
                n = (y1 - y0) * (x1 - x0)
                if ((y1 - y0) * u < MIN_TEMPLATE_SIDE or (x1 - x0) * u < MIN_TEMPLATE_SIDE
                        or n < max(OVERLAP_MIN_FRACTION * min(H * W, 25 * 24), MIN_TEMPLATE ** 2 / u ** 2)):
                    continue
                a = im[y0:y1, x0:x1] - im[y0:y1, x0:x1].mean()
                b = g[y0 - y:y1 - y, x0 - x:x1 - x] - g[y0 - y:y1 - y, x0 - x:x1 - x].mean()
                c = abs(float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum())))
                sc = np.tanh(np.arctanh(min(c, 1 - 1e-6)) * np.sqrt(min(1.0, n * u * u / OVERLAP_FULL_AREA)))
                if sc > best[0]:
                    best = (sc, c, (p, y, x))
    assert ok[0] and sign[0] > 0
    assert val[0] == pytest.approx(best[0], abs=1e-4) and r[0] == pytest.approx(best[1], abs=1e-4)
    assert ([0, 3][pj[0]], oy[0], ox[0]) == best[2] == (0, 11, 14)
    # only near a given offset: the same best where it lies within the radius, a worse one where not
    near = _overlap_ncc(frames[None], shapes[None], G, np.array([[25, 24]]), S, near=np.array([[10, 13]]), radius=1)
    assert (near[3][0], near[4][0]) == (11, 14) and near[0][0] == pytest.approx(val[0], abs=1e-5)
    far = _overlap_ncc(frames[None], shapes[None], G, np.array([[25, 24]]), S, near=np.array([[0, 0]]), radius=2)
    assert far[0][0] < val[0] - 0.3


@pytest.mark.parametrize("pose", [0, 1, 6])
@pytest.mark.parametrize("share", [(0.6, 0.6), (0.5, 0.85), (0.9, 0.45)])
def test_two_views_that_share_a_region_match_in_the_overlap_stage(pose, share):
    """Two panels cut from one larger picture that share a region, neither holding the other
    (overlapping fields of view), the second in a pose, gamma-changed, JPEG: the overlap stage
    matches them and boxes the shared region in both; without it neither picture is found in
    the other (before the thirteenth session such pairs matched about 0.2, and the fused
    distance called them different)."""
    big = texture(80, (300, 320), smooth=1.5)
    h, w = 170, 190
    dy, dx = round(h * (1 - share[0])), round(w * (1 - share[1]))
    a = big[:h, :w]
    b_up = big[dy:dy + h, dx:dx + w]
    b = jpeg(np.ascontiguousarray(_dihedral(b_up, pose)) ** 1.2, 75)
    images = [a, b] + [texture(81 + i, b.shape, smooth=s) for i, s in enumerate((1.0, 1.5, 2.5))]
    res = PixelChecker(lambda i: images[i], overlap=True)(np.zeros(4, int), np.arange(1, 5))
    assert res.score[0] >= 0.75 and res.overlap[0], res.score
    assert res.score[1:].max() < MATCH_THRESHOLD
    assert "shared region" in match_transform(res, 0)
    shared_a = (dx, dy, w, h)                                                 # x0, y0, x1, y1 in a
    assert box_iou(res.box_a[0], shared_a) >= 0.8, (res.box_a[0], shared_a)
    # in b: the shared region is b_up[:h - dy, :w - dx], then b_up was posed
    mask = np.zeros((h, w), bool)
    mask[:h - dy, :w - dx] = True
    ys, xs = np.nonzero(_dihedral(mask, pose))
    assert box_iou(res.box_b[0], (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)) >= 0.8
    m = pose_match((1, 1), (1, 1), pose, False)
    want = [x for x in describe(m.mirrored, m.rotation_deg, 1.0, False).split(", ") if x != "identity"]
    assert [x for x in match_transform(res, 0).split(", ") if x not in ("shared region",)
            and not x.startswith("scale")] == want
    without = checker_of(images)(np.zeros(1, int), np.ones(1, int))          # off by default
    assert without.score[0] < MATCH_THRESHOLD and not without.overlap[0]


def test_views_that_share_little_or_nothing_do_not_match():
    """Two regions of one picture that share at most about a tenth of their area (the re-use
    set's hard negatives share at most 10 %) stay below the threshold: the overlap stage needs
    a quarter of the smaller picture."""
    big = texture(90, (260, 420), smooth=1.5)
    a = big[:, :200]
    images = [a] + [np.ascontiguousarray(big[:, x:x + 200]) for x in (180, 200, 220)]
    res = PixelChecker(lambda i: images[i], overlap=True)(np.zeros(3, int), np.arange(1, 4))
    assert res.score.max() < MATCH_THRESHOLD, res.score
    # under the threshold the overlap stage's score does not count: the same as without it
    without = PixelChecker(lambda i: images[i], overlap=False)(np.zeros(3, int), np.arange(1, 4))
    np.testing.assert_array_equal(res.score, without.score)
    assert not res.overlap.any()


def test_repeated_structure_does_not_pass_for_a_shared_region(monkeypatch):
    """Two regions of one blot-like picture (lanes with bands at the same heights, each lane's
    own strengths) that share nothing match at a shifted offset, and at several: the overlap
    stage asks its best offset to be unique (``OVERLAP_UNIQUE``), so they stay where the other
    stages put them (below the threshold for this picture); without the rule they would pass.
    (For 5 of 6 such pictures the whole-picture stages themselves reach 0.69-0.79: the check's
    weak case, see docs/screening.md, *Thirteenth session*.)"""
    from napari_siamforensic.core import pixels

    lanes = blot_lanes(4)
    images = [np.ascontiguousarray(lanes[:, :200]), jpeg(np.ascontiguousarray(lanes[:, 210:410]), 80)]
    one, two = np.zeros(1, int), np.ones(1, int)
    plain = PixelChecker(lambda i: images[i])(one, two)
    res = PixelChecker(lambda i: images[i], overlap=True)(one, two)
    assert plain.score[0] < MATCH_THRESHOLD and res.score[0] == plain.score[0] and not res.overlap[0], res.score
    monkeypatch.setattr(pixels, "OVERLAP_UNIQUE", (3, 0.0))
    loose = PixelChecker(lambda i: images[i], overlap=True, structure=False)(one, two)
    assert loose.score[0] >= MATCH_THRESHOLD and loose.overlap[0], loose.score
    # the check's line rule (fourteenth session) guards the overlap stage too: its shared region
    # does not match beyond its rows' means
    guarded = PixelChecker(lambda i: images[i], overlap=True)(one, two)
    assert guarded.score[0] < MATCH_THRESHOLD and not guarded.overlap[0], guarded.score


@pytest.mark.parametrize("turn", [False, True])
def test_different_lanes_of_one_blot_do_not_match_and_its_copies_do(turn):
    """Two regions of one blot that share no pixel line their bands up at the same heights;
    before the fourteenth session the check matched them over 0.6 (the thirteenth session's
    weak case). Its score is now also at most the correlation beyond the rows' and the
    columns' means, which different lanes lack and a copy keeps. Lanes running across (the
    picture turned a quarter) as well."""
    images = []
    for p in (blot_lanes(s) for s in range(6)):
        images += [p[:, :200], jpeg(np.ascontiguousarray(p[:, 210:410]), 80), jpeg(np.ascontiguousarray(p[20:200, 15:175]), 80)]
    images = [np.ascontiguousarray(np.rot90(x) if turn else x) for x in images]
    a = np.repeat(np.arange(0, len(images), 3), 2)
    b = np.stack([a + 1, a + 2], 1)[::2].ravel()
    res = PixelChecker(lambda i: images[i])(a, b)
    other, copy = res.score[0::2], res.score[1::2]
    assert np.all(other < MATCH_THRESHOLD), other
    assert np.all(copy >= 0.75), copy
    before = PixelChecker(lambda i: images[i], structure=False)(a, b).score
    assert np.sum(before[0::2] >= MATCH_THRESHOLD) >= 4, before[0::2]      # the rule is what keeps them apart


def test_the_line_rule_equals_a_direct_computation():
    from napari_siamforensic.core.pixels import _beyond_lines

    rng = np.random.default_rng(0)
    S, n = 64, 12
    tmp = np.zeros((n, S, S), np.float32)
    img = rng.standard_normal((n, S, S)).astype(np.float32)
    hw = rng.integers(6, 50, (n, 2))
    oy, ox = rng.integers(0, 14, n), rng.integers(0, 14, n)
    want = []
    for k in range(n):
        h, w = hw[k]
        win = img[k, oy[k]:oy[k] + h, ox[k]:ox[k] + w].astype(np.float64)
        t = win + 0.8 * rng.standard_normal((h, w)) + 2.0 * rng.standard_normal((h, 1)) * (k % 2)
        t = (t - t.mean()) * (1 - 2 * (k % 3 == 0))                   # some inverted: the sign is kept
        tmp[k, :h, :w] = t / np.linalg.norm(t)
        sign, rs = np.sign(((t - t.mean()) * (win - win.mean())).sum()), []
        for axis in (0, 1):
            pr, qr = t - t.mean(axis, keepdims=True), win - win.mean(axis, keepdims=True)
            rs.append(max(0.0, sign * (pr * qr).sum() / np.sqrt((pr * pr).sum() * (qr * qr).sum())))
        want.append(min(rs))
    got = _beyond_lines(tmp, img, hw, oy, ox)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert 0.2 < min(want) and max(want) < 0.95              # neither trivially 0 nor 1
    flat = np.zeros((1, S, S), np.float32)
    flat[0, :10, :10] = np.linspace(-1, 1, 10)[None, :] / np.sqrt(10 * (np.linspace(-1, 1, 10) ** 2).sum())
    assert _beyond_lines(flat, img[:1], np.array([[10, 10]]), [0], [0])[0] == 0.0     # nothing beyond its columns


def test_the_line_rule_leaves_copies_of_ordinary_pictures_alone():
    images = []
    for s in range(6):
        t = texture(300 + s, smooth=1.5)
        images += [t, jpeg(np.ascontiguousarray(np.rot90(t[10:170, 20:200], s % 4)), 70)]
    a, b = np.arange(0, 12, 2), np.arange(1, 12, 2)
    with_rule = PixelChecker(lambda i: images[i])(a, b).score
    without = PixelChecker(lambda i: images[i], structure=False)(a, b).score
    assert np.all(with_rule >= 0.75) and np.all(without - with_rule < 0.02), (with_rule, without)


def test_the_refine_gate_reads_the_correlation_before_the_line_rule(monkeypatch):
    """Pairs are measured again at finer sizes (``_refine``) when their best correlation before
    the line rule reaches ``refine_from``: at the coarse grid of sizes a copy correlates only in
    part, and gating on the capped score kept a planted copy of the N = 10,000 screen from the
    size that matched it (0.859 -> 0.495). Here the rule is made to cap everything to 0: the
    same pairs must still be refined."""
    from napari_siamforensic.core import pixels

    images = []
    for s in range(4):
        t = texture(700 + s, smooth=1.5)
        images += [t, jpeg(resize(np.ascontiguousarray(t[10:170, 20:200]), 1.17), 70), texture(800 + s, smooth=1.5)]
    a = np.repeat(np.arange(0, 12, 3), 2)
    b = np.stack([np.arange(1, 12, 3), np.arange(2, 12, 3)], 1).ravel()
    seen = {}
    real_refine = PixelChecker._refine

    def spy(self, rows, a_, b_, out):
        seen.setdefault(self.structure, []).append(sorted(int(r) for r in rows))
        return real_refine(self, rows, a_, b_, out)

    monkeypatch.setattr(PixelChecker, "_refine", spy)
    plain = PixelChecker(lambda i: images[i], structure=False, rotations=False)(a, b)
    monkeypatch.setattr(pixels, "_beyond_lines", lambda tmp, *args: np.zeros(len(tmp)))
    capped = PixelChecker(lambda i: images[i], rotations=False)(a, b)
    assert seen[False][0] == seen[True][0] and len(seen[True][0]) >= 4, seen     # the copies, not only
    assert np.all(capped.score == 0) and np.all(plain.score[0::2] >= 0.7), (capped.score, plain.score)


def test_the_small_template_discount_is_applied_before_the_best_template_is_chosen():
    """With ``full_area``, each template's best ``|NCC|`` is discounted by its area,
    ``tanh(atanh(r) sqrt(area / full_area))``, and the best of those is chosen: here the
    smallest template correlates best by chance (0.255 against 0.238 for the whole one), and
    after the discount the whole one wins. ``raw`` is the chosen template's correlation."""
    rng = np.random.default_rng(10)
    S = 32
    img = ndi.gaussian_filter(rng.standard_normal((30, 30)), 1.0).astype(np.float32)
    tmp = img[4:26, 3:27] + 0.8 * rng.standard_normal((22, 24)).astype(np.float32)
    frames, shapes = _posed(img, [0], S)
    tmps, sizes = _templates(tmp, (1.0, 0.8, 0.6), S)
    plain = [float(_correlate(frames[None], shapes[None], tmps[None][:, [c]], sizes[None][:, [c]])[0][0])
             for c in range(3)]
    full = 400.0
    disc = [np.tanh(np.arctanh(r) * np.sqrt(min(1.0, sizes[c].prod() / full))) for c, r in enumerate(plain)]
    assert int(np.argmax(plain)) == 2 and int(np.argmax(disc)) == 0          # the discount changes the choice
    val, _, cj, *_, raw = _correlate(frames[None], shapes[None], tmps[None], sizes[None], full)
    assert cj[0] == 0 and val[0] == pytest.approx(max(disc), abs=1e-5) and raw[0] == pytest.approx(plain[0], abs=1e-5)
    undiscounted, _, cj0, *_, raw0 = _correlate(frames[None], shapes[None], tmps[None], sizes[None])
    assert cj0[0] == 2 and undiscounted[0] == raw0[0] == pytest.approx(plain[2], abs=1e-5)


def test_the_small_template_discount_lowers_chance_matches_and_leaves_copies_alone():
    """Different strips (their templates are small on a 64 px thumbnail) correlate less with the
    discount; copies of square pictures, matched by templates of a full thumbnail's area, keep
    their score."""
    strips = [texture(900 + i, (70, 200), smooth=1.5) for i in range(6)]
    a, b = np.triu_indices(6, 1)
    with_ = PixelChecker(lambda i: strips[i])(a, b).score
    without = PixelChecker(lambda i: strips[i], template_full_area=None)(a, b).score
    assert np.all(with_ <= without + 1e-6) and np.sum(with_ < without - 0.02) >= 5, (with_, without)
    images = []
    for s in range(4):
        t = texture(950 + s, (200, 200), smooth=1.5)
        images += [t, jpeg(np.ascontiguousarray(np.rot90(t, s)), 70)]
    a, b = np.arange(0, 8, 2), np.arange(1, 8, 2)
    kept = PixelChecker(lambda i: images[i])(a, b).score
    plain = PixelChecker(lambda i: images[i], template_full_area=None)(a, b).score
    np.testing.assert_allclose(kept, plain, atol=1e-6)
    assert np.all(kept >= 0.8)


@pytest.mark.parametrize("bad", [0, -5.0, float("nan"), float("inf")])
def test_a_bad_template_full_area_is_refused_with_what_is_accepted(bad):
    with pytest.raises(ValueError, match="template_full_area"):
        PixelChecker(lambda i: None, template_full_area=bad)
