"""Texture neighbours: a second, cheap way to find candidate pairs among oriented textures.

The network ranks different panels of one stationary texture (fibres, oriented noise) close
together, so a cropped copy of such a panel can be among none of its neighbours (seventeenth
session: every planted copy the search missed at 200 neighbours per item on the calibration
corpus was a fibre panel). What tells two such panels apart without reading their pixels
pair by pair is their orientation and how strongly oriented they are, which a crop, a rescale,
a contrast change or JPEG hardly change. :func:`texture_descriptor` reads both from the
image's structure tensor (the mean outer product of its Gaussian derivatives) at
``TEXTURE_SCALES`` pixels:

* the coherence ``c = sqrt((Jxx - Jyy)^2 + 4 Jxy^2) / (Jxx + Jyy)`` (0: no direction, 1: one
  direction only), and
* the orientation ``theta``, made invariant to the flips and quarter turns a copy may be in:
  those change ``theta`` to ``-theta`` and ``theta + 90``, which leave ``4 theta`` folded to
  ``[0, 180]`` degrees unchanged; it enters as the point ``ANGLE_WEIGHT * c *
  (cos, sin)(4 theta folded)`` so that a weakly oriented picture's angle counts little.

:func:`texture_pairs` then pairs every item with its ``k`` nearest others in that 9-number
space (plain L2, in blocks: no N x N matrix). The screen passes them to the pixel check's
first pass with the wider search's pairs (:func:`napari_siamforensic.screening.iter_screen`,
``texture``).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .._validation import check_positive_int

TEXTURE_SCALES = (1.0, 2.0, 4.0)
"""Gaussian derivative scales (pixels) of the structure tensor."""

ANGLE_WEIGHT = 2.0
"""Weight of the orientation point against the coherence."""

TEXTURE_DIM = 3 * len(TEXTURE_SCALES)

MAX_SIDE = 512
"""Larger images are reduced by an integer factor (block means) to at most this side first."""

MIN_SIDE = 8


def texture_descriptor(image) -> np.ndarray:
    """The 9-number texture descriptor of a 2D gray image (float32; all NaN if the image is
    smaller than ``MIN_SIDE`` pixels on a side). A flat image gives zeros."""
    x = np.asarray(image, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"`image` must be a 2D gray image, got an array of shape {x.shape}")
    if min(x.shape) < MIN_SIDE:
        return np.full(TEXTURE_DIM, np.nan, np.float32)
    f = -(-max(x.shape) // MAX_SIDE)                    # ceil: the reduction factor
    if f > 1:
        h, w = (x.shape[0] // f) * f, (x.shape[1] // f) * f
        x = x[:h, :w].reshape(h // f, f, w // f, f).mean(axis=(1, 3))
    if not np.isfinite(x).all():
        x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    out = np.zeros(TEXTURE_DIM, np.float32)
    for k, s in enumerate(TEXTURE_SCALES):
        gy = ndi.gaussian_filter(x, s, order=(1, 0))
        gx = ndi.gaussian_filter(x, s, order=(0, 1))
        jxx, jyy, jxy = float((gx * gx).mean()), float((gy * gy).mean()), float((gx * gy).mean())
        tr = jxx + jyy
        if not tr > 1e-20:                               # flat (or nearly): no texture at all
            continue
        c = float(np.hypot(jxx - jyy, 2.0 * jxy) / tr)
        two_theta = np.arctan2(2.0 * jxy, jxx - jyy)
        four = abs(float(np.angle(np.exp(2j * two_theta))))   # 4 theta folded to [0, pi]
        out[3 * k:3 * k + 3] = (ANGLE_WEIGHT * c * np.cos(four), ANGLE_WEIGHT * c * np.sin(four), c)
    return out


def texture_descriptors(load, n: int) -> np.ndarray:
    """``(n, TEXTURE_DIM)`` descriptors of items ``0 .. n-1``; ``load(i)`` returns the image
    or None (unreadable: a NaN row)."""
    out = np.full((n, TEXTURE_DIM), np.nan, np.float32)
    for i in range(n):
        img = load(i)
        if img is not None:
            out[i] = texture_descriptor(img)
    return out


def texture_pairs(desc: np.ndarray, groups: np.ndarray | None = None, *, k: int = 30, mode: str = "all",
                  block: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Each item's ``k`` nearest others by L2 between descriptors, as unique pairs ``a < b``.

    Rows with a NaN (unreadable, too small) take no part. ``mode`` ``"within"`` pairs items of
    one group only, ``"across"`` items of different groups only (``groups``: one integer per
    item, e.g. the document). Queries go in blocks of at most ``block`` rows, fewer for large
    corpora so that a block's distances stay under about 64 MB."""
    check_positive_int(k, "k", minimum=0)
    desc = np.asarray(desc, dtype=np.float32)
    if desc.ndim != 2:
        raise ValueError(f"`desc` must be an (items, {TEXTURE_DIM}) array, got shape {desc.shape}")
    n = len(desc)
    if mode not in ("all", "within", "across"):
        raise ValueError(f"`mode` must be 'all', 'within' or 'across', got {mode!r}")
    if mode != "all" and (groups is None or len(groups) != n):
        raise ValueError(f"`groups` must give one group per item with mode={mode!r}")
    ok = np.flatnonzero(np.isfinite(desc).all(axis=1))
    if k <= 0 or len(ok) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    x = desc[ok]
    g = np.asarray(groups)[ok] if groups is not None else None
    sq = (x * x).sum(axis=1)
    kk = min(int(k), len(ok) - 1)
    block = max(16, min(int(block), (1 << 24) // len(ok)))
    a_parts, b_parts = [], []
    for s in range(0, len(ok), block):
        q = slice(s, min(s + block, len(ok)))
        d2 = sq[q, None] + sq[None, :] - 2.0 * (x[q] @ x.T)
        rows = np.arange(q.start, q.stop)
        d2[rows - q.start, rows] = np.inf                   # not itself
        if mode == "within":
            d2[g[q, None] != g[None, :]] = np.inf
        elif mode == "across":
            d2[g[q, None] == g[None, :]] = np.inf
        nn = np.argpartition(d2, kk - 1, axis=1)[:, :kk]       # kk < len(ok): each row has an inf
        fin = np.isfinite(np.take_along_axis(d2, nn, axis=1))
        a_parts.append(np.repeat(rows, kk)[fin.ravel()])
        b_parts.append(nn.ravel()[fin.ravel()])
    a, b = np.concatenate(a_parts), np.concatenate(b_parts)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    key = np.unique(lo * len(ok) + hi)
    return ok[key // len(ok)].astype(np.int64), ok[key % len(ok)].astype(np.int64)
