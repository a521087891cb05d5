"""A figure-re-use test set: manipulations as they happen in figures, written independently.

None of this uses the training deformations (``napari_siamforensic.core.deform``): every
manipulation here is plain PIL / numpy, with its own parameter ranges, so a model cannot
score well merely by having seen these exact operations in training.

Each :class:`Triplet` holds

* ``anchor``: a crop ("view") of a parent image, 96-300 px per side;
* ``positive``: the anchor after one manipulation family (``combo`` chains three);
* ``negative_random``: a view of another parent;
* ``negative_hard``: a view of the *same* parent that shares at most ``max_hard_overlap``
  (default 10 %) of the anchor's area (same texture, same acquisition, different content).

All images are ``(H, W)`` float32 in [0, 1]; sizes vary within a set.

Examples
--------
>>> import numpy as np
>>> from napari_siamforensic.evaluation.reuse import make_reuse_set
>>> rng = np.random.default_rng(0)
>>> parents = [rng.random((400, 400), dtype=np.float32) for _ in range(3)]
>>> triplets = make_reuse_set(parents, seed=1, n_per_family=1)
>>> len(triplets), triplets[0].family
(12, 'resize')
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ._images import to_gray01

__all__ = [
    "FAMILIES",
    "MANIPULATIONS",
    "Triplet",
    "blot_lanes",
    "make_reuse_set",
    "manipulate",
    "view_boxes",
]

_MIN_OUT = 32  # no manipulation shrinks a side below this


@dataclass(frozen=True)
class Triplet:
    """One test case; ``*_box`` are ``(row0, col0, row1, col1)`` in the parent image."""

    anchor: np.ndarray
    positive: np.ndarray
    negative_random: np.ndarray
    negative_hard: np.ndarray
    family: str
    parent: int
    parent_random: int
    anchor_box: tuple[int, int, int, int]
    hard_box: tuple[int, int, int, int]
    hard_overlap: float  # shared area / anchor area
    steps: tuple[str, ...] = field(default=())  # what was applied to make the positive


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _as_image(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.clip(a, 0.0, 1.0), dtype=np.float32)


def _pil_f(a: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(a, dtype=np.float32))  # mode "F"


def _resize(a: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    h, w = out_hw
    return np.asarray(_pil_f(a).resize((max(int(w), 1), max(int(h), 1)), Image.BICUBIC), dtype=np.float32)


def _to_uint8(a: np.ndarray) -> np.ndarray:
    return (np.clip(a, 0, 1) * 255.0 + 0.5).astype(np.uint8)


def _gaussian_kernel(sigma: float) -> np.ndarray:
    r = max(int(np.ceil(3 * sigma)), 1)
    x = np.arange(-r, r + 1, dtype=np.float32)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _gaussian_blur(a: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur with reflected borders (numpy only)."""
    k = _gaussian_kernel(sigma)
    r = len(k) // 2
    out = a
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (r, r)
        p = np.pad(out, pad, mode="reflect" if out.shape[axis] > r else "edge")
        win = np.lib.stride_tricks.sliding_window_view(p, len(k), axis=axis)
        out = win @ k
    return out.astype(np.float32)


def _font(size: int):
    size = max(int(size), 6)
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def _two_ranges(rng, low: tuple[float, float], high: tuple[float, float]) -> float:
    """A value from ``low`` or ``high`` (never near the identity in between)."""
    lo, hi = low if rng.random() < 0.5 else high
    return float(rng.uniform(lo, hi))


# --------------------------------------------------------------------------------------------
# manipulations: (image (H, W) float32 in [0, 1], rng) -> (image, description)
# --------------------------------------------------------------------------------------------
def _m_resize(a, rng):
    h, w = a.shape
    s = float(np.exp(_two_ranges(rng, (np.log(0.5), np.log(0.85)), (np.log(1.18), np.log(2.0)))))
    s = max(s, _MIN_OUT / min(h, w))
    return _resize(a, (round(h * s), round(w * s))), f"resize x{s:.2f}"


