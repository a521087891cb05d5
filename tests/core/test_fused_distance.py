"""The pixel check fused into ForensicModel.distance (``pixel_check``, ``fuse``, ``soft_floor``,
``calibrate_pixels``), and the raw paper f one argument away."""
from __future__ import annotations

import numpy as np
import pytest

import napari_siamforensic as sf
from napari_siamforensic._validation import as_image_list
from napari_siamforensic.core.pixels import pair_match
from napari_siamforensic.core.scoring import SOFT_FLOOR, calibrate_pixels, soft_floor

from .conftest import scene


@pytest.fixture()
def model(trained_model):
    """The session's trained model with a pixel check (restored afterwards: it is shared)."""
    before = (trained_model.poses, trained_model.pixel_check)
    trained_model.poses, trained_model.pixel_check = "dihedral", (3.0, 0.5)
    yield trained_model
    trained_model.poses, trained_model.pixel_check = before


def test_soft_floor_is_the_identity_above_the_floor_and_positive_increasing_below():
    z = np.linspace(-5, 3, 801)
    s = soft_floor(z)
    above = z >= SOFT_FLOOR
    np.testing.assert_array_equal(s[above], z[above])
    assert (s > 0).all() and (np.diff(s) > 0).all()
    eps = 1e-6                                   # continuous, and smooth, at the floor
    assert soft_floor(SOFT_FLOOR - eps) == pytest.approx(SOFT_FLOOR - eps, abs=1e-9)
    assert soft_floor(-50.0) >= 0


def test_fuse_adds_the_weighted_match_and_keeps_f_where_not_checked(model):
    f = np.array([0.5, 0.5, 2.0, 0.8])
    m = np.array([1.0, 0.0, 0.9, np.nan])
    got = model.fuse(f, m)
    assert got[0] == pytest.approx(soft_floor(0.5 + 3.0 * (0.5 - 1.0)))
    assert got[1] == pytest.approx(0.5 + 3.0 * 0.5)       # no match: pushed over the line
    assert got[2] == pytest.approx(2.0 + 3.0 * (0.5 - 0.9))
    assert got[3] == 0.8                                  # NaN: not checked, f as it was
    model.pixel_check = None
    np.testing.assert_array_equal(model.fuse(f, m), f)


def test_a_wide_strip_is_checked_and_one_too_thin_to_check_keeps_its_f(model):
    """A blot-lane-like strip (5 times as wide as high) and its mirrored copy: the check
    matches them and the fused distance stays a duplicate's. A strip too thin for any template
    (64 x 3 px on its check thumbnail) is not compared: its match is NaN and its distance is f,
    not f pushed over the line as if the pixels differed (before the twelfth session the strip
    matched 0.08 and its distance was pushed over 1, and the thin one's f too)."""
    strip = scene(42, (60, 300)).astype(np.float32)
    thin = scene(43, (16, 340)).astype(np.float32)
    a, b = [strip, thin], [strip[:, ::-1].copy(), thin[:, ::-1].copy()]
    match = pair_match(as_image_list(a), as_image_list(b)).score
    f = model.distance(a, b, pixels=False)
    d = model.distance(a, b)
    assert match[0] > 0.9 and np.isnan(match[1])
    np.testing.assert_allclose(d, model.fuse(f, match), rtol=1e-5, atol=1e-6)
    assert d[0] <= soft_floor(f[0]) and d[0] < 1.0                # the match pulls the copy in
    assert d[1] == pytest.approx(f[1], rel=1e-6)


def test_a_copy_squeezed_to_another_aspect_ratio_stays_a_duplicate(model):
    """A panel resized to 1.5 times its width (its height kept) and mirrored: the check's
    stretch stage matches it, so the fused distance does not push it over the line."""
    from PIL import Image

    a = scene(44, 200).astype(np.float32)
    wide = np.asarray(Image.fromarray(a).resize((300, 200), Image.Resampling.BILINEAR), np.float32)[:, ::-1].copy()
    match = pair_match(as_image_list([a]), as_image_list([wide])).score
    d = model.distance([a], [wide])
    assert match[0] > 0.9 and d[0] < 1.0


