"""Procedural microscopy-like scenes: training data we may ship, and test parents we control.

Every scene is drawn from its own ``numpy.random.Generator`` made from an integer seed (no
global seeding), so ``generate_scene(kind, seed)`` is the same image on every machine.
Diversity matters more than realism here: the siamese net memorises a small set of sources,
so every kind draws its size scale, density, texture, polarity (dark fluorescence or bright
field), blur, illumination and noise afresh from the seed.

Seed ranges (keep them disjoint, so no evaluation image was ever a training image):

* training pools use seeds in ``range(0, TRAINING_SEED_LIMIT)`` (0 to 999,999);
* evaluation (``benchmarks/duplicates.py``, ``napari_siamforensic.evaluation``) uses seeds
  ``>= EVALUATION_SEED_START`` (10,000,000 and up).

Everything is vectorised numpy / scipy.ndimage; a 512 x 512 scene takes a few tens of ms.

Examples
--------
>>> from napari_siamforensic.core.synthetic import generate_scene, labelled_scene
>>> img = generate_scene("nuclei", seed=3, size=(256, 256))
>>> img.shape, img.dtype
((256, 256), dtype('float32'))
>>> img, labels = labelled_scene("cells", seed=3, size=(256, 256))
>>> labels.max() > 0
True
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import fft as sfft
from scipy import ndimage as ndi

__all__ = [
    "SCENE_KINDS",
    "LABELLED_KINDS",
    "TRAINING_SEED_LIMIT",
    "EVALUATION_SEED_START",
    "generate_scene",
    "generate_scenes",
    "labelled_scene",
]

#: Training pools draw generated scenes from seeds below this limit.
TRAINING_SEED_LIMIT = 1_000_000
#: Evaluation draws generated scenes from seeds at or above this start.
EVALUATION_SEED_START = 10_000_000

_MIN_SIDE = 16


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------
def _check_size(size) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        size = (int(size), int(size))
    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError):
        raise ValueError(f"`size` must be an int or a pair (height, width), got {size!r}") from None
    if h < _MIN_SIDE or w < _MIN_SIDE:
        raise ValueError(f"`size` must be at least {_MIN_SIDE} px per side, got {(h, w)}")
    return h, w


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"`seed` must be a non-negative int, got {seed!r}")
    if seed < 0:
        raise ValueError(f"`seed` must be a non-negative int, got {seed}")
    return int(seed)


def _freqs(shape):
    fy = np.fft.fftfreq(shape[0]).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(shape[1]).astype(np.float32)[None, :]
    return fy, fx


def _standardise(a: np.ndarray) -> np.ndarray:
    a = a - a.mean()
    s = a.std()
    return (a / s if s > 0 else a).astype(np.float32)


def _noise(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    """Gaussian-smoothed white noise (FFT, cost independent of sigma), zero mean, unit std."""
    white = rng.standard_normal(shape, dtype=np.float32)
    fy, fx = _freqs(shape)
    spec = sfft.rfft2(white) * np.exp(-2.0 * np.pi**2 * sigma**2 * (fy**2 + fx**2))
    return _standardise(sfft.irfft2(spec, s=shape))


def _oriented_noise(rng, shape, sigma_along: float, sigma_across: float, theta: float) -> np.ndarray:
    """Noise stretched along direction ``theta`` (radians from the column axis): fibre texture."""
    white = rng.standard_normal(shape, dtype=np.float32)
    fy, fx = _freqs(shape)
    fu = fx * np.cos(theta) + fy * np.sin(theta)
    fv = -fx * np.sin(theta) + fy * np.cos(theta)
    filt = np.exp(-2.0 * np.pi**2 * (sigma_along**2 * fu**2 + sigma_across**2 * fv**2))
    return _standardise(sfft.irfft2(sfft.rfft2(white) * filt, s=shape))


def _power_noise(rng, shape, beta: float) -> np.ndarray:
    """1/f^beta noise: clouds (beta ~ 2-3), mottled backgrounds."""
    white = rng.standard_normal(shape, dtype=np.float32)
    fy, fx = _freqs(shape)
    f = np.sqrt(fy**2 + fx**2)
    f[0, 0] = 1.0
    spec = sfft.rfft2(white) / f ** (beta / 2.0)
    spec[0, 0] = 0.0
    return _standardise(sfft.irfft2(spec, s=shape))


def _blur(a: np.ndarray, sigma: float) -> np.ndarray:
    return ndi.gaussian_filter(a, sigma, mode="nearest") if sigma > 0.05 else a


def _grid(shape):
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    return yy, xx


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Consecutive labels 1..n (0 stays background)."""
    present = np.bincount(labels.ravel()) > 0
    present[0] = False
    lut = np.zeros(present.shape, np.int32)
    lut[present] = np.arange(1, int(present.sum()) + 1, dtype=np.int32)
    return lut[labels]