def _m_crop(a, rng):
    h, w = a.shape
    fy, fx = rng.uniform(0.6, 0.95, 2)
    ch, cw = max(int(round(h * fy)), min(_MIN_OUT, h)), max(int(round(w * fx)), min(_MIN_OUT, w))
    y0 = int(rng.integers(0, h - ch + 1))
    x0 = int(rng.integers(0, w - cw + 1))
    return a[y0 : y0 + ch, x0 : x0 + cw].copy(), f"crop {fy:.2f}x{fx:.2f}"


_DIHEDRAL: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "rot90": lambda a: np.rot90(a, 1),
    "rot180": lambda a: np.rot90(a, 2),
    "rot270": lambda a: np.rot90(a, 3),
    "flip_lr": lambda a: a[:, ::-1],
    "flip_ud": lambda a: a[::-1, :],
    "transpose": lambda a: a.T,
    "anti_transpose": lambda a: np.rot90(a, 2).T,
}


def _m_flip_rotate90(a, rng):
    name = list(_DIHEDRAL)[int(rng.integers(0, len(_DIHEDRAL)))]
    return np.ascontiguousarray(_DIHEDRAL[name](a)), name


def _inscribed(h: int, w: int, angle_deg: float) -> tuple[int, int]:
    """Largest axis-aligned rectangle inside a (h, w) rectangle rotated by ``angle_deg``."""
    a = np.deg2rad(abs(angle_deg))
    sin, cos = np.sin(a), np.cos(a)
    long, short = (w, h) if w >= h else (h, w)
    if short <= 2.0 * sin * cos * long or abs(sin - cos) < 1e-10:
        x = 0.5 * short
        wr, hr = (x / sin, x / cos) if w >= h else (x / cos, x / sin)
    else:
        cos2 = cos * cos - sin * sin
        wr, hr = (w * cos - h * sin) / cos2, (h * cos - w * sin) / cos2
    return int(np.floor(hr)) - 1, int(np.floor(wr)) - 1


def _m_rotate_small(a, rng):
    h, w = a.shape
    angle = float(rng.uniform(2.0, 15.0) * rng.choice([-1.0, 1.0]))
    rot = np.asarray(_pil_f(a).rotate(angle, resample=Image.BICUBIC, expand=False), dtype=np.float32)
    ih, iw = _inscribed(h, w, angle)
    ih, iw = max(min(ih, h), 8), max(min(iw, w), 8)
    y0, x0 = (h - ih) // 2, (w - iw) // 2
    return rot[y0 : y0 + ih, x0 : x0 + iw].copy(), f"rotate {angle:+.1f} deg, crop {ih}x{iw}"


def _m_levels_gamma(a, rng):
    lo = float(rng.uniform(0.0, 0.15))
    hi = float(rng.uniform(0.85, 1.0))
    gamma = _two_ranges(rng, (0.45, 0.8), (1.25, 2.2))
    out = np.clip((a - lo) / (hi - lo), 0, 1) ** gamma
    return out, f"levels [{lo:.2f}, {hi:.2f}] gamma {gamma:.2f}"


def _m_invert(a, rng):
    return 1.0 - a, "invert"


def _m_jpeg(a, rng):
    import io

    q = int(rng.integers(15, 61))
    buf = io.BytesIO()
    Image.fromarray(_to_uint8(a)).save(buf, format="JPEG", quality=q)
    buf.seek(0)
    out = np.asarray(Image.open(buf).convert("L"), dtype=np.float32) / 255.0
    return out, f"jpeg q{q}"


_LABELS = ("A", "B", "C", "D", "E", "F", "a", "b", "Ctrl", "48h", "24 h", "0 h", "WT", "KO", "siRNA",
           "DAPI", "GFP", "Merge", "+", "-", "x40", "Day 3", "n=3", "*", "**")
_BAR_TEXT = ("10 µm", "20 µm", "50 µm", "100 µm", "5 µm", "1 mm", "200 nm")