def test_distance_fuses_the_pixel_check_and_the_raw_f_is_one_argument_away(model):
    a = scene(40, 200)
    c = scene(41, 200)
    copy = np.rot90(a[20:180, 10:190])[:, ::-1].copy()           # a crop, turned and mirrored
    f = model.distance([a, a], [copy, c], pixels=False)
    match = pair_match(as_image_list([a, a]), as_image_list([copy, c])).score
    d = model.distance([a, a], [copy, c])
    np.testing.assert_allclose(d, model.fuse(f, match), rtol=1e-5, atol=1e-6)
    assert match[0] > 0.8 and match[1] < 0.5, match
    assert d[0] < f[0] and d[1] > f[1]                          # the copy closer, the other image further
    assert (d >= 0).all()
    raw = model.distance([a, a], [copy, c], poses="none")
    model.pixel_check = None
    np.testing.assert_allclose(raw, model.distance([a, a], [copy, c], poses="none"), rtol=1e-6)
    p = model.probability_from_distance(d)
    np.testing.assert_allclose(np.asarray(model.same_probability([a, a], [copy, c], pixels=False)),
                               model.probability_from_distance(f), rtol=1e-5)
    assert p.shape == (2,)


def test_pixels_switch_is_checked(model):
    a, b = [scene(1, 96)], [scene(2, 96)]
    with pytest.raises(TypeError, match="pixels"):
        model.distance(a, b, pixels="yes")
    model.pixel_check = None
    with pytest.raises(ValueError, match="calibrate_pixels"):
        model.distance(a, b, pixels=True)
    assert model.distance(a, b).shape == (1,)                      # None: no check, no error


@pytest.mark.parametrize("bad", [(0.0, 0.5), (-1, 0.5), (3.0, float("nan")), (3.0, 5.0), (1e9, 0.5)])
def test_bad_pixel_check_values_are_refused(model, bad):
    with pytest.raises(ValueError, match="pixel_check"):
        model.pixel_check = bad
    with pytest.raises(TypeError, match="pixel_check"):
        model.pixel_check = "strong"


def test_pairwise_fuses_every_pair_symmetrically(model):
    a = scene(50, 160)
    ims = [a, a[:, ::-1].copy(), scene(51, 160), scene(52, (120, 180))]
    m = model.pairwise(ims)
    plain = model.pairwise(ims, pixels=False)
    assert m.shape == (4, 4) and np.allclose(m, m.T) and (np.diag(m) == 0).all() and (m >= 0).all()
    match = pair_match(as_image_list([ims[0]]), as_image_list([ims[2]])).score
    assert m[0, 2] == pytest.approx(float(model.fuse(plain[0, 2:3], match)[0]), rel=1e-5)
    assert m[0, 1] < 0.01 and m[0, 1] < m[0, 2:].min()          # the mirrored copy


def test_pixel_check_survives_save_and_load(model, tmp_path):
    path = model.save(tmp_path / "m.safetensors")
    again = sf.load_model(path, device="cpu")
    assert again.pixel_check == pytest.approx((3.0, 0.5))
    model.pixel_check = None
    path = model.save(tmp_path / "none.safetensors")
    assert sf.load_model(path, device="cpu").pixel_check is None


def test_calibrate_pixels_recovers_a_known_boundary(model):
    rng = np.random.default_rng(0)
    n = 20_000
    f, m = rng.uniform(0, 2, n), rng.uniform(0, 1, n)
    z = f + 2.0 * (0.5 - m)                      # the truth: weight 2, center 0.5; symmetric about 1
    y = rng.random(n) < 1.0 / (1.0 + np.exp(8.0 * (z - 1.0)))
    weight, center = calibrate_pixels(model, f, m, y)
    assert weight == pytest.approx(2.0, abs=0.15) and center == pytest.approx(0.5, abs=0.05)
    assert model.pixel_check == (weight, center)
    fused = model.fuse(f, m)
    assert ((fused <= 1) == y).mean() > 0.85
    # pairs the check could not compare (NaN) are left out of the fit, not read as match 0
    m_nan = m.copy()
    m_nan[:5000] = np.nan
    y_odd = y.copy()
    y_odd[:5000] = ~y[:5000]                     # whatever their labels, they do not move the fit
    assert calibrate_pixels(model, f, m_nan, y_odd) == calibrate_pixels(model, f[5000:], m[5000:], y[5000:])


