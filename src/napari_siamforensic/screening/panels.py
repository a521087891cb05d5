"""Multi-panel figures -> panel boxes, by recursive cuts along uniform gutters (an XY-cut).

A gutter is a full row or column (within the part of the figure being cut) whose pixels lie
near the figure's background colour: within ``tolerance`` on average and, but for small marks
such as panel letters, within ``gutter_tolerance`` each (JPEG scatters a gutter's pixels).
The background colour is found,
not assumed: it is the most common value among the figure's flat rows and columns, and it
must be the figure's lightest or darkest colour (so white and black backgrounds work, and a
flat mid-gray stripe inside a photograph is not taken for a gutter). Cuts alternate between rows and columns until
no gutter is left; every piece is trimmed to its content.

Example
-------
>>> import numpy as np
>>> fig = np.ones((100, 210))
>>> rng = np.random.default_rng(0)
>>> fig[10:90, 5:100] = rng.random((80, 95)); fig[10:90, 110:205] = rng.random((80, 95))
>>> split_panels(fig)
[(5, 10, 100, 90), (110, 10, 205, 90)]
"""
from __future__ import annotations

import numpy as np

Box = tuple[int, int, int, int]   # (x0, y0, x1, y1), x1/y1 exclusive


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """Start/stop of the runs of True in a 1D bool array."""
    if flags.size == 0:
        return []
    d = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))


def _lead(flags: np.ndarray, limit: int) -> int:
    """How many leading entries of ``flags`` are True, at most ``limit``."""
    head = flags[:limit]
    return int(head.size if head.all() else np.argmin(head))


def background_value(gray: np.ndarray, tolerance: float, spread: float | None = None) -> float | None:
    """The figure's gutter colour: the most common value of its flat rows/columns, or None.

    A row is flat when its values span at most ``spread`` (None: ``tolerance``) and stray from
    its median by at most ``tolerance`` on average: a JPEG-compressed gutter is flat on average
    but scattered by its rings."""
    spread = tolerance if spread is None else spread

    def flat(axis):
        med = np.median(gray, axis=axis, keepdims=True)
        return (np.ptp(gray, axis=axis) <= spread) & (np.abs(gray - med).mean(axis) <= tolerance)

    rows, cols = flat(1), flat(0)
    values = np.concatenate([gray[rows].mean(1), gray[:, cols].mean(0)])
    if values.size == 0:
        return None
    bins = np.round(values / max(tolerance, 1e-6))
    uniq, counts = np.unique(bins, return_counts=True)
    mode = uniq[np.argmax(counts)]
    return float(np.median(values[bins == mode]))


def _small_marks(content: np.ndarray, max_side: int) -> np.ndarray:
    """Pixels of the connected pieces of ``content`` whose bounding box is at most
    ``max_side`` px on both sides: panel letters, arrows and other marks in gutters."""
    from scipy import ndimage as ndi

    lab, n = ndi.label(content)
    if n == 0:
        return np.zeros_like(content)
    small = np.zeros(n + 1, bool)
    for i, sl in enumerate(ndi.find_objects(lab), start=1):
        small[i] = sl[0].stop - sl[0].start <= max_side and sl[1].stop - sl[1].start <= max_side
    return small[lab]


