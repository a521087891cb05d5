"""Batched deformations: sampled parameters, exact replay, every family's effect and range.

Each family is tested alone (``DeformConfig.none()`` with only that family's probability at 1)
against what it must do to the identity output (the centre crop of the source).
"""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

from napari_siamforensic.core.config import DeformConfig, ModelConfig, TrainConfig
from napari_siamforensic.core.deform import Clutter, Deformer, centre_crop, deform_images, jpeg_gray

from .conftest import scene

N = 24          # deformations per family test
O = 128         # output side
TOL = {"rtol": 0, "atol": 1e-4}   # the warp of an integer shift is exact up to float rounding


def only(**changes) -> DeformConfig:
    """No deformation except the given family (``p_none`` 0 so every image gets it)."""
    return DeformConfig.none().replace(p_none=0.0, **changes)


@pytest.fixture(scope="module")
def sources(device):
    """``(N, 1, 256, 256)`` textured images in [0, 1] on the device."""
    return torch.from_numpy(np.stack([scene(i, 256, np.float32) for i in range(N)])).unsqueeze(1).to(device)


@pytest.fixture(scope="module")
def identity(sources):
    return centre_crop(sources, O)


def run(config: DeformConfig, sources, seed: int = 0):
    d = Deformer(config)
    params = d.sample(sources.shape[0], torch.Generator().manual_seed(seed), sources.device)
    return d, params, d.apply(sources, params)