def test_calibrate_pixels_refuses_what_it_cannot_fit(model):
    with pytest.raises(ValueError, match="both"):
        calibrate_pixels(model, [0.1, 0.2, 0.3, 0.4], [0.9, 0.8, 0.7, 0.6], [True] * 4)
    with pytest.raises(ValueError, match="equal-length"):
        calibrate_pixels(model, [0.1, 0.2], [0.9, 0.8, 0.7], [True, False])
    with pytest.raises(ValueError, match="finite"):
        calibrate_pixels(model, [0.1, np.nan, 0.3, 0.4], [0.9, 0.8, 0.7, 0.6], [True, False, True, False])
    with pytest.raises(ValueError, match="finite"):
        calibrate_pixels(model, [0.1, 0.2, 0.3, 0.4], [0.9, np.inf, 0.7, 0.6], [True, False, True, False])
    with pytest.raises(ValueError, match="NaN"):
        calibrate_pixels(model, [0.1, 0.2, 0.3, 0.4, 0.5], [0.9, np.nan, 0.7, np.nan, 0.6], [True, False] * 2 + [True])
    rng = np.random.default_rng(1)
    f, m = rng.uniform(0, 2, 400), rng.uniform(0, 1, 400)
    with pytest.raises(ValueError, match="calibration failed"):
        calibrate_pixels(model, f, m, m < 0.5)                   # a smaller match means MORE duplicates


def test_iter_pairwise_reports_progress_and_ends_with_the_pairwise_matrix(model):
    ims = [scene(60 + i, 96) for i in range(6)]                  # 15 pairs
    reports = list(model.iter_pairwise(ims, chunk=4))
    assert [r.done for r in reports] == [0, 4, 8, 12, 15] and {r.total for r in reports} == {15}
    assert all(r.matrix is None for r in reports[:-1]) and reports[-1].message == "matrix done"
    np.testing.assert_allclose(reports[-1].matrix, model.pairwise(ims), rtol=1e-6)
    it = model.iter_pairwise(ims, chunk=4)                       # stopping early cancels: no matrix
    assert next(it).message == "0 of 15 pairs checked" and next(it).done == 4
    it.close()
    plain = list(model.iter_pairwise(ims, pixels=False))          # no check: one report, then the matrix
    assert [(r.done, r.total) for r in plain] == [(0, 0), (0, 0)] and plain[0].message == "embedding"
    with pytest.raises(ValueError, match="chunk"):
        next(model.iter_pairwise(ims, chunk=0))


@pytest.mark.parametrize("stored", [(1.0,), (0.0, 0.5), ("a", "b")], ids=["one number", "weight 0", "words"])
def test_a_file_with_bad_pixel_check_metadata_is_refused(model, tmp_path, stored):
    model._pixel_check = stored              # past the setter, as a foreign or damaged file would hold it
    path = model.save(tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match="pixel_check"):
        sf.load_model(path, device="cpu")


def test_calibrate_pixels_is_public(model):
    assert sf.calibrate_pixels is calibrate_pixels and "calibrate_pixels" in sf.__all__


def test_pair_match_checks_its_input_like_distance():
    a = scene(70, 120)
    rgb = np.dstack([a, a, a])
    got = pair_match([a], [rgb[:, ::-1]])                       # colour, mirrored: the same pixels
    assert got.score[0] > 0.9
    with pytest.raises(ValueError, match="images_b"):
        pair_match([a, a], [a])
    with pytest.raises(ValueError):
        pair_match([np.full((32, 32), np.nan)], [a])