def split_panels(image: np.ndarray, *, tolerance: float = 0.03, min_gutter: int = 2,
                 max_panels: int = 256, min_edge_content: float = 0.6,
                 gutter_fill: float = 0.98, trim_fill: float = 0.8,
                 halo: int = 8, mark_side: int | None = None, mark_fill: float = 0.85,
                 gutter_tolerance: float | None = None, min_coverage: float = 0.5) -> list[Box]:
    """Boxes of the panels of a figure, in reading order; ``[]`` when it has no gutters.

    Parameters
    ----------
    image : (H, W) or (H, W, 3|4) array, any dtype
    tolerance : float
        How far (as a fraction of the image's intensity range) a gutter pixel may lie from
        the background colour. Gutters in figures are flat; JPEG ringing needs a little slack.
    min_gutter : int
        Thinnest gutter (px) that separates panels.
    max_panels : int
        Stop cutting beyond this many pieces (text-heavy pages).
    gutter_fill : float
        Share of a row/column's pixels that must be background for it to be a gutter.
    trim_fill, halo : float, int
        Up to ``halo`` edge rows/columns of a panel with at least ``trim_fill`` background
        are trimmed off (JPEG rings around panel edges).
    mark_side, mark_fill : int or None, float
        Panel letters, JPEG specks and other small marks (connected pieces at most
        ``mark_side`` px on both sides; None: 6 % of the figure's shorter side, at least
        12 px) do not stop a row or column from being a gutter, as long as at least
        ``mark_fill`` of it is background. 0 turns this off.
    gutter_tolerance : float or None
        How far a gutter pixel may stray from the background while the row or column still
        counts as a gutter, as long as the row's mean deviation stays within ``tolerance`` and
        the gutter's median row within half of it: JPEG rings scatter a thin gutter's pixels by
        up to ~0.1 of the range, but little on average, while an empty band of a noisy
        micrograph strays more on average. None: 4 x ``tolerance``.
    min_coverage : float
        Panels fill most of a figure: when the pieces at least 16 px on both sides cover less
        than this share of the image, it is one picture shattered along its dark (or light)
        background, not a figure, and ``[]`` is returned.
    min_edge_content : float
        Panels are rectangles of content: when, weighted by area, less than this share of the
        pieces' box edges is content, the image is one picture on a flat background (sparse
        fluorescence, blobs), not a figure, and ``[]`` is returned.

    Returns
    -------
    list of (x0, y0, x1, y1)
        Pixel boxes (x1, y1 exclusive). A figure without gutters gives ``[]``; one whose
        only gutter is its margin gives one box (its content).
    """
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        arr = arr[..., :3].astype(np.float32).mean(-1)
    if arr.ndim != 2:
        raise ValueError(f"`image` must be 2D gray or (H, W, 3|4) colour, got an array of shape {arr.shape}")
    gray = arr.astype(np.float32, copy=False)
    lo, hi = float(gray.min()), float(gray.max())
    if not np.isfinite([lo, hi]).all() or hi - lo <= 0:
        return []
    gray = (gray - lo) / (hi - lo)
    loose = 4 * tolerance if gutter_tolerance is None else float(gutter_tolerance)
    bg = background_value(gray, tolerance, 2 * loose)
    # Figure backgrounds are the lightest or darkest colour of the figure (white or black
    # gutters); a flat stripe of a mid-gray inside a photo is not a gutter.
    if bg is None or min(bg, 1.0 - bg) > 2 * tolerance:
        return []
    dev = np.abs(gray - bg)
    is_bg = dev <= tolerance
    near_bg = dev <= loose
    side = max(12, int(0.06 * min(gray.shape))) if mark_side is None else int(mark_side)
    # for finding gutters only: marks count as background (trimming and checks use is_bg)
    gutter_bg = near_bg | _small_marks(~near_bg, side) if side > 0 else near_bg
    quiet = np.where(near_bg, dev, 0.0)    # JPEG scatter without the marks

    out: list[Box] = []

    def cut(x0: int, y0: int, x1: int, y1: int, axis_first: int) -> None:
        sub = is_bg[y0:y1, x0:x1]
        content_r = np.flatnonzero(sub.mean(1) < gutter_fill)
        content_c = np.flatnonzero(sub.mean(0) < gutter_fill)
        if content_r.size == 0 or content_c.size == 0:
            return
        y0, y1 = y0 + int(content_r[0]), y0 + int(content_r[-1]) + 1
        x0, x1 = x0 + int(content_c[0]), x0 + int(content_c[-1]) + 1
        # then shave a JPEG halo: up to `halo` edge rows/columns that are mostly background
        sub = is_bg[y0:y1, x0:x1]
        rows, cols = sub.mean(1) >= trim_fill, sub.mean(0) >= trim_fill
        top = _lead(rows, halo)
        bottom = _lead(rows[::-1], halo)
        left = _lead(cols, halo)
        right = _lead(cols[::-1], halo)
        if y1 - y0 - top - bottom < 1 or x1 - x0 - left - right < 1:
            return
        y0, y1, x0, x1 = y0 + top, y1 - bottom, x0 + left, x1 - right
        sub, clean, q = near_bg[y0:y1, x0:x1], gutter_bg[y0:y1, x0:x1], quiet[y0:y1, x0:x1]
        for axis in (axis_first, 1 - axis_first):
            along = 1 - axis     # average along the row (axis 0) or the column (axis 1)
            scatter = q.mean(along)
            flags = (clean.mean(along) >= gutter_fill) & (sub.mean(along) >= mark_fill) & (scatter <= tolerance)
            # a JPEG gutter is quiet on the whole (its lines stray ~0.004-0.012 from the
            # background on average); an empty band of a noisy micrograph is not (~0.02)
            gutters = [(a, b) for a, b in _runs(flags)
                       if b - a >= min_gutter and np.median(scatter[a:b]) <= tolerance / 2]
            if not gutters or len(out) >= max_panels:
                continue
            start = 0
            pieces = []
            for a, b in gutters:
                pieces.append((start, a))
                start = b
            pieces.append((start, flags.size))
            for a, b in pieces:
                if b <= a:
                    continue
                if axis == 0:
                    cut(x0, y0 + a, x1, y0 + b, 1)
                else:
                    cut(x0 + a, y0, x0 + b, y1, 0)
            return
        out.append((x0, y0, x1, y1))

    cut(0, 0, gray.shape[1], gray.shape[0], 0)
    if out:
        # An image with a flat background (sparse fluorescence, say) also has flat rows, and
        # its "panels" are blobs whose box edges are mostly background. A panel is a
        # rectangle of content: most of its box's edge pixels are not background.
        edge_fill, area = 0.0, 0
        for x0, y0, x1, y1 in out:
            box = is_bg[y0:y1, x0:x1]
            edge = np.concatenate([box[0], box[-1], box[:, 0], box[:, -1]])
            a = (x1 - x0) * (y1 - y0)
            edge_fill += a * (1.0 - edge.mean())
            area += a
        if edge_fill < min_edge_content * area:
            return []
        covered = sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in out if min(x1 - x0, y1 - y0) >= 16)
        if covered < min_coverage * gray.size:
            return []
    return out


__all__ = ["split_panels", "background_value", "Box"]