def changed(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(B,)`` mean absolute difference per image."""
    return (a - b).abs().flatten(1).mean(1)


# --------------------------------------------------------------------------- replay

def test_identity_config_gives_the_centre_crop(sources, identity):
    _, _, out = run(only(), sources)
    assert out.shape == (N, 1, O, O)
    torch.testing.assert_close(out, identity, **TOL)


def test_p_none_one_switches_everything_off(sources, identity):
    everything = DeformConfig(**{f: 1.0 for f in DeformConfig.__dataclass_fields__ if f.startswith("p_")})
    _, params, out = run(everything, sources)
    torch.testing.assert_close(out, identity, **TOL)
    assert not params["flip_lr"].any() and (params["jpeg_quality"] == 0).all() and (params["gamma"] == 1).all()


def test_replayed_deformation_reproduces_its_pixels(sources):
    d = Deformer(DeformConfig(p_none=0.0))
    params = d.sample(N, torch.Generator().manual_seed(5), sources.device)
    first = d.apply(sources, params)
    again = d.apply(sources.clone(), params)
    assert torch.equal(first, again)
    # the sampled call keeps its parameters, and replaying them gives its pixels
    out = d(sources, torch.Generator().manual_seed(6))
    assert d.last_params is not None
    assert torch.equal(out, d.apply(sources, d.last_params))


def test_replay_on_another_tensor_moves_it_the_same_way(sources):
    """Parameters are independent of the pixels: geometry replays onto a second image stack."""
    d = Deformer(only(p_reflect=1.0, p_rot90=1.0, p_similarity=1.0, p_perspective=1.0))
    params = d.sample(N, torch.Generator().manual_seed(1), sources.device)
    ramp = torch.linspace(0, 1, 256, device=sources.device).view(1, 1, 1, 256).expand(N, 1, 256, 256).contiguous()
    mixed = 0.5 * sources + 0.5 * ramp
    # the warp is linear in the pixels, so warping a blend is the blend of the warps
    torch.testing.assert_close(d.warp(mixed, params), 0.5 * d.warp(sources, params) + 0.5 * d.warp(ramp, params),
                               rtol=0, atol=1e-5)


def test_sampling_is_seeded(sources):
    d = Deformer(DeformConfig())
    p1 = d.sample(N, torch.Generator().manual_seed(3))
    p2 = d.sample(N, torch.Generator().manual_seed(3))
    p3 = d.sample(N, torch.Generator().manual_seed(4))
    assert p1.keys() == p2.keys()
    assert all(torch.equal(p1[k], p2[k]) for k in p1)
    assert any(not torch.equal(p1[k], p3[k]) for k in p1)


def test_params_live_on_the_requested_device(device):
    params = Deformer().sample(4, torch.Generator().manual_seed(0), device)
    assert all(v.device.type == torch.device(device).type for v in params.values())
    cp = Clutter().sample(4, torch.Generator().manual_seed(0), device)
    assert all(v.device.type == torch.device(device).type for v in cp.values())


def test_default_deformations_stay_in_unit_range_and_change_most_images(sources, identity):
    _, _, out = run(DeformConfig(), sources, seed=11)
    assert out.shape == (N, 1, O, O) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1 and torch.isfinite(out).all()
    assert (changed(out, identity) > 1e-3).float().mean() > 0.5


def test_deform_images_is_seeded():
    imgs = np.stack([scene(i, 256, np.float32) for i in range(4)])
    a = deform_images(imgs, seed=1)
    b = deform_images(imgs, seed=1)
    c = deform_images(imgs, seed=2)
    assert a.shape == (4, O, O) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).mean() > 1e-3


def test_deform_images_output_size_and_bad_shapes():
    imgs = np.stack([scene(i, 128, np.float32) for i in range(2)])
    assert deform_images(imgs, DeformConfig.none(), output_size=64).shape == (2, 64, 64)
    with pytest.raises(ValueError, match="square"):
        deform_images(np.zeros((2, 128, 96), np.float32))
    with pytest.raises(ValueError, match="square"):
        deform_images(np.zeros((128, 128), np.float32))


def test_deformer_checks_its_arguments(sources):
    with pytest.raises(TypeError, match="DeformConfig"):
        Deformer({"p_none": 0.1})
    with pytest.raises(ValueError, match="multiple of 8"):
        Deformer(output_size=100)
    with pytest.raises(ValueError, match="source_size"):
        Deformer(source_size=64, output_size=128)
    d = Deformer()
    params = d.sample(2, torch.Generator().manual_seed(0), sources.device)
    with pytest.raises(ValueError, match=r"\(B, 1, 256, 256\)"):
        d.apply(sources[:2, :, :200, :200], params)


# --------------------------------------------------------------------------- geometric families

class TestReflect:
    def test_range(self, sources):
        _, p, _ = run(only(p_reflect=1.0), sources)
        assert p["flip_lr"].dtype == torch.bool
        assert p["flip_lr"].any() and (~p["flip_lr"]).any()       # each p = 0.5 given a reflection
        assert p["flip_ud"].any() and (~p["flip_ud"]).any()
        _, p0, _ = run(only(p_reflect=0.0, p_rot90=1.0), sources)
        assert not p0["flip_lr"].any() and not p0["flip_ud"].any()

    def test_pixels_are_torch_flips(self, sources, identity):
        _, p, out = run(only(p_reflect=1.0), sources)
        for i in range(N):
            expected = identity[i]
            if p["flip_lr"][i]:
                expected = torch.flip(expected, dims=(-1,))
            if p["flip_ud"][i]:
                expected = torch.flip(expected, dims=(-2,))
            torch.testing.assert_close(out[i], expected, **TOL)
            if p["flip_lr"][i] or p["flip_ud"][i]:
                assert changed(out[i:i + 1], identity[i:i + 1]) > 0.01


class TestRot90:
    def test_range(self, sources):
        _, p, _ = run(only(p_rot90=1.0), sources)
        assert set(p["rot90"].tolist()) == {1, 2, 3}
        _, p0, _ = run(only(p_reflect=1.0), sources)
        assert (p0["rot90"] == 0).all()

    def test_pixels_are_quarter_turns(self, sources, identity):
        _, p, out = run(only(p_rot90=1.0), sources)
        for i in range(N):
            k = int(p["rot90"][i])
            # k quarter turns clockwise on screen (rows down), like a positive similarity angle
            torch.testing.assert_close(out[i], torch.rot90(identity[i], k, dims=(-1, -2)), **TOL)
            assert changed(out[i:i + 1], identity[i:i + 1]) > 0.01

    def test_quarter_turn_equals_a_90_degree_similarity(self, sources):
        _, p_rot, rot = run(only(p_rot90=1.0), sources)
        sim_cfg = only(p_similarity=1.0, rotation_deg=(90.0, 90.0), scale=(1.0, 1.0), translate_px=0.0)
        _, _, sim = run(sim_cfg, sources)
        ones = p_rot["rot90"] == 1
        assert ones.any()
        torch.testing.assert_close(rot[ones], sim[ones], **TOL)


class TestPerspective:
    def test_range(self, sources):
        _, p, _ = run(only(p_perspective=1.0, perspective_px=10.0), sources)
        c = p["corners"]
        assert c.shape == (N, 4, 2)
        assert torch.equal(c, c.round())                   # integer moves
        assert c.min() >= -10 and c.max() < 10             # in [-px, px)
        assert (c.abs().flatten(1).max(1).values > 0).all()
        _, p0, _ = run(only(p_perspective=1.0, perspective_px=0.0), sources)
        assert (p0["corners"] == 0).all()

    def test_corners_of_the_source_move_by_the_sampled_pixels(self, sources):
        d, p, _ = run(only(p_perspective=1.0), sources)
        h = d.homography(p)
        s, o = d.source_size, d.output_size
        # the source square's corners (half a pixel outside its pixel centres)
        corners = torch.tensor([[-0.5, -0.5], [s - 0.5, -0.5], [s - 0.5, s - 0.5], [-0.5, s - 0.5]], device=h.device)
        pts = torch.cat([corners, torch.ones(4, 1, device=h.device)], 1)          # (4, 3)
        mapped = torch.einsum("bij,kj->bki", h, pts)
        mapped = mapped[..., :2] / mapped[..., 2:]
        expected = corners - (s - 1) / 2 + (o - 1) / 2 + p["corners"]
        torch.testing.assert_close(mapped, expected, rtol=0, atol=1e-3)

    def test_changes_the_image(self, sources, identity):
        _, _, out = run(only(p_perspective=1.0), sources)
        assert (changed(out, identity) > 0.005).all()


class TestSimilarity:
    def test_range(self, sources):
        cfg = only(p_similarity=1.0, rotation_deg=(10.0, 30.0), scale=(0.8, 1.25), translate_px=5.0)
        _, p, _ = run(cfg, sources)
        assert p["angle_deg"].min() >= 10 and p["angle_deg"].max() <= 30
        assert p["scale"].min() >= 0.8 - 1e-6 and p["scale"].max() <= 1.25 + 1e-6
        assert p["translate"].abs().max() <= 5
        assert p["angle_deg"].std() > 1 and p["scale"].std() > 0.01     # actually drawn, not fixed

    def test_scale_is_log_uniform_over_wide_ranges(self, sources):
        d = Deformer(only(p_similarity=1.0, scale=(0.4, 2.5)))
        s = d.sample(2000, torch.Generator().manual_seed(0))["scale"]
        assert s.min() >= 0.4 - 1e-6 and s.max() <= 2.5 + 1e-6
        # log-uniform: as many draws below 1 as above (0.4 * 2.5 = 1)
        assert 0.45 < (s < 1).float().mean() < 0.55

    def test_changes_the_image(self, sources, identity):
        _, _, out = run(only(p_similarity=1.0), sources)
        assert (changed(out, identity) > 0.005).all()

    def test_zoom_is_scale_over_crop_fraction(self, sources):
        d, p, _ = run(only(p_similarity=1.0, p_crop=1.0), sources)
        torch.testing.assert_close(d.zoom(p), p["scale"] / p["crop_fraction"])

    def test_zoom_takes_the_axis_a_stretch_shrinks(self, sources):
        d, p, _ = run(only(p_similarity=1.0, p_stretch=1.0), sources)
        root = p["stretch"].sqrt()
        torch.testing.assert_close(d.zoom(p), p["scale"] * torch.minimum(root, 1 / root))


class TestStretch:
    def test_range_and_off_by_default_elsewhere(self, sources):
        _, p, _ = run(only(p_stretch=1.0, stretch=(0.7, 1.4)), sources)
        assert p["stretch"].min() >= 0.7 - 1e-6 and p["stretch"].max() <= 1.4 + 1e-6
        assert (p["stretch"] < 1).any() and (p["stretch"] > 1).any()
        _, p0, _ = run(only(p_reflect=1.0), sources)
        assert (p0["stretch"] == 1).all()

    def test_widens_one_axis_and_narrows_the_other(self, device):
        # a centred disc becomes an ellipse: wider than tall for a ratio above 1
        yy, xx = torch.meshgrid(torch.arange(256.0), torch.arange(256.0), indexing="ij")
        disc = (((yy - 127.5) ** 2 + (xx - 127.5) ** 2) < 30 ** 2).float().expand(2, 1, 256, 256).to(device)
        d = Deformer(only(p_stretch=1.0))
        p = d.sample(2, torch.Generator().manual_seed(0), device)
        p["stretch"] = torch.tensor([2.0, 0.5], device=device)
        out = d.apply(disc, p)[:, 0] > 0.5
        width, height = out.any(1).sum(-1), out.any(2).sum(-1)      # columns and rows touched
        assert width[0] > 1.3 * height[0] and height[1] > 1.3 * width[1]
        assert abs(int(width[0]) - 2 * int(height[0])) <= 4               # ratio 2


class TestCrop:
    def test_range(self, sources):
        _, p, _ = run(only(p_crop=1.0, crop_fraction=(0.6, 0.8)), sources)
        f = p["crop_fraction"]
        assert f.min() >= 0.6 and f.max() <= 0.8
        assert (p["crop_offset"].abs() <= ((1 - f) * O / 2).view(-1, 1) + 1e-4).all()
        _, p0, _ = run(only(p_reflect=1.0), sources)
        assert (p0["crop_fraction"] == 1).all()

    def test_centred_crop_zooms_into_the_centre(self, sources, identity):
        d, p, _ = run(only(p_crop=1.0, crop_fraction=(0.5, 0.5)), sources)
        p = dict(p, crop_offset=torch.zeros_like(p["crop_offset"]))
        out = d.apply(sources, p)
        # output pixel j <- identity pixel 31.75 + j / 2: the middle 64 px magnified twice
        mid = identity[..., 32:96, 32:96]
        up = torch.nn.functional.interpolate(mid, scale_factor=2, mode="bilinear", align_corners=False)
        assert changed(out, identity).min() > 0.01
        assert (changed(out[..., 8:-8, 8:-8], up[..., 8:-8, 8:-8]) < 0.01).all()


# --------------------------------------------------------------------------- photometric families

class TestJpeg:
    def test_range_and_8_bit_output(self, sources, identity):
        _, p, out = run(only(p_jpeg=1.0, jpeg_quality=(10.0, 50.0)), sources)
        q = p["jpeg_quality"]
        assert torch.equal(q, q.floor()) and q.min() >= 10 and q.max() < 50
        levels = out * 255
        torch.testing.assert_close(levels, levels.round(), rtol=0, atol=1e-3)
        assert (changed(out, identity) > 1e-3).all()

    @pytest.mark.parametrize("quality", [10, 50, 95])
    def test_matches_a_real_jpeg_codec(self, quality, device):
        from PIL import Image

        img = scene(7, 128, np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=quality)
        pil = np.asarray(Image.open(buf), np.float32) / 255
        x = torch.from_numpy(img.astype(np.float32) / 255)[None, None].to(device)
        ours = jpeg_gray(x, torch.tensor([float(quality)], device=device))[0, 0].cpu().numpy()
        assert np.abs(ours - pil).mean() < 0.5 / 255

    def test_approaches_the_input_at_high_quality(self, device):
        x = torch.from_numpy(np.stack([scene(i, 128, np.float32) for i in range(4)])).unsqueeze(1).to(device)
        err = {q: float((jpeg_gray(x, torch.full((4,), float(q), device=device)) - x).abs().mean())
               for q in (10, 50, 95)}
        assert err[95] < err[50] < err[10]
        assert err[95] < 1.0 / 255


class TestGamma:
    def test_range_and_pixels(self, sources):
        d, p, out = run(only(p_gamma=1.0, gamma=(0.5, 2.0)), sources)
        g = p["gamma"]
        assert g.min() >= 0.5 - 1e-6 and g.max() <= 2.0 + 1e-6 and g.std() > 0.05
        base = d.warp(sources, p).clamp(0, 1)
        torch.testing.assert_close(out, base ** g.view(-1, 1, 1, 1), rtol=1e-5, atol=1e-6)
        far = (g.log().abs() > 0.2)
        assert (changed(out[far], base[far]) > 0.01).all()


class TestLevels:
    def test_range_and_pixels(self, sources):
        d, p, out = run(only(p_levels=1.0), sources)
        b, w = p["black"], p["white"]
        assert b.min() >= 0 and b.max() <= 0.25 and w.min() >= 0.7 and w.max() <= 1.0
        base = d.warp(sources, p)
        expected = ((base - b.view(-1, 1, 1, 1)) / (w - b).view(-1, 1, 1, 1)).clamp(0, 1)
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
        assert (changed(out, base) > 1e-3).all()


class TestLocalEdit:
    def test_range(self, sources):
        _, p, _ = run(only(p_local_edit=1.0, edit_radius=(0.1, 0.15), edit_multiply=(1.5, 1.8)), sources)
        assert set(p["edit_mode"].tolist()) == {1, 2}          # erase and multiply both drawn
        r = p["edit_radius"]
        assert r.min() >= 0.1 * O and r.max() <= 0.15 * O
        assert p["edit_factor"].min() >= 1.5 and p["edit_factor"].max() <= 1.8

    def test_pixels_inside_changed_outside_kept(self, sources):
        d, p, out = run(only(p_local_edit=1.0), sources)
        base = d.warp(sources, p)
        yy, xx = torch.meshgrid(torch.arange(O, device=out.device), torch.arange(O, device=out.device), indexing="ij")
        ramp = d.config.edit_ramp_px
        for i in range(N):
            cy, cx = p["edit_center"][i].tolist()
            dist = ((yy - cy) ** 2 + (xx - cx) ** 2).sqrt()
            inside, outside = dist <= p["edit_radius"][i], dist >= p["edit_radius"][i] + ramp
            assert torch.equal(out[i, 0][outside], base[i, 0][outside])
            if not inside.any():
                continue
            if int(p["edit_mode"][i]) == 1:
                assert (out[i, 0][inside] == 0).all()
            else:
                factor = float(p["edit_factor"][i])
                torch.testing.assert_close(out[i, 0][inside], (base[i, 0][inside] * factor).clamp(0, 1))


class TestInvert:
    def test_pixels(self, sources):
        d, p, out = run(only(p_invert=1.0), sources)
        assert p["invert"].all()
        torch.testing.assert_close(out, 1 - d.warp(sources, p), rtol=0, atol=1e-6)
        _, p0, _ = run(only(p_gamma=1.0), sources)
        assert not p0["invert"].any()


class TestNoise:
    def test_range_and_pixels(self, sources):
        d, p, out = run(only(p_noise=1.0, noise_sigma=(0.01, 0.03)), sources)
        s = p["noise_sigma"]
        assert s.min() >= 0.01 and s.max() <= 0.03
        base = d.warp(sources, p)
        expected = (base + s.view(-1, 1, 1, 1) * p["noise"]).clamp(0, 1)
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
        resid = (out - base)[..., 16:-16, 16:-16]
        # where the clamp does not bite, the residual's spread is the sampled sigma
        torch.testing.assert_close(resid.flatten(1).std(1), s, rtol=0.35, atol=0)


class TestBlur:
    def test_range_and_effect(self, sources):
        d, p, out = run(only(p_blur=1.0, blur_sigma=(0.8, 1.5)), sources)
        s = p["blur_sigma"]
        assert s.min() >= 0.8 and s.max() <= 1.5
        base = d.warp(sources, p)
        # smoothing lowers the pixel-to-pixel differences and keeps the mean
        def tv(t):
            return t.diff(dim=-1).abs().flatten(1).mean(1)

        assert (tv(out) < tv(base)).all()
        torch.testing.assert_close(out.flatten(1).mean(1), base.flatten(1).mean(1), rtol=0, atol=0.01)

    def test_constant_image_stays_constant(self, device):
        d = Deformer(only(p_blur=1.0))
        flat = torch.full((4, 1, 256, 256), 0.3, device=device)
        out = d.apply(flat, d.sample(4, torch.Generator().manual_seed(0), device))
        torch.testing.assert_close(out, torch.full_like(out, 0.3))


# --------------------------------------------------------------------------- clutter

class TestClutter:
    @pytest.fixture
    def grey(self, device):
        return torch.full((N, 1, O, O), 0.5, device=device)

    def draw(self, config, x, seed=0):
        c = Clutter(config)
        p = c.sample(x.shape[0], torch.Generator().manual_seed(seed), x.device)
        return c, p, c.apply(x, p)

    def test_no_clutter_leaves_images_alone(self, grey):
        _, _, out = self.draw(DeformConfig.none(), grey)
        assert torch.equal(out, grey)

    def test_replay(self, identity):
        c = Clutter(DeformConfig(p_box=0.4, p_text=0.4, p_scalebar=0.5))
        out = c(identity, torch.Generator().manual_seed(2))
        assert torch.equal(out, c.apply(identity, c.last_params))
        assert torch.equal(out, c.apply(identity.clone(), c.last_params))
        assert not torch.equal(out, identity)

    def test_box_outline(self, grey):
        _, p, out = self.draw(only(p_box=1.0), grey)
        assert p["box"].all() and not p["text"].any()
        for i in range(N):
            diff = (out[i, 0] != 0.5)
            assert diff.any()
            ys, xs = torch.nonzero(diff, as_tuple=True)
            y0, x0 = p["box_corner"][i].tolist()
            h, w = p["box_size"][i].tolist()
            assert O / 3 - 1e-3 <= h <= O / 2 + 1e-3 and O / 3 - 1e-3 <= w <= O / 2 + 1e-3
            assert ys.min() >= y0 - 1 and ys.max() <= y0 + h and xs.min() >= x0 - 1 and xs.max() <= x0 + w
            assert not diff[int(y0 + h / 2), int(x0 + w / 2)]          # an outline, not a filled box
            torch.testing.assert_close(out[i, 0][diff], torch.full_like(out[i, 0][diff], float(p["box_value"][i])))

    def test_text(self, device):
        black = torch.zeros(N, 1, O, O, device=device)
        _, p, out = self.draw(only(p_text=1.0), black)
        assert p["text"].all() and not p["box"].any()
        v = p["text_value"]
        assert v.min() >= 0.75 and v.max() <= 1.0
        drawn = out.flatten(1).amax(1)
        assert (drawn > 0).float().mean() >= 0.9        # text lands in (almost) every image
        assert (drawn <= v + 1e-6).all()

    def test_erase_fills_rectangles(self, grey):
        c = DeformConfig.none().replace(p_erase=1.0, erase_area=(0.05, 0.05))
        _, p, out = self.draw(c, grey)
        assert ((p["erase_count"] >= 1) & (p["erase_count"] <= 3)).all()
        for i in range(N):
            k = int(p["erase_count"][i])
            fills = {0: 0.0, 1: 1.0, 2: 0.5}                             # median of a grey image
            values = {fills[int(f)] for f in p["erase_fill"][i, :k]}
            changed_px = out[i, 0] != 0.5
            assert set(out[i, 0][changed_px].unique().tolist()) <= values
            h, w = p["erase_size"][i, 0].tolist()
            assert abs(h * w - 0.05 * O * O) <= 0.25 * 0.05 * O * O     # the asked area, rounded
            y0, x0 = p["erase_corner"][i, 0].tolist()
            assert 0 <= y0 and y0 + h <= O and 0 <= x0 and x0 + w <= O
            if fills[int(p["erase_fill"][i, 0])] != 0.5 and k == 1:
                assert int(changed_px.sum()) == int(h * w)               # exactly the rectangle

    def test_erase_median_fill_on_a_textured_image(self, identity):
        c = Clutter(DeformConfig.none().replace(p_erase=1.0))
        p = c.sample(identity.shape[0], torch.Generator().manual_seed(1), identity.device)
        p["erase_fill"][:] = 2
        out = c.apply(identity, p)
        for i in range(identity.shape[0]):
            y0, x0 = (int(t) for t in p["erase_corner"][i, 0])
            torch.testing.assert_close(out[i, 0, y0, x0], identity[i].flatten().median())

    def test_scalebar(self, grey):
        _, p, out = self.draw(only(p_scalebar=1.0), grey)
        assert p["scalebar"].all()
        for i in range(N):
            diff = out[i, 0] != 0.5
            length, thick = int(p["bar_length"][i]), int(p["bar_thickness"][i])
            assert 15 <= length <= 40 and 2 <= thick <= 4
            assert int(diff.sum()) == length * thick
            ys, xs = torch.nonzero(diff, as_tuple=True)
            for lo, hi in ((int(ys.min()), int(ys.max())), (int(xs.min()), int(xs.max()))):
                assert lo <= 6 or hi >= O - 7          # near an edge
            assert set(out[i, 0][diff].unique().tolist()) <= {0.0, 1.0}


# --------------------------------------------------------------------------- configs

@pytest.mark.parametrize("changes, field", [
    ({"p_jpeg": 1.5}, "p_jpeg"),
    ({"p_none": -0.1}, "p_none"),
    ({"scale": (0.05, 1.0)}, "scale"),
    ({"scale": (2.0, 1.0)}, "scale"),
    ({"rotation_deg": (-200.0, 0.0)}, "rotation_deg"),
    ({"jpeg_quality": (0.0, 50.0)}, "jpeg_quality"),
    ({"gamma": (0.5, 20.0)}, "gamma"),
    ({"crop_fraction": (0.1, 1.0)}, "crop_fraction"),
    ({"perspective_px": 100.0}, "perspective_px"),
    ({"noise_sigma": (0.0, 2.0)}, "noise_sigma"),
    ({"edit_radius": (0.1, 0.9)}, "edit_radius"),
])
def test_deform_config_refuses_out_of_bounds_ranges(changes, field):
    with pytest.raises(ValueError, match=f"{field}.*out of bounds"):
        DeformConfig(**changes)


@pytest.mark.parametrize("changes", [{"p_jpeg": "half"}, {"scale": 2.0}, {"gamma": ("a", "b")}])
def test_deform_config_refuses_wrong_kinds(changes):
    with pytest.raises(TypeError, match=next(iter(changes))):
        DeformConfig(**changes)


GEOMETRIC = ("p_reflect", "p_rot90", "p_perspective", "p_similarity", "p_crop", "p_stretch")
PHOTOMETRIC = ("p_jpeg", "p_gamma", "p_levels", "p_local_edit", "p_invert", "p_noise", "p_blur")
CLUTTER = ("p_text", "p_box", "p_scalebar", "p_erase")


def test_paper_preset_is_the_authors_version_2():
    c = DeformConfig.paper()
    for name in ("p_rot90", "p_crop", "p_levels", "p_invert", "p_noise", "p_blur", "p_scalebar",
                 "p_stretch", "p_erase"):
        assert getattr(c, name) == 0.0, name
    assert c.p_none == 0.1
    for name in ("p_reflect", "p_perspective", "p_similarity", "p_jpeg", "p_gamma", "p_local_edit"):
        assert getattr(c, name) == 0.5, name
    assert (c.p_text, c.p_box) == (0.25, 0.25)
    assert c.rotation_deg == (-45.0, 45.0) and c.scale == (0.5, 1.5) and c.translate_px == 20
    assert c.perspective_px == 20 and c.jpeg_quality == (10.0, 50.0) and c.gamma == (0.5, 2.0)
    assert c.edit_radius == (0.05, 0.2) and c.edit_multiply == (1.5, 2.0)


def test_geometric_only_preset_samples_no_photometric_change(sources, identity):
    c = DeformConfig.geometric_only()
    assert all(getattr(c, n) == 0 for n in PHOTOMETRIC)
    assert all(getattr(c, n) > 0 for n in GEOMETRIC)
    d = Deformer(c)
    p = d.sample(256, torch.Generator().manual_seed(0))
    assert (p["gamma"] == 1).all() and (p["jpeg_quality"] == 0).all() and (p["edit_mode"] == 0).all()
    assert not p["invert"].any() and (p["blur_sigma"] == 0).all() and (p["noise_sigma"] == 0).all()
    assert (p["black"] == 0).all() and (p["white"] == 1).all()
    assert p["flip_lr"].any() and (p["rot90"] > 0).any() and (p["angle_deg"] != 0).any()
    # photometric stage is the identity: output = warp
    _, p, out = run(c, sources)
    torch.testing.assert_close(out, d.warp(sources, p).clamp(0, 1), rtol=0, atol=1e-6)


def test_none_preset_switches_every_family_off():
    c = DeformConfig.none()
    probs = {f: getattr(c, f) for f in DeformConfig.__dataclass_fields__ if f.startswith("p_") and f != "p_none"}
    assert set(probs) == set(GEOMETRIC + PHOTOMETRIC + CLUTTER)    # a new family belongs in a list above
    assert all(v == 0 for v in probs.values())


@pytest.mark.parametrize("config", [
    ModelConfig(), ModelConfig(input_size=64, channels=(8, 16), hidden=32, embedding_dim=8, alpha_init=0.5),
    DeformConfig(), DeformConfig.paper(), DeformConfig.geometric_only(),
    DeformConfig(scale=(0.7, 1.3), jpeg_quality=(20.0, 90.0), p_text=0.0),
    TrainConfig(), TrainConfig.paper(),
    TrainConfig(steps=7, lr=1e-3, checkpoint_dir="/tmp/x", deform=DeformConfig.none(),
                model=ModelConfig(input_size=64, channels=(8, 16))),
], ids=lambda c: type(c).__name__)
def test_configs_round_trip_through_json(config):
    text = config.to_json()
    json.loads(text)                       # plain JSON
    again = type(config).from_json(text)
    assert again == config
    assert again.to_json() == text
    assert type(config).from_dict(config.to_dict()) == config


def test_config_json_errors():
    with pytest.raises(ValueError, match="unknown DeformConfig field"):
        DeformConfig.from_dict({"p_jpg": 0.5})
    with pytest.raises(ValueError, match="not valid JSON"):
        TrainConfig.from_json("{steps: 3")
    with pytest.raises(TypeError, match="dict"):
        ModelConfig.from_dict([1, 2])
    with pytest.raises(ValueError, match="out of bounds"):
        DeformConfig.from_json(json.dumps({"p_gamma": 2.0}))