def _edges(labels: np.ndarray) -> np.ndarray:
    """Pixels whose right or lower neighbour has another label (label/background borders too)."""
    e = np.zeros(labels.shape, bool)
    dv = labels[1:, :] != labels[:-1, :]
    dh = labels[:, 1:] != labels[:, :-1]
    e[1:, :] |= dv
    e[:-1, :] |= dv
    e[:, 1:] |= dh
    e[:, :-1] |= dh
    return e


def _centres(rng, shape, n: int, clustered: float = 0.0) -> np.ndarray:
    """``n`` points (row, col); a fraction ``clustered`` of them around a few cluster centres."""
    h, w = shape
    n = max(int(n), 1)
    n_cl = int(round(n * clustered))
    pts = rng.uniform((0, 0), (h, w), size=(n - n_cl, 2))
    if n_cl:
        k = rng.integers(1, 6)
        c = rng.uniform((0, 0), (h, w), size=(k, 2))
        spread = rng.uniform(0.04, 0.15) * min(h, w)
        cl = c[rng.integers(0, k, n_cl)] + rng.normal(0, spread, size=(n_cl, 2))
        pts = np.concatenate([pts, cl])
    for axis, side in ((0, h - 1), (1, w - 1)):  # reflect strays back inside (no edge pile-up)
        p = np.abs(pts[:, axis]) % (2 * side) if side > 0 else np.zeros(len(pts))
        pts[:, axis] = np.where(p > side, 2 * side - p, p)
    return pts.astype(np.float32)


class _BlobField:
    """Voronoi ownership + per-object elliptical radius, on (optionally) warped coordinates.

    Each pixel belongs to its nearest seed; ``r < 1`` is inside that seed's (irregular)
    ellipse. Touching objects are split along the Voronoi border, like touching nuclei.
    """

    def __init__(self, rng, shape, centres, a, b, theta, *, irregularity=0.0, warp=0.0, warp_sigma=8.0):
        h, w = shape
        yy, xx = _grid(shape)
        if warp > 0:
            yy = yy + warp * _noise(rng, shape, warp_sigma)
            xx = xx + warp * _noise(rng, shape, warp_sigma)
        iy = np.clip(np.round(centres[:, 0]).astype(np.intp), 0, h - 1)
        ix = np.clip(np.round(centres[:, 1]).astype(np.intp), 0, w - 1)
        free = np.ones(shape, bool)
        free[iy, ix] = False
        owner_at = np.full(shape, -1, np.int32)
        owner_at[iy, ix] = np.arange(len(centres), dtype=np.int32)
        _, (ny, nx) = ndi.distance_transform_edt(free, return_indices=True)
        owner = owner_at[ny, nx]
        if warp > 0:
            wy = np.clip(np.round(yy).astype(np.intp), 0, h - 1)
            wx = np.clip(np.round(xx).astype(np.intp), 0, w - 1)
            owner = owner[wy, wx]
        self.owner = owner
        dy = yy - centres[owner, 0]
        dx = xx - centres[owner, 1]
        c, s = np.cos(theta).astype(np.float32), np.sin(theta).astype(np.float32)
        u = dx * c[owner] + dy * s[owner]
        v = -dx * s[owner] + dy * c[owner]
        self.u, self.v = u, v
        un, vn = u / a[owner], v / b[owner]
        r = np.sqrt(un**2 + vn**2)
        if irregularity > 0:
            phi = np.arctan2(vn, un)
            n = len(centres)
            mod = np.ones(shape, np.float32)
            for k in (2, 3, 5):
                amp = (rng.uniform(0, irregularity / k**0.5, n)).astype(np.float32)
                ph = rng.uniform(0, 2 * np.pi, n).astype(np.float32)
                mod += amp[owner] * np.cos(k * phi + ph[owner])
            r = r / np.maximum(mod, 0.3)
        self.r = r.astype(np.float32)

    def labels(self, inside: float = 1.0) -> np.ndarray:
        return np.where(self.r < inside, self.owner + 1, 0).astype(np.int32)


def _sizes(rng, n, mean, cv):
    """Log-normal sizes with mean ``mean`` and coefficient of variation ``cv``."""
    s2 = np.log1p(cv**2)
    return (mean * np.exp(rng.normal(-s2 / 2, np.sqrt(s2), n))).astype(np.float32)


