"""Batched, on-device synthetic manipulations: sample parameters, then apply them.

As in kornia, every operation first *samples* a dict of parameter tensors for the whole batch
and then *applies* it, so the same move can be replayed on another tensor (same params ->
same pixels). All geometric moves (reflection, quarter turns, perspective, similarity, crop,
stretch) are fused into one homography per image and applied with a single
``kornia.geometry.transform.warp_perspective`` straight into the output crop.

Shapes: sources ``(B, 1, S, S)`` (S = 256 by default), outputs ``(B, 1, O, O)`` (O = 128),
intensities in [0, 1].
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from kornia.geometry.transform import get_perspective_transform, warp_perspective

from .config import DeformConfig
from .devices import make_generator

Params = dict[str, torch.Tensor]


# --------------------------------------------------------------------------- sampling helpers

def _uniform(g: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=g)


def _log_uniform(g: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    return torch.exp(_uniform(g, n, math.log(low), math.log(high)))


def _coin(g: torch.Generator, n: int, p: float) -> torch.Tensor:
    return torch.rand(n, generator=g) < p


def _to(params: Params, device) -> Params:
    return {k: v.to(device) for k, v in params.items()}


# --------------------------------------------------------------------------- photometric kernels

def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with a per-image ``sigma`` ``(B,)``; sigma 0 leaves the image as is.

    ``x``: ``(B, 1, H, W)``. Reflect padding.
    """
    b = x.shape[0]
    smax = float(sigma.max()) if b else 0.0
    if smax <= 0:
        return x
    radius = max(1, int(math.ceil(3 * smax)))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    s = sigma.to(x.dtype).clamp_min(1e-3).view(b, 1)
    k = torch.exp(-0.5 * (t.view(1, -1) / s) ** 2)
    k = k / k.sum(dim=1, keepdim=True)
    ident = torch.zeros_like(k)
    ident[:, radius] = 1.0
    k = torch.where((sigma > 0).view(b, 1), k, ident)
    y = F.pad(x.transpose(0, 1), (radius, radius, 0, 0), mode="reflect")      # (1, B, H, W+2r)
    y = F.conv2d(y, k.view(b, 1, 1, -1), groups=b)
    y = F.pad(y, (0, 0, radius, radius), mode="reflect")
    y = F.conv2d(y, k.view(b, 1, -1, 1), groups=b)
    return y.transpose(0, 1)


_JPEG_LUMA = torch.tensor([
    [16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55],
    [14, 13, 16, 24, 40, 57, 69, 56], [14, 17, 22, 29, 51, 87, 80, 62],
    [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99]], dtype=torch.float32)


@lru_cache(maxsize=8)
def _dct_matrix(device_str: str) -> torch.Tensor:
    n = 8
    k = torch.arange(n, dtype=torch.float32).view(-1, 1)
    i = torch.arange(n, dtype=torch.float32).view(1, -1)
    d = torch.cos((2 * i + 1) * k * math.pi / (2 * n)) * math.sqrt(2 / n)
    d[0] /= math.sqrt(2)
    return d.to(device_str)


def jpeg_quality_table(quality: torch.Tensor) -> torch.Tensor:
    """IJG luminance quantisation tables for qualities ``(B,)`` in [1, 100] -> ``(B, 8, 8)``."""
    q = quality.float().clamp(1, 100)
    scale = torch.where(q < 50, 5000.0 / q, 200.0 - 2.0 * q)
    table = torch.floor((_JPEG_LUMA.to(q.device).view(1, 8, 8) * scale.view(-1, 1, 1) + 50) / 100)
    return table.clamp(1, 255)


