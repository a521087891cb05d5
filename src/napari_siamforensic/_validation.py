"""Input checks shared by every public function.

Every check raises ``ValueError`` (or ``TypeError`` for a wrong kind of object) with a
message that names the argument, says what was wrong and what is accepted.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

MIN_SIDE = 16
ACCEPTED_IMAGES = (
    "a 2D gray array (H, W), an RGB(A) array (H, W, 3|4) or (H, W, 1), of any integer or "
    f"float dtype, at least {MIN_SIDE} x {MIN_SIDE} px, with finite values"
)


def check_image(image, name: str = "image") -> np.ndarray:
    """Return ``image`` as a 2D float32 gray array, or raise a clear error.

    Parameters
    ----------
    image : array-like, shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)
        Any integer or float dtype. RGB is converted to luminance; alpha is dropped.
    name : str
        How the caller calls this argument (used in messages).

    Returns
    -------
    gray : np.ndarray, shape (H, W), float32
    """
    if isinstance(image, (str, os.PathLike)):
        raise TypeError(f"`{name}` must be an array, got a path {str(image)!r}; read it first "
                        f"or pass it where files are accepted")
    try:
        arr = np.asarray(image)
    except Exception as exc:  # ragged lists and such
        raise TypeError(f"`{name}` could not be turned into an array ({exc}); expected {ACCEPTED_IMAGES}") from None
    if arr.dtype == bool:
        raise TypeError(f"`{name}` is a boolean array; expected {ACCEPTED_IMAGES} "
                        "(convert masks with .astype(np.uint8) if you mean it)")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"`{name}` has dtype {arr.dtype}; expected {ACCEPTED_IMAGES}")
    if arr.ndim == 3 and arr.shape[-1] in (1, 3, 4):
        pass
    elif arr.ndim != 2:
        raise ValueError(f"`{name}` must be 2D gray or (H, W, 1|3|4) colour, got an array of shape "
                         f"{arr.shape}; expected {ACCEPTED_IMAGES}")
    if arr.shape[0] < MIN_SIDE or arr.shape[1] < MIN_SIDE:
        raise ValueError(f"`{name}` is {arr.shape[0]} x {arr.shape[1]} px, smaller than the minimum "
                         f"{MIN_SIDE} x {MIN_SIDE}; expected {ACCEPTED_IMAGES}")
    if not np.isfinite(arr).all():
        raise ValueError(f"`{name}` contains NaN or infinite values; expected {ACCEPTED_IMAGES}")
    if arr.dtype.itemsize > 4 and np.issubdtype(arr.dtype, np.floating):
        peak = float(np.abs(arr).max()) if arr.size else 0.0
        if peak > 1e30:   # rescale before the float32 cast rather than overflow to inf
            arr = arr / peak
    arr = arr.astype(np.float32, copy=False)
    if arr.ndim == 3:
        if arr.shape[-1] == 1:
            arr = arr[..., 0]
        else:
            r, g, b = arr[..., 0], arr[..., 1], arr[..., 2]
            arr = 0.299 * r + 0.587 * g + 0.114 * b
    return np.ascontiguousarray(arr, dtype=np.float32)


def as_image_list(images, name: str = "images") -> list[np.ndarray]:
    """Accept one image or a sequence of images; return a list of 2D float32 arrays.

    A single array of shape (H, W) or (H, W, 1|3|4) is one image. A 3D array whose last axis is
    not 1, 3 or 4, shape (N, H, W), is a stack of N gray images. A list/tuple holds images of
    any sizes.
    """
    if isinstance(images, (str, os.PathLike)):
        raise TypeError(f"`{name}` must be arrays, got a path {str(images)!r}")
    if isinstance(images, np.ndarray) or hasattr(images, "__array__") and not isinstance(images, Sequence):
        arr = np.asarray(images)
        if arr.ndim == 3 and arr.shape[-1] not in (1, 3, 4):
            items = list(arr)
        elif arr.ndim == 4:
            items = list(arr)
        else:
            items = [arr]
    elif isinstance(images, Sequence):
        items = list(images)
    else:
        raise TypeError(f"`{name}` must be an image array or a sequence of image arrays, got "
                        f"{type(images).__name__}")
    if not items:
        raise ValueError(f"`{name}` is empty; pass at least one image ({ACCEPTED_IMAGES})")
    return [check_image(im, f"{name}[{i}]") for i, im in enumerate(items)]


def check_pair_lists(a: list, b: list, names=("images_a", "images_b")) -> None:
    if len(a) != len(b):
        raise ValueError(f"`{names[0]}` has {len(a)} images but `{names[1]}` has {len(b)}; "
                         "pairs are formed element by element, so the counts must match")


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}` must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value}")
    return int(value)


def check_range(value: float, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"`{name}` must be a number in [{low}, {high}], got {value!r}")
    if not (low <= float(value) <= high):
        raise ValueError(f"`{name}` out of bounds: expected within [{low}, {high}], got {value}")
    return float(value)


def check_interval(pair, name: str, low: float, high: float) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in pair)
    except Exception:
        raise TypeError(f"`{name}` must be a pair (low, high) within [{low}, {high}], got {pair!r}") from None
    if not (low <= lo <= hi <= high):
        raise ValueError(f"`{name}` out of bounds: expected low <= high within [{low}, {high}], got ({lo}, {hi})")
    return lo, hi


def check_existing_file(path, name: str = "path") -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`{name}` must be a file path, got {type(path).__name__}")
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"`{name}`: no such file {str(p)!r}")
    return p