def _finish(img: np.ndarray, rng: np.random.Generator, *, fluorescence: bool) -> np.ndarray:
    """Illumination, vignetting, shot and read noise, then a robust stretch to [0, 1]."""
    shape = img.shape
    img = img.astype(np.float32, copy=False)
    lo, hi = float(img.min()), float(img.max())
    img = (img - lo) / (hi - lo) if hi > lo else np.zeros(shape, np.float32)
    if fluorescence:
        img = img + rng.uniform(0.0, 0.12)  # camera offset / autofluorescence
    yy, xx = _grid(shape)
    h, w = shape
    if rng.random() < 0.6:  # illumination gradient: a plane plus a slow field
        ang = rng.uniform(0, 2 * np.pi)
        plane = ((xx / w - 0.5) * np.cos(ang) + (yy / h - 0.5) * np.sin(ang)).astype(np.float32)
        illum = 1.0 + rng.uniform(0.1, 0.7) * plane + rng.uniform(0, 0.2) * _noise(rng, shape, min(h, w) / 4)
        img = img * np.clip(illum, 0.2, None)
    if rng.random() < 0.4:  # vignetting
        cy, cx = h * rng.uniform(0.3, 0.7), w * rng.uniform(0.3, 0.7)
        rr = ((yy - cy) ** 2 + (xx - cx) ** 2) / (0.5 * max(h, w)) ** 2
        img = img * np.clip(1.0 - rng.uniform(0.15, 0.6) * rr, 0.1, 1.0)
    img = np.clip(img, 0, None)
    # the stretch is chosen on the clean image, so noise never decides the contrast
    p_lo = rng.uniform(0.0, 2.0)
    lo = float(np.percentile(img[::2, ::2], p_lo))
    hi = float(np.percentile(img[::2, ::2], 99.95)) * rng.uniform(0.8, 1.05)  # some saturate
    if hi <= lo:
        hi = lo + 1e-3
    if rng.random() < 0.25:  # washed-out, low-contrast acquisitions
        lo -= rng.uniform(0.1, 0.6) * (hi - lo)
    # shot noise (Gaussian approximation of Poisson counts) plus read noise, in one draw
    photons = float(np.exp(rng.uniform(np.log(30.0), np.log(3000.0)))) / hi if rng.random() < 0.8 else np.inf
    read = rng.uniform(0.0, 0.03) * hi
    sd = np.sqrt(img / photons + read**2)
    img = img + sd * rng.standard_normal(shape, dtype=np.float32)
    out = np.clip((img - lo) / (hi - lo), 0.0, 1.0)
    if rng.random() < 0.3:
        out = out ** rng.uniform(0.6, 1.6)
    return out.astype(np.float32)


def _polarity(img: np.ndarray, invert: bool) -> np.ndarray:
    return (img.max() - img) if invert else img


# --------------------------------------------------------------------------------------------
# scene kinds: each returns (image before finishing, labels or None, fluorescence-like?)
# --------------------------------------------------------------------------------------------
def _nuclei(rng, shape):
    h, w = shape
    radius = rng.uniform(5.0, 28.0)
    cover = rng.uniform(0.08, 0.65)
    n = int(np.clip(cover * h * w / (np.pi * radius**2), 3, 2500))
    pts = _centres(rng, shape, n, clustered=rng.uniform(0, 0.8))
    a = _sizes(rng, n, radius, rng.uniform(0.05, 0.4))
    b = a * rng.uniform(rng.uniform(0.4, 0.9), 1.0, n).astype(np.float32)
    theta = rng.uniform(0, np.pi, n).astype(np.float32)
    field = _BlobField(rng, shape, pts, a, b, theta, irregularity=rng.uniform(0, 0.25),
                       warp=rng.uniform(0, 3), warp_sigma=rng.uniform(3, 10))
    labels = field.labels()
    inside = labels > 0
    level = np.exp(rng.normal(0, rng.uniform(0.1, 0.6), n + 1)).astype(np.float32)
    mitotic = rng.random(n + 1) < rng.uniform(0, 0.08)
    level[mitotic] *= rng.uniform(1.5, 3.0)
    prof = np.clip(1.0 - field.r, 0, 1) ** rng.uniform(0.0, 0.8)  # flat to domed
    chrom = 1.0 + rng.uniform(0.05, 0.5) * _noise(rng, shape, rng.uniform(0.8, 3.0))
    img = np.where(inside, level[field.owner + 1] * prof * chrom, 0.0)
    if rng.random() < 0.5:  # nucleoli: dark spots inside
        img *= 1.0 - rng.uniform(0.2, 0.6) * (_noise(rng, shape, rng.uniform(1.5, 3)) > 1.8)
    if rng.random() < 0.5:  # out-of-focus haze / cytoplasmic background
        img += rng.uniform(0.02, 0.2) * _blur(inside.astype(np.float32), rng.uniform(4, 15))
    img = _blur(np.clip(img, 0, None), rng.uniform(0.4, 2.0))
    bright_field = rng.random() < 0.3
    return _polarity(img, bright_field), _relabel(labels), not bright_field


