"""The one image conversion the evaluation code shares (numpy only, nothing from the package)."""
from __future__ import annotations

import numpy as np

_LUMA = np.array([0.2125, 0.7154, 0.0721], np.float32)


def to_gray01(img, what: str = "image") -> np.ndarray:
    """2D gray or RGB(A) -> ``(H, W)`` float32; values outside [0, 1] are min-max scaled.

    ``what`` names the argument in the error message ("each parent", ...).
    """
    a = np.asarray(img)
    if a.ndim == 3 and a.shape[-1] in (3, 4):
        a = a[..., :3].astype(np.float32) @ _LUMA
    if a.ndim != 2:
        raise ValueError(f"{what} must be 2D (H, W) or RGB(A) (H, W, 3|4), got shape {a.shape}")
    a = a.astype(np.float32)
    lo, hi = float(a.min()), float(a.max())
    if lo < 0 or hi > 1:
        a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    return a