def _m_labels(a, rng):
    """Panel letters / condition labels in a corner, plus (usually) a scale bar."""
    h, w = a.shape
    mask = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask)
    done = []
    n_labels = int(rng.integers(1, 3))
    corners = rng.permutation(4)
    for i in range(n_labels):
        text = _LABELS[int(rng.integers(0, len(_LABELS)))]
        font = _font(rng.uniform(0.09, 0.18) * min(h, w))
        x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
        tw, th = x1 - x0, y1 - y0
        m = int(rng.integers(2, max(3, min(h, w) // 20)))
        c = corners[i]
        x = m if c in (0, 2) else max(w - tw - m, 0)
        y = m if c in (0, 1) else max(h - th - m, 0)
        draw.text((x - x0, y - y0), text, font=font, fill=255)
        done.append(text)
    if rng.random() < 0.7:  # scale bar in a free bottom corner
        bar_w = int(rng.uniform(0.15, 0.3) * w)
        bar_h = int(rng.integers(2, 6))
        m = int(rng.integers(3, max(4, min(h, w) // 12)))
        right = rng.random() < 0.7
        x0 = w - bar_w - m if right else m
        y0 = h - bar_h - m
        draw.rectangle([x0, y0, x0 + bar_w, y0 + bar_h], fill=255)
        done.append("scale bar")
        if rng.random() < 0.5:
            text = _BAR_TEXT[int(rng.integers(0, len(_BAR_TEXT)))]
            font = _font(max(bar_h * 3, 0.07 * min(h, w)))
            tb = draw.textbbox((0, 0), text, font=font)
            draw.text((x0 + (bar_w - (tb[2] - tb[0])) / 2 - tb[0], y0 - (tb[3] - tb[1]) - 2 - tb[1]),
                      text, font=font, fill=255)
    alpha = np.asarray(mask, dtype=np.float32) / 255.0
    ink = 1.0 if rng.random() < 0.75 else 0.0  # white labels are the usual on micrographs
    if rng.random() < 0.3:  # pick the colour that contrasts with the image
        ink = 0.0 if float(a.mean()) > 0.5 else 1.0
    return a * (1 - alpha) + ink * alpha, "labels " + ", ".join(done)


def _m_erase(a, rng):
    h, w = a.shape
    out = a.copy()
    n = int(rng.integers(1, 4))
    fills = []
    for _ in range(n):
        frac = rng.uniform(0.03, 0.09)
        aspect = rng.uniform(0.5, 2.0)
        eh = max(int(np.sqrt(frac * h * w * aspect)), 3)
        ew = max(int(np.sqrt(frac * h * w / aspect)), 3)
        eh, ew = min(eh, h - 1), min(ew, w - 1)
        y0 = int(rng.integers(0, h - eh + 1))
        x0 = int(rng.integers(0, w - ew + 1))
        kind = int(rng.integers(0, 3))
        value = (0.0, 1.0, float(np.median(a)))[kind]
        out[y0 : y0 + eh, x0 : x0 + ew] = value
        fills.append(("black", "white", "median")[kind])
    return out, f"erase {n} rectangle(s) ({', '.join(fills)})"


def _m_noise(a, rng):
    sigma = float(rng.uniform(0.03, 0.1))
    return a + rng.normal(0.0, sigma, a.shape).astype(np.float32), f"gaussian noise {sigma:.3f}"


def _m_blur(a, rng):
    sigma = float(rng.uniform(1.0, 3.0))
    return _gaussian_blur(a, sigma), f"gaussian blur {sigma:.2f} px"


MANIPULATIONS: dict[str, Callable] = {
    "resize": _m_resize,
    "crop": _m_crop,
    "flip_rotate90": _m_flip_rotate90,
    "rotate_small": _m_rotate_small,
    "levels_gamma": _m_levels_gamma,
    "invert": _m_invert,
    "jpeg": _m_jpeg,
    "labels": _m_labels,
    "erase": _m_erase,
    "noise": _m_noise,
    "blur": _m_blur,
}

#: Manipulation families of the test set, in report order; ``combo`` chains three others.
FAMILIES: tuple[str, ...] = tuple(MANIPULATIONS) + ("combo",)


def manipulate(image: np.ndarray, family: str, rng: np.random.Generator) -> tuple[np.ndarray, tuple[str, ...]]:
    """Apply one family to ``image`` ((H, W) float in [0, 1]); return (image, steps applied)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown manipulation family {family!r}; expected one of {FAMILIES}")
    a = _as_image(image)
    if a.ndim != 2:
        raise ValueError(f"`image` must be 2D (H, W), got shape {a.shape}")
    if family == "combo":
        names = list(MANIPULATIONS)
        chosen = [names[i] for i in rng.choice(len(names), 3, replace=False)]
    else:
        chosen = [family]
    steps = []
    for name in chosen:
        a, desc = MANIPULATIONS[name](a, rng)
        a = _as_image(a)
        steps.append(desc)
    return a, tuple(steps)


# --------------------------------------------------------------------------------------------
# views of parents
# --------------------------------------------------------------------------------------------
def _overlap(b1, b2) -> float:
    """Intersection area / area of b1."""
    dy = min(b1[2], b2[2]) - max(b1[0], b2[0])
    dx = min(b1[3], b2[3]) - max(b1[1], b2[1])
    if dy <= 0 or dx <= 0:
        return 0.0
    return dy * dx / float((b1[2] - b1[0]) * (b1[3] - b1[1]))


def view_boxes(rng, parent_shape, *, min_side=96, max_side=300, max_overlap=0.1, tries=200):
    """An anchor box and a same-size hard-negative box in one parent, overlapping <= ``max_overlap``.

    Returns ``(anchor_box, hard_box, overlap)`` with boxes ``(row0, col0, row1, col1)``.
    Raises ``ValueError`` if the parent is too small for two such views.
    """
    H, W = parent_shape
    if max(H, W) < 2 * min_side * (1 - max_overlap) or min(H, W) < min_side:
        raise ValueError(
            f"parent of shape {(H, W)} is too small for two views of at least {min_side} px "
            f"overlapping <= {max_overlap:.0%}"
        )
    best = None
    for t in range(tries):
        # shrink the size range as attempts fail
        hi = max(min_side, int(max_side * (1 - t / tries)))
        h = int(rng.integers(min_side, min(hi, H) + 1))
        w = int(rng.integers(min_side, min(hi, W) + 1))
        a = (int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1)))
        a = (a[0], a[1], a[0] + h, a[1] + w)
        for _ in range(20):
            y0, x0 = int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1))
            b = (y0, x0, y0 + h, x0 + w)
            ov = _overlap(a, b)
            if best is None or ov < best[2]:
                best = (a, b, ov)
            if ov <= max_overlap:
                return a, b, ov
    if best is not None and best[2] <= max_overlap:
        return best
    raise ValueError(f"could not place two views in a parent of shape {(H, W)}")


def _random_box(rng, shape, min_side, max_side):
    H, W = shape
    h = int(rng.integers(min(min_side, H), min(max_side, H) + 1))
    w = int(rng.integers(min(min_side, W), min(max_side, W) + 1))
    y0, x0 = int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1))
    return (y0, x0, y0 + h, x0 + w)


def _crop(a, box):
    return np.ascontiguousarray(a[box[0] : box[2], box[1] : box[3]], dtype=np.float32)


def make_reuse_set(
    parents: list[np.ndarray],
    seed: int,
    n_per_family: int,
    *,
    families: tuple[str, ...] = FAMILIES,
    min_side: int = 96,
    max_side: int = 300,
    max_hard_overlap: float = 0.1,
    manipulate_negatives: bool = False,
    groups: list | None = None,
) -> list[Triplet]:
    """Build ``n_per_family * len(families)`` triplets from ``parents``.

    Parameters
    ----------
    parents : list of (H, W) arrays
        Gray images (floats in [0, 1] are kept; other ranges are min-max scaled; RGB is
        converted to gray). At least two, each large enough for two non-overlapping views.
    seed : int
        Triplet ``j`` of family ``f`` draws from ``default_rng([seed, f, j])``: the set is
        reproducible, and adding families does not change the others.
    n_per_family : int
        Triplets per manipulation family.
    manipulate_negatives : bool
        Also apply the family (freshly sampled) to both negatives, so a method cannot tell
        copies from non-copies by the traces of the manipulation alone.
    groups : list, optional
        One group key per parent (e.g. its scene kind). The random negative then comes
        from another parent of the same group when there is one, as the panels of one
        figure share a modality; otherwise from any other parent.

    Returns
    -------
    list of :class:`Triplet`, grouped by family in ``families`` order.
    """
    if len(parents) < 2:
        raise ValueError(f"`parents` must hold at least 2 images (random negatives), got {len(parents)}")
    if n_per_family < 1:
        raise ValueError(f"`n_per_family` must be >= 1, got {n_per_family}")
    for f in families:
        if f not in FAMILIES:
            raise ValueError(f"unknown manipulation family {f!r}; expected some of {FAMILIES}")
    imgs = [to_gray01(p, "each parent") for p in parents]
    if groups is not None and len(groups) != len(imgs):
        raise ValueError(f"`groups` must have one entry per parent ({len(imgs)}), got {len(groups)}")
    out = []
    for fi, family in enumerate(families):
        f_index = FAMILIES.index(family)
        for j in range(n_per_family):
            rng = np.random.default_rng([int(seed), f_index, j])
            pi = int(rng.integers(0, len(imgs)))
            parent = imgs[pi]
            a_box, h_box, ov = view_boxes(rng, parent.shape, min_side=min_side, max_side=max_side,
                                          max_overlap=max_hard_overlap)
            same = [k for k in range(len(imgs)) if k != pi and groups is not None and groups[k] == groups[pi]]
            if same:
                ri = same[int(rng.integers(0, len(same)))]
            else:
                ri = int(rng.integers(0, len(imgs) - 1))
                ri = ri + 1 if ri >= pi else ri
            r_box = _random_box(rng, imgs[ri].shape, min_side, max_side)
            anchor = _crop(parent, a_box)
            positive, steps = manipulate(anchor, family, rng)
            neg_r = _crop(imgs[ri], r_box)
            neg_h = _crop(parent, h_box)
            if manipulate_negatives:
                neg_r = manipulate(neg_r, family, rng)[0]
                neg_h = manipulate(neg_h, family, rng)[0]
            out.append(Triplet(anchor=anchor, positive=positive, negative_random=neg_r, negative_hard=neg_h,
                               family=family, parent=pi, parent_random=ri, anchor_box=a_box, hard_box=h_box,
                               hard_overlap=float(ov), steps=steps))
    return out


def blot_lanes(seed: int) -> np.ndarray:
    """A blot-like picture, ``(220, 420)`` float32 in [0, 1]: 10 lanes 30 px wide and 40 px
    apart, bands at the same 14 heights in every lane, each lane its own band strengths (some
    missing), a little noise. Two regions of it that share no pixel line their bands up: the
    pixel check's hard case of the thirteenth session (``benchmarks/pixel_check.py`` and the
    check's tests use it; the fourteenth session's line rule answers it)."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    ys = rng.uniform(10, 210, 14)
    y = np.arange(220)[:, None]
    lanes = np.zeros((220, 420), np.float32)
    for x0 in range(10, 410, 40):
        amp = rng.uniform(0.2, 1.0, 14) * (rng.random(14) < 0.8)
        lanes[:, x0:x0 + 30] = (amp[None] * np.exp(-0.5 * ((y - ys[None]) / 2.0) ** 2)).sum(1)[:, None]
    lanes = ndi.gaussian_filter(lanes, 1.0) + 0.02 * rng.standard_normal(lanes.shape).astype(np.float32)
    return (lanes - lanes.min()) / (lanes.max() - lanes.min())