def jpeg_gray(x: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """Grayscale JPEG-like compression (8x8 DCT, IJG luminance table, rounding) on the device.

    ``x``: ``(B, 1, H, W)`` in [0, 1] with H, W multiples of 8; ``quality``: ``(B,)`` in [1, 100].
    Pixels are rounded to 8 bits as a real JPEG decoder does.
    """
    b, _, h, w = x.shape
    d = _dct_matrix(str(x.device)).to(x.dtype)
    blocks = (x[:, 0] * 255.0 - 128.0).reshape(b, h // 8, 8, w // 8, 8).permute(0, 1, 3, 2, 4)
    coef = d @ blocks @ d.T
    table = jpeg_quality_table(quality).to(x.dtype).view(b, 1, 1, 8, 8)
    coef = torch.round(coef / table) * table
    out = (d.T @ coef @ d).permute(0, 1, 3, 2, 4).reshape(b, 1, h, w)
    return (torch.round(out + 128.0).clamp(0, 255) / 255.0)


# --------------------------------------------------------------------------- text bank

_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 "


@lru_cache(maxsize=4)
def text_bank(n: int = 192, height: int = 20, width: int = 128, seed: int = 1234) -> torch.Tensor:
    """``(n, height, width)`` float masks of random text (5-14 characters, ~16 px), rendered once
    with Pillow's bundled font."""
    from PIL import Image, ImageDraw, ImageFont

    try:
        font = ImageFont.load_default(size=16)
    except TypeError:  # Pillow < 10.1: bitmap font
        font = ImageFont.load_default()
    rng = np.random.default_rng(seed)
    bank = np.zeros((n, height, width), np.float32)
    for i in range(n):
        length = int(rng.integers(5, 15))
        text = "".join(rng.choice(list(_LETTERS), size=length))
        img = Image.new("L", (width, height), 0)
        ImageDraw.Draw(img).text((1, 0), text, fill=255, font=font)
        bank[i] = np.asarray(img, np.float32) / 255.0
    return torch.from_numpy(bank)


# --------------------------------------------------------------------------- the deformer

class Deformer:
    """Makes the "same" partner: geometric warp of a source patch into the output crop, then
    photometric changes.

    Parameters
    ----------
    config : DeformConfig
    source_size : int
        Side of the square source patches, ``(B, 1, source_size, source_size)``.
    output_size : int
        Side of the output crop (the network's input size).

    Examples
    --------
    >>> import torch
    >>> d = Deformer(DeformConfig())
    >>> g = torch.Generator().manual_seed(0)
    >>> src = torch.rand(4, 1, 256, 256)
    >>> params = d.sample(4, g)
    >>> out = d.apply(src, params)
    >>> out.shape
    torch.Size([4, 1, 128, 128])
    >>> bool(torch.equal(out, d.apply(src, params)))   # replayed exactly
    True
    """

    def __init__(self, config: DeformConfig | None = None, source_size: int = 256, output_size: int = 128):
        self.config = config or DeformConfig()
        if not isinstance(self.config, DeformConfig):
            raise TypeError(f"`config` must be a DeformConfig, got {type(config).__name__}")
        if output_size % 8 or output_size > source_size:
            raise ValueError(f"`output_size` must be a multiple of 8 and <= source_size ({source_size}), "
                             f"got {output_size}")
        self.source_size = int(source_size)
        self.output_size = int(output_size)
        self.last_params: Params | None = None

    # -- sampling -------------------------------------------------------------------------
    def sample(self, batch_size: int, generator: torch.Generator, device="cpu") -> Params:
        """Draw the parameters of ``batch_size`` deformations from ``generator`` (a CPU
        ``torch.Generator``); the tensors are moved to ``device``."""
        c, g, n = self.config, generator, int(batch_size)
        o = self.output_size
        active = ~_coin(g, n, c.p_none)
        p: Params = {}
        reflect = active & _coin(g, n, c.p_reflect)
        p["flip_lr"] = reflect & _coin(g, n, 0.5)
        p["flip_ud"] = reflect & _coin(g, n, 0.5)
        p["rot90"] = torch.where(active & _coin(g, n, c.p_rot90), torch.randint(1, 4, (n,), generator=g), 0)
        px = int(round(c.perspective_px))
        corners = torch.randint(-px, px, (n, 4, 2), generator=g).float() if px > 0 else torch.zeros(n, 4, 2)
        p["corners"] = corners * (active & _coin(g, n, c.p_perspective)).view(n, 1, 1)
        sim = active & _coin(g, n, c.p_similarity)
        p["angle_deg"] = torch.where(sim, _uniform(g, n, *c.rotation_deg), 0.0)
        p["scale"] = torch.where(sim, _log_uniform(g, n, *c.scale), 1.0)
        p["translate"] = torch.where(sim.view(n, 1), (torch.rand(n, 2, generator=g) * 2 - 1) * c.translate_px, 0.0)
        crop = active & _coin(g, n, c.p_crop)
        frac = torch.where(crop, _uniform(g, n, *c.crop_fraction), 1.0)
        p["crop_fraction"] = frac
        p["crop_offset"] = (torch.rand(n, 2, generator=g) * 2 - 1) * ((1 - frac) * o / 2).view(n, 1)
        # photometric
        p["gamma"] = torch.where(active & _coin(g, n, c.p_gamma), _log_uniform(g, n, *c.gamma), 1.0)
        lev = active & _coin(g, n, c.p_levels)
        p["black"] = torch.where(lev, _uniform(g, n, *c.levels_black), 0.0)
        p["white"] = torch.where(lev, _uniform(g, n, *c.levels_white), 1.0)
        edit = active & _coin(g, n, c.p_local_edit)
        p["edit_mode"] = torch.where(edit, 1 + _coin(g, n, 0.5).long(), 0)      # 0 none, 1 erase, 2 multiply
        p["edit_center"] = torch.rand(n, 2, generator=g) * o
        p["edit_radius"] = _uniform(g, n, *c.edit_radius) * o
        p["edit_factor"] = _uniform(g, n, *c.edit_multiply)
        p["invert"] = active & _coin(g, n, c.p_invert)
        p["blur_sigma"] = torch.where(active & _coin(g, n, c.p_blur), _uniform(g, n, *c.blur_sigma), 0.0)
        p["noise_sigma"] = torch.where(active & _coin(g, n, c.p_noise), _uniform(g, n, *c.noise_sigma), 0.0)
        p["noise"] = torch.randn(n, 1, o, o, generator=g) if c.p_noise > 0 else torch.zeros(n, 1, 1, 1)
        p["jpeg_quality"] = torch.where(active & _coin(g, n, c.p_jpeg), _uniform(g, n, *c.jpeg_quality).floor(), 0.0)
        # drawn last, so the draws above are those of a configuration without it
        p["stretch"] = torch.where(active & _coin(g, n, c.p_stretch), _log_uniform(g, n, *c.stretch), 1.0)
        return _to(p, device)

    # -- geometry -------------------------------------------------------------------------
    def homography(self, params: Params) -> torch.Tensor:
        """``(B, 3, 3)`` matrices mapping source pixel coordinates to output pixel coordinates."""
        flip_lr = params["flip_lr"]
        dev = flip_lr.device
        n = flip_lr.shape[0]
        s, o = self.source_size, self.output_size
        eye = torch.eye(3, device=dev).expand(n, 3, 3).clone()

        def translate(tx, ty):
            m = eye.clone()
            m[:, 0, 2], m[:, 1, 2] = tx, ty
            return m

        cs, co = (s - 1) / 2.0, (o - 1) / 2.0
        to_centre = translate(torch.full((n,), -cs, device=dev), torch.full((n,), -cs, device=dev))
        refl = eye.clone()
        refl[:, 0, 0] = torch.where(flip_lr, -1.0, 1.0)
        refl[:, 1, 1] = torch.where(params["flip_ud"], -1.0, 1.0)
        k = params["rot90"].float() * (math.pi / 2)
        rot = eye.clone()
        rot[:, 0, 0], rot[:, 0, 1] = torch.cos(k).round(), -torch.sin(k).round()
        rot[:, 1, 0], rot[:, 1, 1] = torch.sin(k).round(), torch.cos(k).round()
        h = s / 2.0
        src_pts = torch.tensor([[-h, -h], [h, -h], [h, h], [-h, h]], device=dev).expand(n, 4, 2)
        persp = get_perspective_transform(src_pts, src_pts + params["corners"].to(dev))
        a = params["angle_deg"] * (math.pi / 180)
        sc = params["scale"]
        sim = eye.clone()
        sim[:, 0, 0], sim[:, 0, 1] = sc * torch.cos(a), -sc * torch.sin(a)
        sim[:, 1, 0], sim[:, 1, 1] = sc * torch.sin(a), sc * torch.cos(a)
        sim[:, 0, 2], sim[:, 1, 2] = params["translate"][:, 0], params["translate"][:, 1]
        frac = params["crop_fraction"]
        crop = eye.clone()
        crop[:, 0, 0], crop[:, 1, 1] = 1 / frac, 1 / frac
        crop[:, 0, 2] = -params["crop_offset"][:, 0] / frac
        crop[:, 1, 2] = -params["crop_offset"][:, 1] / frac
        root = params["stretch"].sqrt()
        stretch = eye.clone()
        stretch[:, 0, 0], stretch[:, 1, 1] = root, 1 / root
        from_centre = translate(torch.full((n,), co, device=dev), torch.full((n,), co, device=dev))
        return from_centre @ stretch @ crop @ sim @ persp @ rot @ refl @ to_centre

    def zoom(self, params: Params) -> torch.Tensor:
        """``(B,)`` magnification source -> output along the axis that magnifies least (below 1
        shrinks the content)."""
        root = params["stretch"].sqrt()
        return params["scale"] / params["crop_fraction"] * torch.minimum(root, 1 / root)

    def warp(self, sources: torch.Tensor, params: Params) -> torch.Tensor:
        """Geometric part only: ``(B, 1, S, S)`` -> ``(B, 1, O, O)``. Content that shrinks is
        low-pass filtered first, as any real resize does, so it does not alias."""
        self._check_sources(sources)
        m = self.homography(params).to(sources.dtype)
        zoom = self.zoom(params).to(sources.device)
        sigma = torch.where(zoom < 1, 0.5 * (1 / zoom.clamp_min(1e-3) - 1), 0.0)
        shrink = torch.nonzero(sigma > 0).flatten()
        src = sources
        if shrink.numel():   # blur only the images that shrink (about a quarter): 3x faster, same pixels
            src = sources.clone()
            src[shrink] = gaussian_blur(sources[shrink], sigma[shrink])
        return warp_perspective(src, m, (self.output_size, self.output_size), mode="bilinear",
                                padding_mode="reflection", align_corners=True)

    # -- photometric ----------------------------------------------------------------------
    def photometric(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        """Intensity changes on ``(B, 1, O, O)`` in [0, 1]: gamma, levels, local edit, inversion,
        blur, noise, then JPEG (the save comes last)."""
        n = x.shape[0]
        v = lambda t: t.to(x.dtype).view(n, 1, 1, 1)  # noqa: E731
        x = x.clamp(0, 1) ** v(params["gamma"])
        x = ((x - v(params["black"])) / (v(params["white"]) - v(params["black"])).clamp_min(1e-3)).clamp(0, 1)
        mode = params["edit_mode"]
        if bool((mode > 0).any()):
            o = x.shape[-1]
            yy = torch.arange(o, device=x.device, dtype=x.dtype).view(1, 1, o, 1)
            xx = torch.arange(o, device=x.device, dtype=x.dtype).view(1, 1, 1, o)
            cy, cx = v(params["edit_center"][:, 0]), v(params["edit_center"][:, 1])
            dist = torch.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
            ramp = max(float(self.config.edit_ramp_px), 1e-3)
            mask = ((v(params["edit_radius"]) + ramp - dist) / ramp).clamp(0, 1)   # 1 inside, ramp outside
            erased = x * (1 - mask)
            multiplied = (x * (1 + mask * (v(params["edit_factor"]) - 1))).clamp(0, 1)
            x = torch.where(v(mode) == 1, erased, torch.where(v(mode) == 2, multiplied, x))
        x = torch.where(v(params["invert"]) > 0, 1 - x, x)
        x = gaussian_blur(x, params["blur_sigma"].to(x.device))
        if bool((params["noise_sigma"] > 0).any()):
            x = (x + v(params["noise_sigma"]) * params["noise"].to(x.dtype)).clamp(0, 1)
        q = params["jpeg_quality"]
        idx = torch.nonzero(q > 0).flatten()
        if idx.numel():
            x = x.clone()
            x[idx] = jpeg_gray(x[idx], q[idx])
        return x

    def apply(self, sources: torch.Tensor, params: Params) -> torch.Tensor:
        """Replay ``params`` on ``sources`` ``(B, 1, S, S)`` -> ``(B, 1, O, O)`` in [0, 1]."""
        with torch.no_grad():
            return self.photometric(self.warp(sources, params), params)

    def __call__(self, sources: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Sample fresh parameters for ``sources`` and apply them; they stay in ``last_params``."""
        self.last_params = self.sample(sources.shape[0], generator, sources.device)
        return self.apply(sources, self.last_params)

    def _check_sources(self, sources: torch.Tensor) -> None:
        if sources.ndim != 4 or sources.shape[1] != 1 or sources.shape[-1] != self.source_size \
                or sources.shape[-2] != self.source_size:
            raise ValueError(f"sources must have shape (B, 1, {self.source_size}, {self.source_size}), "
                             f"got {tuple(sources.shape)}")


# --------------------------------------------------------------------------- clutter

class Clutter:
    """Random text, rectangle outlines, scale bars and erased rectangles drawn onto
    ``(B, 1, O, O)`` images.

    Per image: with ``p_box`` a rectangle outline (1/3-1/2 of the side, 1-2 px, random gray),
    else with ``p_text`` random text (intensity 0.75-1.0); independently with ``p_scalebar`` a
    scale bar (15-40 px long, 2-4 px thick, black or white) near a corner; independently with
    ``p_erase`` 1-3 filled rectangles, each of ``erase_area`` of the image and aspect 1:2-2:1,
    filled black, white or with the image's median (content blanked out of a figure).
    """

    MAX_ERASE = 3

    def __init__(self, config: DeformConfig | None = None, output_size: int = 128):
        self.config = config or DeformConfig()
        self.output_size = int(output_size)
        self.last_params: Params | None = None

    def sample(self, batch_size: int, generator: torch.Generator, device="cpu") -> Params:
        c, g, n, o = self.config, generator, int(batch_size), self.output_size
        r = torch.rand(n, generator=g)
        p: Params = {"box": r < c.p_box, "text": (r >= c.p_box) & (r < c.p_box + c.p_text)}
        side = _uniform(g, 2 * n, o / 3, o / 2).view(n, 2)
        p["box_size"] = side
        p["box_corner"] = torch.rand(n, 2, generator=g) * (o - side)
        p["box_thickness"] = torch.randint(1, 3, (n,), generator=g).float()
        p["box_value"] = torch.rand(n, generator=g)
        bank = text_bank()
        p["text_index"] = torch.randint(0, bank.shape[0], (n,), generator=g)
        p["text_pos"] = torch.stack([torch.randint(0, o - bank.shape[1] + 1, (n,), generator=g),
                                     torch.randint(-o // 4, o // 2, (n,), generator=g)], dim=1)
        p["text_value"] = _uniform(g, n, 0.75, 1.0)
        p["scalebar"] = _coin(g, n, c.p_scalebar)
        p["bar_length"] = torch.randint(15, 41, (n,), generator=g).float()
        p["bar_thickness"] = torch.randint(2, 5, (n,), generator=g).float()
        p["bar_corner"] = torch.randint(0, 4, (n,), generator=g)
        p["bar_value"] = _coin(g, n, 0.5).float()
        k = self.MAX_ERASE
        p["erase_count"] = torch.where(_coin(g, n, c.p_erase), torch.randint(1, k + 1, (n,), generator=g), 0)
        area = _uniform(g, n * k, *c.erase_area).view(n, k) * o * o
        aspect = _log_uniform(g, n * k, 0.5, 2.0).view(n, k)
        size = torch.stack([(area * aspect).sqrt(), (area / aspect).sqrt()], dim=-1).clamp(2, o - 1)  # (n, k, [h, w])
        p["erase_size"] = size.round()
        p["erase_corner"] = (torch.rand(n, k, 2, generator=g) * (o - p["erase_size"])).floor()
        p["erase_fill"] = torch.randint(0, 3, (n, k), generator=g)          # 0 black, 1 white, 2 median
        return _to(p, device)

    def apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        n, o = x.shape[0], x.shape[-1]
        dev, dt = x.device, x.dtype
        v = lambda t: t.to(dt).view(n, 1, 1, 1)  # noqa: E731
        yy = torch.arange(o, device=dev, dtype=dt).view(1, 1, o, 1)
        xx = torch.arange(o, device=dev, dtype=dt).view(1, 1, 1, o)
        out = x
        if bool(params["box"].any()):
            y0, x0 = v(params["box_corner"][:, 0]), v(params["box_corner"][:, 1])
            y1, x1 = y0 + v(params["box_size"][:, 0]), x0 + v(params["box_size"][:, 1])
            t = v(params["box_thickness"])
            inside = (yy >= y0) & (yy < y1) & (xx >= x0) & (xx < x1)
            core = (yy >= y0 + t) & (yy < y1 - t) & (xx >= x0 + t) & (xx < x1 - t)
            m = (inside & ~core & (v(params["box"]) > 0)).to(dt)
            out = out * (1 - m) + v(params["box_value"]) * m
        if bool(params["text"].any()):
            bank = text_bank().to(dev, dt)
            _, bh, bw = bank.shape
            ty = yy[0, 0, :, 0].view(1, o, 1) - params["text_pos"][:, 0].view(n, 1, 1)
            tx = xx[0, 0, 0, :].view(1, 1, o) - params["text_pos"][:, 1].view(n, 1, 1)
            valid = (ty >= 0) & (ty < bh) & (tx >= 0) & (tx < bw) & params["text"].view(n, 1, 1)
            m = bank[params["text_index"].view(n, 1, 1), ty.clamp(0, bh - 1).long(), tx.clamp(0, bw - 1).long()]
            m = (m * valid).unsqueeze(1)
            out = out * (1 - m) + v(params["text_value"]) * m
        if bool(params["scalebar"].any()):
            length, thick = v(params["bar_length"]), v(params["bar_thickness"])
            corner = params["bar_corner"]
            margin = 6.0
            right = v((corner % 2 == 1).float())
            bottom = v((corner >= 2).float())
            x0 = margin + right * (o - 2 * margin - length)
            y0 = margin + bottom * (o - 2 * margin - thick)
            m = ((yy >= y0) & (yy < y0 + thick) & (xx >= x0) & (xx < x0 + length) & (v(params["scalebar"]) > 0)).to(dt)
            out = out * (1 - m) + v(params["bar_value"]) * m
        count = params.get("erase_count")
        if count is not None and bool((count > 0).any()):
            median = x.flatten(1).median(dim=1).values
            for j in range(int(count.max())):
                y0, x0 = v(params["erase_corner"][:, j, 0]), v(params["erase_corner"][:, j, 1])
                y1, x1 = y0 + v(params["erase_size"][:, j, 0]), x0 + v(params["erase_size"][:, j, 1])
                fill = params["erase_fill"][:, j]
                value = torch.where(fill == 2, median, (fill == 1).to(dt))
                m = ((yy >= y0) & (yy < y1) & (xx >= x0) & (xx < x1) & (count > j).view(n, 1, 1, 1)).to(dt)
                out = out * (1 - m) + v(value) * m
        return out

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        self.last_params = self.sample(x.shape[0], generator, x.device)
        return self.apply(x, self.last_params)


def centre_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, C, size, size)`` centre crop."""
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top:top + size, left:left + size]


def deform_images(images: np.ndarray, config: DeformConfig | None = None, seed: int = 0,
                  output_size: int = 128) -> np.ndarray:
    """Deform a stack of square gray images, numpy in, numpy out (for evaluations and scripts).

    ``images``: ``(N, S, S)`` float in [0, 1]; returns ``(N, output_size, output_size)`` float32.
    Clutter is included; with the same ``seed`` the result is identical.
    """
    arr = np.asarray(images, dtype=np.float32)
    if arr.ndim != 3 or arr.shape[1] != arr.shape[2]:
        raise ValueError(f"`images` must be a stack of square gray images (N, S, S), got shape {arr.shape}")
    config = config or DeformConfig()
    g = make_generator(seed)
    src = torch.from_numpy(arr).unsqueeze(1)
    out = Deformer(config, arr.shape[1], output_size)(src, g)
    out = Clutter(config, output_size)(out, g)
    return out[:, 0].numpy()