def _cells(rng, shape):
    h, w = shape
    cell_r = rng.uniform(12.0, 55.0)
    n = int(np.clip(h * w / (np.pi * cell_r**2) * rng.uniform(0.5, 1.3), 3, 1200))
    pts = _centres(rng, shape, n, clustered=rng.uniform(0, 0.6))
    reach = rng.uniform(0.8, 2.2)  # > ~1.3: confluent sheet; < 1: separated cells
    a = _sizes(rng, n, cell_r * reach, 0.25)
    b = a * rng.uniform(0.5, 1.0, n).astype(np.float32)
    theta = rng.uniform(0, np.pi, n).astype(np.float32)
    field = _BlobField(rng, shape, pts, a, b, theta, irregularity=rng.uniform(0.05, 0.35),
                       warp=rng.uniform(1, 8), warp_sigma=rng.uniform(4, 15))
    labels = field.labels()
    inside = labels > 0
    cyto_level = rng.uniform(0.2, 1.0, n + 1).astype(np.float32)
    cyto = cyto_level[field.owner + 1] * (1 + rng.uniform(0.05, 0.5) * _noise(rng, shape, rng.uniform(1, 6)))
    img = np.where(inside, cyto * rng.uniform(0.1, 0.6), 0.0)
    membrane = _blur(_edges(labels).astype(np.float32), rng.uniform(0.6, 1.8))
    img += rng.uniform(0.3, 1.5) * membrane
    nuc_frac = rng.uniform(0.2, 0.5)
    nuclei = field.r < nuc_frac * rng.uniform(0.8, 1.2)
    nuc_val = rng.uniform(-0.6, 1.2)  # nuclei darker or brighter than cytoplasm
    img += nuc_val * nuclei * (1 + 0.3 * _noise(rng, shape, 1.5))
    img = _blur(np.clip(img, 0, None), rng.uniform(0.4, 1.5))
    bright_field = rng.random() < 0.4
    return _polarity(img, bright_field), _relabel(labels), not bright_field


