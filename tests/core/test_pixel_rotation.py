"""The pixel check's small-rotation stage (core.pixels): the angle read off the spectra, the
turned check, and what it reports."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from napari_siamforensic.core.pixels import (MATCH_THRESHOLD, ROTATION_RANGE, PixelChecker, _inscribed, _unturn_box,
                                             angular_profile, check_thumbnail, estimate_rotation, pair_match)
from napari_siamforensic.core.synthetic import generate_scene
from napari_siamforensic.screening.localize import box_iou
from napari_siamforensic.screening.verify import match_transform


def scene(seed: int, kind: str = "fibres", size: int = 256) -> np.ndarray:
    return generate_scene(kind, seed, (size, size)).astype(np.float32)


def turned(img: np.ndarray, angle: float, mirror: bool = False, cut: int = 40) -> np.ndarray:
    """``img`` mirrored (optionally), turned ``angle`` degrees counter-clockwise about its centre
    and cut ``cut`` px in from every side (no empty corners left)."""
    x = np.ascontiguousarray(img[:, ::-1] if mirror else img, np.float32)
    r = np.asarray(Image.fromarray(x).rotate(angle, resample=Image.Resampling.BICUBIC), np.float32)
    return r[cut:-cut, cut:-cut].copy()


def checked(a, b, **kw):
    return PixelChecker(lambda i: [a, b][i], **kw)(np.array([0]), np.array([1]))


@pytest.mark.parametrize("angle", [-14.0, -6.0, 4.0, 11.0])
@pytest.mark.parametrize("mirror", [False, True])
def test_the_angle_is_read_off_the_spectra(angle, mirror):
    img = scene(3)
    pa = angular_profile(check_thumbnail(img))
    pb = angular_profile(check_thumbnail(turned(img, angle, mirror)))
    got_mirror, got, strength = estimate_rotation(pa, pb)
    assert got_mirror == mirror
    assert abs(got - angle) <= 2.0
    assert 0.5 < strength <= 1.0 + 1e-9


def test_the_angle_survives_a_crop_a_quarter_turn_and_a_rescale():
    img = scene(11, size=320)
    pa = angular_profile(check_thumbnail(img))
    b = turned(img, 9.0, cut=40)                               # keeps 75 % of the side
    _, got, _ = estimate_rotation(pa, angular_profile(check_thumbnail(b)))
    assert abs(got - 9.0) <= 2.0
    b = np.rot90(b, 1)
    b = np.asarray(Image.fromarray(np.ascontiguousarray(b)).resize((120, 120), Image.Resampling.BILINEAR), np.float32)
    _, again, _ = estimate_rotation(pa, angular_profile(check_thumbnail(b)))
    assert abs(again - got) <= 1.0                             # modulo the quarter turn


def test_profiles_are_unit_norm_and_flat_pictures_have_none():
    p = angular_profile(check_thumbnail(scene(5)))
    assert p.shape == (180,) and abs(np.linalg.norm(p) - 1) < 1e-9 and abs(p.mean()) < 1e-9
    assert not np.any(angular_profile(np.zeros((64, 40), np.float32)))
    assert estimate_rotation(np.zeros(180), np.zeros(180))[2] == 0.0
    many = estimate_rotation(np.stack([p, p]), np.stack([p, np.roll(p, 7)]))
    np.testing.assert_allclose(many[1], [0.0, 7.0])


@pytest.mark.parametrize("angle, mirror, turns", [(8.0, False, 1), (-12.0, False, 0), (10.0, True, 2)])
def test_a_turned_copy_is_verified_with_its_angle_region_and_words(angle, mirror, turns):
    img = scene(7)
    b = np.rot90(turned(img, angle, mirror), turns).copy()
    plain = checked(img, b, rotations=False)
    m = checked(img, b)
    assert plain.score[0] < 0.5 <= MATCH_THRESHOLD < m.score[0]
    assert abs(m.angle[0] - angle) <= 2.0 and m.mirror_a[0] == mirror
    # the copy is the centre 176 px of the turned picture: in the original, the upright box
    # around that square turned back
    half = 88 * (abs(np.cos(np.deg2rad(angle))) + abs(np.sin(np.deg2rad(angle))))
    truth = (128 - half, 128 - half, 128 + half, 128 + half)
    assert box_iou(m.box_a[0], truth) > 0.8
    assert box_iou(m.box_b[0], (0, 0, 176, 176)) > 0.9
    words = match_transform(m, 0)
    total = (angle + 90 * turns + 180) % 360 - 180             # counter-clockwise, after the mirror
    way = "ccw" if total > 0 else "cw"
    turn = "rotated 180°" if abs(abs(total) - 180) < 1 else f"rotated {abs(round(total))}° {way}"
    expect = ("mirrored, " if mirror else "") + turn
    # the words round the measured angle, which may be a degree or two off
    got_deg = int(words.split("rotated ")[1].split("°")[0]) if "rotated" in words else 0
    assert words.startswith("mirrored, " if mirror else "rotated") and abs(got_deg - abs(round(total))) <= 2
    assert ("ccw" in words) == ("ccw" in expect)


def test_the_stage_only_adds_a_hypothesis_and_unrelated_pictures_stay_apart():
    imgs = [scene(s, kind) for s, kind in zip(range(20, 32), ["fibres", "cells", "tissue"] * 4)]
    a, b = np.repeat(np.arange(12), 11), np.array([j for i in range(12) for j in range(12) if j != i])
    with_ = PixelChecker(lambda i: imgs[i])(a, b)
    without = PixelChecker(lambda i: imgs[i], rotations=False)(a, b)
    assert np.all(with_.score >= without.score - 1e-6)         # the better of the two checks
    assert with_.score.max() < MATCH_THRESHOLD
    same = with_.score == without.score
    assert (~same).any(), "the stage never ran: nothing to test"
    assert np.all(with_.angle[same] == 0) and np.all(with_.angle[~same] != 0)
    lo, hi = ROTATION_RANGE
    assert np.all((with_.angle == 0) | ((np.abs(with_.angle) >= lo) & (np.abs(with_.angle) <= hi)))


def test_rotations_outside_the_range_are_not_tried():
    img = scene(9)
    m = checked(img, turned(img, 35.0))
    assert m.angle[0] == 0.0
    assert checked(img, turned(img, 0.8)).angle[0] == 0.0       # too small to matter: the plain check has it


@pytest.mark.parametrize("h, w, angle", [(100, 100, 10.0), (100, 200, 15.0), (64, 40, 20.0), (80, 120, -7.0)])
def test_the_inscribed_rectangle_fits_inside_the_turned_one(h, w, angle):
    ih, iw = _inscribed(h, w, angle)
    assert 0 < ih <= h and 0 < iw <= w
    t = np.deg2rad(angle)
    # the corners of the upright rectangle, turned back into the frame of the original
    for sx in (-1, 1):
        for sy in (-1, 1):
            x, y = sx * iw / 2, sy * ih / 2
            u, v = np.cos(t) * x - np.sin(t) * y, np.sin(t) * x + np.cos(t) * y
            assert abs(u) <= w / 2 + 1e-6 and abs(v) <= h / 2 + 1e-6
    assert _inscribed(h, w, 0.0) == (h, w)


def test_a_whole_turned_item_maps_back_inside_the_original():
    # item 300 x 200 px, thumbnail 64 x 43: the whole turned cut maps to a box around the centre
    shape, h, w, angle = (300, 200), 64, 43, 12.0
    ih, iw = _inscribed(h, w, angle)
    y0, x0 = (h - ih) // 2, (w - iw) // 2
    fy, fx = shape[0] / h, shape[1] / w
    box = _unturn_box((0, 0, round(iw * fx), round(ih * fy)), (fy, fx, y0, x0, h, w, False, angle, shape))
    assert 0 <= box[0] < 100 < box[2] <= 200 and 0 <= box[1] < 150 < box[3] <= 300
    assert _unturn_box(None, (fy, fx, y0, x0, h, w, False, angle, shape)) is None


def test_pair_match_reports_no_rotation_for_identical_pictures():
    img = scene(13)
    m = pair_match([img], [img.copy()])
    assert m.score[0] > 0.99 and m.angle[0] == 0.0 and not m.mirror_a[0]