def _tissue(rng, shape):
    """H&E-like section in gray: stroma fibres, glands with lumens, dark nuclei."""
    h, w = shape
    theta = rng.uniform(0, np.pi)
    fib = _oriented_noise(rng, shape, rng.uniform(6, 30), rng.uniform(0.8, 2.5), theta)
    fib2 = _oriented_noise(rng, shape, rng.uniform(6, 30), rng.uniform(0.8, 2.5), theta + rng.uniform(-1, 1))
    stroma = 0.65 + 0.12 * np.tanh(fib + 0.5 * fib2)
    lumen_field = _noise(rng, shape, rng.uniform(8, 30))
    lumen = lumen_field > rng.uniform(0.6, 1.6)
    dist = ndi.distance_transform_edt(~lumen)
    band = rng.uniform(6, 20)
    epith = (dist > 0) & (dist < band)
    img = np.where(epith, rng.uniform(0.45, 0.65), stroma)
    img = np.where(lumen, rng.uniform(0.85, 0.97), img)
    # nuclei: scattered in stroma plus lined up in the epithelium
    nr = rng.uniform(2.5, 7.0)
    n_stroma = int(h * w * rng.uniform(0.0005, 0.004))
    cand = np.flatnonzero(epith & (np.abs(dist - band * 0.6) < 2))
    n_epi = min(len(cand), int(len(cand) / max(nr * 1.5, 1)))
    pts = [_centres(rng, shape, max(n_stroma, 1))]
    if n_epi > 0:
        pick = rng.choice(cand, n_epi, replace=False)
        pts.append(np.stack([pick // w, pick % w], 1).astype(np.float32))
    pts = np.concatenate(pts)
    n = len(pts)
    a = _sizes(rng, n, nr, 0.3)
    b = a * rng.uniform(0.4, 1.0, n).astype(np.float32)
    field = _BlobField(rng, shape, pts, a, b, rng.uniform(0, np.pi, n).astype(np.float32),
                       irregularity=0.15, warp=1.5, warp_sigma=4)
    nuc = field.r < 1
    img = np.where(nuc, rng.uniform(0.12, 0.35) * (1 + 0.3 * _noise(rng, shape, 1.0)), img)
    if rng.random() < 0.5:  # red blood cells: small bright-dark discs
        rbc = _noise(rng, shape, 2.0) > 2.3
        img = np.where(rbc, img * rng.uniform(0.6, 0.85), img)
    img = _blur(img, rng.uniform(0.5, 1.5))
    # colour-to-gray through a random channel mix: some scans look like the eosin channel
    img = np.clip(img, 0, 1) ** rng.uniform(0.6, 1.8)
    return img, None, False


def _fibres(rng, shape):
    """Collagen / muscle / SHG-like fibres: oriented noise in a few domains, thresholded."""
    h, w = shape
    k = int(rng.integers(1, 5))
    pts = _centres(rng, shape, k)
    field = _BlobField(rng, shape, pts, np.ones(k, np.float32), np.ones(k, np.float32),
                       np.zeros(k, np.float32), warp=rng.uniform(5, 30), warp_sigma=rng.uniform(20, 60))
    img = np.zeros(shape, np.float32)
    along, across = rng.uniform(10, 60), rng.uniform(0.7, 3.0)
    base = rng.uniform(0, np.pi)
    for i in range(k):
        layer = _oriented_noise(rng, shape, along, across, base + rng.normal(0, 0.6))
        img += np.where(field.owner == i, layer, 0)
    img = _blur(img, 2.0 * rng.random())  # soften domain borders a bit
    mode = rng.integers(0, 3)
    if mode == 0:  # sparse bright fibres (SHG, fluorescence)
        img = np.clip(img - rng.uniform(0.3, 1.5), 0, None)
    elif mode == 1:  # banded muscle: modulate by striations
        yy, xx = _grid(shape)
        ang = base + np.pi / 2
        period = rng.uniform(4, 14)
        img = img + rng.uniform(0.5, 1.5) * np.sin(2 * np.pi * (xx * np.cos(ang) + yy * np.sin(ang)) / period)
    else:  # dense texture
        img = np.tanh(img * rng.uniform(0.5, 2.0))
    img = img + rng.uniform(0, 0.5) * _power_noise(rng, shape, rng.uniform(2.0, 3.0))
    img = img - img.min()
    fluo = rng.random() < 0.6
    return _polarity(img, not fluo and rng.random() < 0.7), None, fluo


def _draw_points(shape, ys, xs, weights=None) -> np.ndarray:
    h, w = shape
    ok = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
    idx = ys[ok].astype(np.intp) * w + xs[ok].astype(np.intp)
    wt = None if weights is None else weights[ok]
    return np.bincount(idx, weights=wt, minlength=h * w).reshape(shape).astype(np.float32)


def _filaments(rng, shape):
    """Cytoskeleton-like filaments: persistent random walks, free or radiating from asters."""
    h, w = shape
    n = int(rng.integers(15, 400))
    length = int(rng.integers(30, 350))
    kappa = rng.uniform(0.01, 0.25)  # curvature per step
    if rng.random() < 0.5:  # asters / radiating from a few centres (microtubules)
        k = int(rng.integers(1, 8))
        c = _centres(rng, shape, k)[rng.integers(0, k, n)]
        start = c + rng.normal(0, 4, (n, 2))
        ang0 = rng.uniform(0, 2 * np.pi, n)
    else:  # free filaments, mostly aligned or not
        start = rng.uniform((-0.1 * h, -0.1 * w), (1.1 * h, 1.1 * w), (n, 2))
        ang0 = rng.uniform(0, np.pi) + rng.normal(0, rng.uniform(0.1, 2.0), n)
    ang = ang0[:, None] + np.cumsum(rng.normal(0, kappa, (n, length)), axis=1)
    step = 0.8
    ys = start[:, 0:1] + np.cumsum(step * np.sin(ang), axis=1)
    xs = start[:, 1:2] + np.cumsum(step * np.cos(ang), axis=1)
    bright = np.exp(rng.normal(0, 0.5, n))[:, None] * np.ones((1, length))
    img = _draw_points(shape, ys.ravel(), xs.ravel(), bright.ravel())
    img = _blur(img, rng.uniform(0.6, 1.6))
    img = img ** rng.uniform(0.5, 1.0)
    if rng.random() < 0.5:  # cell envelope and diffuse background
        env = _blur((_noise(rng, shape, rng.uniform(20, 60)) > rng.uniform(-0.5, 0.8)).astype(np.float32), 8)
        img = img * (0.3 + env) + rng.uniform(0.0, 0.3) * env * img.mean()
    return img, None, True


def _puncta(rng, shape):
    """Fluorescent puncta and speckle, often inside cells."""
    h, w = shape
    n = int(rng.integers(60, 4000))
    if rng.random() < 0.7:  # inside a cell mask
        cells = _noise(rng, shape, rng.uniform(15, 50)) > rng.uniform(-0.3, 0.9)
        cand = np.flatnonzero(cells)
        if len(cand) < 10:
            cand = np.arange(h * w)
            cells = np.ones(shape, bool)
        pick = rng.choice(cand, n)
        ys, xs = (pick // w).astype(np.float32), (pick % w).astype(np.float32)
    else:
        cells = np.ones(shape, bool)
        p = _centres(rng, shape, n, clustered=rng.uniform(0, 0.9))
        ys, xs = p[:, 0], p[:, 1]
    amp = np.exp(rng.normal(0, rng.uniform(0.2, 0.9), n))
    img = _blur(_draw_points(shape, ys, xs, amp), rng.uniform(0.7, 2.5))
    if rng.random() < 0.5:  # second population: bigger, dimmer
        m = n // 4 + 1
        p = _centres(rng, shape, m)
        img += 0.5 * _blur(_draw_points(shape, p[:, 0], p[:, 1], np.exp(rng.normal(0, 0.5, m))), rng.uniform(2, 5))
    iy = np.clip(ys.astype(np.intp), 0, h - 1)
    ix = np.clip(xs.astype(np.intp), 0, w - 1)
    img = img / (np.percentile(img[iy, ix], 75) + 1e-6)  # a typical punctum peaks near 1
    diffuse = rng.uniform(0.0, 0.3)
    speckle = rng.exponential(1.0, shape).astype(np.float32)
    envelope = _blur(cells.astype(np.float32), rng.uniform(1.0, 6.0))
    img += diffuse * envelope * _blur(speckle, rng.uniform(0.8, 2.0))
    return img, None, True


def _phase(rng, shape):
    """Phase-contrast (dark cells with bright halos) or DIC (embossed relief)."""
    h, w = shape
    cell_r = rng.uniform(8, 40)
    n = int(np.clip(h * w / (np.pi * cell_r**2) * rng.uniform(0.1, 0.9), 3, 800))
    pts = _centres(rng, shape, n, clustered=rng.uniform(0, 0.7))
    a = _sizes(rng, n, cell_r, 0.4)
    elong = rng.uniform(0.2, 1.0, n).astype(np.float32)
    rounded = rng.random(n) < rng.uniform(0, 0.3)  # rounded mitotic cells
    elong[rounded] = 1.0
    a[rounded] *= 0.6
    field = _BlobField(rng, shape, pts, a, a * elong, rng.uniform(0, np.pi, n).astype(np.float32),
                       irregularity=rng.uniform(0.05, 0.4), warp=rng.uniform(0, 6), warp_sigma=8)
    height = np.sqrt(np.clip(1 - field.r**2, 0, 1))
    height[rounded[field.owner]] *= 2.0
    opd = height * (1 + 0.3 * _noise(rng, shape, rng.uniform(1, 3)))
    if rng.random() < 0.6:
        halo = rng.uniform(2, 8)
        img = 0.5 - rng.uniform(0.3, 0.8) * (opd - _blur(opd, halo))
        fluo = False
    else:  # DIC: directional derivative
        ang = rng.uniform(0, 2 * np.pi)
        gy, gx = np.gradient(_blur(opd, 1.0))
        img = 0.5 + rng.uniform(1.0, 4.0) * (gy * np.sin(ang) + gx * np.cos(ang))
        fluo = False
    img = _blur(img, rng.uniform(0.3, 1.2))
    return img, _relabel(field.labels()), fluo


def _bacteria(rng, shape):
    """Rod-shaped bacteria (capsules), fluorescent or phase-dark."""
    h, w = shape
    width = rng.uniform(2.5, 8.0)
    length = rng.uniform(1.5, 6.0) * width
    cover = rng.uniform(0.05, 0.5)
    n = int(np.clip(cover * h * w / (2 * width * (length + width)), 3, 3000))
    pts = _centres(rng, shape, n, clustered=rng.uniform(0, 0.9))
    theta = (rng.uniform(0, np.pi) + rng.normal(0, rng.uniform(0.1, 1.5), n)).astype(np.float32)
    ones = np.ones(n, np.float32)
    field = _BlobField(rng, shape, pts, ones, ones, theta)
    half = (_sizes(rng, n, length / 2, 0.3))[field.owner]
    wid = (_sizes(rng, n, width, 0.15))[field.owner]
    d = np.sqrt(np.maximum(np.abs(field.u) - half, 0) ** 2 + field.v**2) / wid
    inside = d < 1
    level = np.exp(rng.normal(0, 0.4, n + 1)).astype(np.float32)[field.owner + 1]
    img = np.where(inside, level * np.clip(1 - d, 0, 1) ** rng.uniform(0.2, 0.8), 0)
    img = _blur(img, rng.uniform(0.5, 1.5))
    if rng.random() < 0.4:  # phase-dark with halo
        img = 0.5 - img + rng.uniform(0.2, 0.6) * _blur(inside.astype(np.float32), 3)
        return img, None, False
    return img, None, True


def _band_profile(n, centre, sigma, tail):
    """1D band profile along the lane: a Gaussian convolved with a downward smear."""
    y = np.arange(n, dtype=np.float32)
    g = np.exp(-0.5 * ((y - centre) / sigma) ** 2)
    if tail > 0:
        k = np.exp(-np.arange(max(int(min(6 * tail, n)), 1)) / tail).astype(np.float32)
        k /= k.sum()
        g = np.convolve(g, k)[:n]
    return g


def _blot_strip(rng, h, w, gel: bool):
    """One blot / gel strip: lanes x bands as a low-rank sum, then a smile warp."""
    n_lanes = int(rng.integers(3, 17))
    margin = rng.uniform(0.0, 0.12) * w
    pitch = (w - 2 * margin) / n_lanes
    lane_w = pitch * rng.uniform(0.5, 0.9)
    xc = margin + pitch * (np.arange(n_lanes) + 0.5) + rng.normal(0, 0.03 * pitch, n_lanes)
    x = np.arange(w, dtype=np.float32)
    p = rng.uniform(2, 6)  # flat-topped lanes
    fx = np.exp(-np.abs((x[None, :] - xc[:, None]) / (lane_w / 2)) ** p)  # (L, W)
    ladder = gel and rng.random() < 0.8
    n_rows = int(rng.integers(1, 7)) if not gel else int(rng.integers(1, 5))
    rows = []
    amps = []
    for _ in range(n_rows):
        yc = rng.uniform(0.1, 0.9) * h
        sig = rng.uniform(0.01, 0.05) * h
        tail = rng.uniform(0, 0.15) * h if rng.random() < 0.5 else 0.0
        rows.append(_band_profile(h, yc, sig, tail))
        trend = np.linspace(rng.uniform(0, 1), rng.uniform(0, 1), n_lanes)
        amp = np.clip(trend + rng.normal(0, 0.3, n_lanes), 0, None) * (rng.random(n_lanes) > 0.15)
        amps.append(amp)
    if ladder:  # many thin bands, log spaced, in one lane
        lane = int(rng.integers(0, n_lanes))
        ys = h * (0.08 + 0.85 * (1 - np.logspace(0, 1, int(rng.integers(6, 14))) / 10) ** rng.uniform(0.7, 1.5))
        lad = sum(_band_profile(h, y, 0.008 * h + 0.5, 0) for y in ys)
        rows.append(lad)
        amp = np.zeros(n_lanes)
        amp[lane] = 1.0
        amps.append(amp)
    if gel and rng.random() < 0.5:  # genomic smear
        rows.append(_band_profile(h, 0.15 * h, 0.02 * h, 0.4 * h))
        amps.append(rng.uniform(0, 0.6, n_lanes) * (rng.random(n_lanes) < 0.5))
    fy = np.stack(rows, 1)  # (H, R)
    amp = np.stack(amps, 0)  # (R, L)
    img = (fy @ amp @ fx).astype(np.float32)
    # smile / frown and slight lane tilt: shift rows by a smooth function of x
    yy, xx = _grid((h, w))
    smile = rng.uniform(-0.04, 0.04) * h * ((xx / w - 0.5) * 2) ** 2 + rng.uniform(-0.02, 0.02) * h * (xx / w)
    img = ndi.map_coordinates(img, [yy + smile, xx], order=1, mode="nearest")
    if gel:  # wells at the top
        wells = (np.abs(yy - 0.05 * h) < 0.012 * h + 1) * (fx.sum(0)[None, :] > 0.5)
        img = img + rng.uniform(0.1, 0.5) * wells
    img = img + rng.uniform(0.0, 0.15) * (1 + _power_noise(rng, (h, w), 2.5)) * 0.5
    if rng.random() < 0.5:  # dust and scratches
        dust = _noise(rng, (h, w), 1.0) > rng.uniform(2.8, 3.5)
        img = img + rng.uniform(0.2, 1.0) * dust
    return np.clip(img, 0, None)


def _blot_like(rng, shape, gel: bool):
    h, w = shape
    n_strips = int(rng.integers(1, 4)) if h >= 96 else 1
    gap = int(rng.uniform(0.02, 0.06) * h) if n_strips > 1 else 0
    heights = rng.dirichlet(np.ones(n_strips) * 3) * (h - gap * (n_strips - 1))
    heights = np.maximum(heights.astype(int), 8)
    img = np.zeros(shape, np.float32)
    y0 = 0
    for i, sh in enumerate(heights):
        sh = min(int(sh), h - y0)
        if sh < 8:
            break
        strip = _blot_strip(rng, sh, w, gel)
        img[y0 : y0 + sh] = strip / (np.percentile(strip, 99.5) + 1e-6)
        y0 += sh + gap
    img = _blur(img, rng.uniform(0.5, 2.0))
    dark_bands = (not gel and rng.random() < 0.8) or (gel and rng.random() < 0.2)
    return _polarity(img, dark_bands), None, not dark_bands


def _blot(rng, shape):
    return _blot_like(rng, shape, gel=False)


def _gel(rng, shape):
    return _blot_like(rng, shape, gel=True)


def _em(rng, shape):
    """Electron-micrograph-like: membranes, vesicles, mitochondria with cristae, granules."""
    h, w = shape
    img = 0.6 + 0.1 * _power_noise(rng, shape, rng.uniform(1.5, 2.5))
    cell_r = rng.uniform(60, 250)
    k = int(np.clip(h * w / (np.pi * cell_r**2), 1, 60))
    ones = np.ones(k, np.float32)
    big = _BlobField(rng, shape, _centres(rng, shape, k), ones, ones, np.zeros(k, np.float32),
                     warp=rng.uniform(3, 15), warp_sigma=rng.uniform(10, 30))
    mem = _blur(_edges(big.owner).astype(np.float32), rng.uniform(0.7, 1.5))
    img -= rng.uniform(0.2, 0.5) * mem / (mem.max() + 1e-6)
    # vesicles (rings) and mitochondria (filled ellipses with cristae)
    vr = rng.uniform(4, 15)
    n = int(np.clip(h * w * rng.uniform(0.05, 0.25) / (np.pi * vr**2), 2, 1500))
    a = _sizes(rng, n, vr, 0.4)
    elong = np.where(rng.random(n) < 0.3, rng.uniform(1.5, 4.0, n), 1.0).astype(np.float32)
    field = _BlobField(rng, shape, _centres(rng, shape, n, clustered=0.5), a * elong, a,
                       rng.uniform(0, np.pi, n).astype(np.float32), irregularity=0.1)
    is_mito = (elong > 1.0)[field.owner]
    ring = np.abs(field.r - 0.9) < rng.uniform(0.08, 0.2)
    cristae = np.cos(field.u * rng.uniform(0.6, 1.5)) > 0.3
    img -= rng.uniform(0.15, 0.4) * ring
    img -= np.where(is_mito & (field.r < 0.85), rng.uniform(0.05, 0.2) + 0.15 * cristae, 0)
    img += np.where(~is_mito & (field.r < 0.8), rng.uniform(-0.1, 0.15), 0)
    gran = _noise(rng, shape, rng.uniform(1, 2.5)) > rng.uniform(2.0, 2.8)
    img -= rng.uniform(0.2, 0.5) * gran
    img = _blur(img, rng.uniform(0.5, 1.2))
    img = img + rng.uniform(0.03, 0.12) * rng.standard_normal(shape).astype(np.float32)
    return img, None, False


_KINDS: dict[str, Callable] = {
    "nuclei": _nuclei,
    "cells": _cells,
    "tissue": _tissue,
    "fibres": _fibres,
    "filaments": _filaments,
    "puncta": _puncta,
    "phase": _phase,
    "bacteria": _bacteria,
    "blot": _blot,
    "gel": _gel,
    "em": _em,
}

#: Names accepted by :func:`generate_scene`.
SCENE_KINDS: tuple[str, ...] = tuple(_KINDS)
#: Kinds for which :func:`labelled_scene` returns instance labels.
LABELLED_KINDS: tuple[str, ...] = ("nuclei", "cells", "phase")

# a fixed per-kind salt, so generate_scene("nuclei", 5) and generate_scene("cells", 5) do not
# share their random stream (and stay fixed if kinds are added)
_SALT = {name: sum((i + 1) * ord(c) for i, c in enumerate(name)) for name in _KINDS}


def _render(kind: str, seed, size):
    if kind not in _KINDS:
        raise ValueError(f"unknown scene kind {kind!r}; expected one of {SCENE_KINDS}")
    shape = _check_size(size)
    seed = _check_seed(seed)
    rng = np.random.default_rng([seed, _SALT[kind]])
    img, labels, fluo = _KINDS[kind](rng, shape)
    img = _finish(np.asarray(img, np.float32), rng, fluorescence=fluo)
    return img, labels


def generate_scene(kind: str, seed: int, size=(512, 512)) -> np.ndarray:
    """One procedural microscopy-like gray image.

    Parameters
    ----------
    kind : str
        One of :data:`SCENE_KINDS`: ``nuclei``, ``cells``, ``tissue`` (H&E-like, in gray),
        ``fibres``, ``filaments``, ``puncta``, ``phase`` (phase contrast or DIC),
        ``bacteria``, ``blot`` (western blot), ``gel`` (DNA gel), ``em`` (electron micrograph).
    seed : int
        Non-negative; the same ``(kind, seed, size)`` always gives the same image.
    size : int or (int, int)
        ``(height, width)`` in pixels, at least 16 per side.

    Returns
    -------
    image : (H, W) float32 ndarray in [0, 1]
    """
    return _render(kind, seed, size)[0]


def labelled_scene(kind: str, seed: int, size=(512, 512)) -> tuple[np.ndarray, np.ndarray]:
    """A scene and its instance labels (ground truth for segmentation benchmarks).

    ``image`` is identical to ``generate_scene(kind, seed, size)``; ``labels`` is an
    ``(H, W)`` int32 array, 0 = background, 1..n = objects (nuclei or cells).

    Raises ``ValueError`` for kinds without labels (see :data:`LABELLED_KINDS`).
    """
    if kind not in LABELLED_KINDS:
        raise ValueError(f"`kind` must be one of {LABELLED_KINDS} for labelled scenes, got {kind!r}")
    img, labels = _render(kind, seed, size)
    return img, labels


def generate_scenes(n: int, seed: int = 0, size=(512, 512), kinds=None) -> list[tuple[str, np.ndarray]]:
    """``n`` scenes cycling through ``kinds`` (default all :data:`SCENE_KINDS`).

    Scene ``i`` has kind ``kinds[i % len(kinds)]`` and seed ``seed + i``.

    Returns
    -------
    list of (kind, image) with image ``(H, W)`` float32 in [0, 1]
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"`n` must be a non-negative int, got {n!r}")
    kinds = SCENE_KINDS if kinds is None else tuple(kinds)
    if not kinds:
        raise ValueError("`kinds` must name at least one scene kind")
    for k in kinds:
        if k not in _KINDS:
            raise ValueError(f"unknown scene kind {k!r}; expected one of {SCENE_KINDS}")
    seed = _check_seed(seed)
    return [(kinds[i % len(kinds)], generate_scene(kinds[i % len(kinds)], seed + i, size)) for i in range(n)]
