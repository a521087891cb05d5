"""The paper's synthetic test protocol (section 4), with the deformation as a parameter.

One class per source image: the source's centre 128 x 128 (the "fixed image") plus 9
deformations of its centre 256 x 256 crop, each cropped to 128 x 128 by the deformation.
For each class, pick at random a fixed image from the class, another image from the same
class, and one image from another random class; a triplet is right when
``d(fixed, same) < d(fixed, other)`` (a tie counts 1/2). Triplet accuracy is averaged over
10 such rounds through all classes. The paper reports 0.853731 on 402 classes x 10
(:data:`PAPER_SYNTHETIC_ACCURACY`).

"Pick randomly a fixed image from the class" is the paper's wording for its real test set;
``anchor="any"`` (default) follows it, ``anchor="original"`` always uses the undeformed one.
"""
from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from .metrics import triplet_accuracy
from ._images import to_gray01

__all__ = ["PAPER_SYNTHETIC_ACCURACY", "paper_protocol", "sources_to_256", "protocol_deform_config"]

#: Triplet accuracy of the paper's SN model on its synthetic test set (402 classes x 10).
PAPER_SYNTHETIC_ACCURACY = 0.853731

_SIDE, _OUT = 256, 128


def sources_to_256(sources: Sequence[np.ndarray]) -> np.ndarray:
    """Centre 256 x 256 crop of each source (upscaled first if a side is shorter): (N, 256, 256)."""
    out = np.empty((len(sources), _SIDE, _SIDE), np.float32)
    for i, s in enumerate(sources):
        a = to_gray01(s, "each source")
        h, w = a.shape
        if min(h, w) < _SIDE:
            f = _SIDE / min(h, w)
            a = np.asarray(Image.fromarray(a).resize((max(_SIDE, round(w * f)), max(_SIDE, round(h * f))),
                                                     Image.BICUBIC), dtype=np.float32)
            h, w = a.shape
        y0, x0 = (h - _SIDE) // 2, (w - _SIDE) // 2
        out[i] = np.clip(a[y0 : y0 + _SIDE, x0 : x0 + _SIDE], 0, 1)
    return out


def protocol_deform_config():
    """The protocol's default deformation, frozen: the training defaults of the first three
    sessions (the authors' deformations plus rot90, crops, levels, inversion, noise, blur and
    scale bars), without the anisotropic stretch and erased rectangles added to training
    later, so that protocol figures stay comparable from session to session."""
    from napari_siamforensic.core.config import DeformConfig

    return DeformConfig(p_stretch=0.0, p_erase=0.0)


def _default_deform(batch: np.ndarray, seed: int) -> np.ndarray:
    from napari_siamforensic.core.deform import deform_images  # lazy: torch only when needed

    return deform_images(batch, protocol_deform_config(), seed=seed)


def _as_numpy_128(x, n: int) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().float().cpu().numpy()
    a = np.asarray(x, dtype=np.float32)
    if a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    if a.shape != (n, _OUT, _OUT):
        raise ValueError(f"`deform_fn` must return ({n}, {_OUT}, {_OUT}), got {a.shape}")
    return a


def _distances(distance_fn, list_a, list_b) -> np.ndarray:
    out = distance_fn(list_a, list_b)
    if isinstance(out, tuple):  # baselines return (distances, seconds)
        out = out[0]
    return np.asarray(out, dtype=np.float64).reshape(-1)


def paper_protocol(
    sources: Sequence[np.ndarray],
    distance_fn: Callable,
    deform_fn: Callable | None = None,
    n_repeats: int = 10,
    seed: int = 0,
    *,
    n_deformations: int = 9,
    anchor: str = "any",
    classes: list[list[np.ndarray]] | None = None,
    chunk_size: int = 576,
) -> dict:
    """Triplet accuracy of ``distance_fn`` on classes of deformed copies of ``sources``.

    Parameters
    ----------
    sources : sequence of 2D arrays
        One class per source, never used in training. Each is reduced to its centre
        256 x 256 (see :func:`sources_to_256`).
    distance_fn : callable
        ``distance_fn(list_a, list_b) -> (N,)``; lower = more alike. A baseline's
        ``(distances, seconds)`` tuple is accepted too.
    deform_fn : callable, optional
        ``deform_fn(batch (N, 256, 256) float32 in [0, 1], seed: int) -> (N, 128, 128)``.
        Default: ``napari_siamforensic.core.deform.deform_images`` with
        :func:`protocol_deform_config` (the training deformation of the first sessions, frozen).
    n_repeats : int
        Rounds through all classes (paper: 10).
    seed : int
        Seeds the deformations and the picks.
    anchor : {"any", "original"}
        Which class member is the fixed image.
    chunk_size : int
        Images per ``deform_fn`` call (chunk ``k`` gets seed ``seed + k``), to bound memory.
    classes : list of lists, optional
        Pre-built classes (from an earlier result's ``"classes"``) so several methods are
        compared on exactly the same images; then ``sources`` and ``deform_fn`` are unused.

    Returns
    -------
    dict with ``accuracy`` (mean over rounds), ``accuracy_std``, ``per_repeat`` (list),
    ``n_classes``, ``n_per_class``, ``paper_accuracy`` (0.853731), ``seconds`` (distance
    calls only) and ``classes`` (the images, for reuse).
    """
    if anchor not in ("any", "original"):
        raise ValueError(f"`anchor` must be 'any' or 'original', got {anchor!r}")
    if n_repeats < 1:
        raise ValueError(f"`n_repeats` must be >= 1, got {n_repeats}")
    if classes is None:
        if len(sources) < 2:
            raise ValueError(f"`sources` must hold at least 2 images (one class each), got {len(sources)}")
        deform_fn = _default_deform if deform_fn is None else deform_fn
        base = sources_to_256(sources)
        n = len(base)
        per_call = max(1, int(chunk_size) // n_deformations)  # sources per deform call: bounded memory
        deformed = np.empty((n, n_deformations, _OUT, _OUT), np.float32)
        for k, start in enumerate(range(0, n, per_call)):
            batch = np.repeat(base[start : start + per_call], n_deformations, axis=0)  # (m * 9, 256, 256)
            out = _as_numpy_128(deform_fn(batch, int(seed) + k), len(batch))
            deformed[start : start + per_call] = out.reshape(-1, n_deformations, _OUT, _OUT)
        c0 = (_SIDE - _OUT) // 2
        fixed = base[:, c0 : c0 + _OUT, c0 : c0 + _OUT]
        classes = [[np.ascontiguousarray(fixed[i])] + [np.ascontiguousarray(d) for d in deformed[i]]
                   for i in range(n)]
    n = len(classes)
    if n < 2:
        raise ValueError("need at least 2 classes")
    rng = np.random.default_rng([int(seed), 1])
    per_repeat, seconds = [], 0.0
    for _ in range(n_repeats):
        la, lp, ln = [], [], []
        for c in range(n):
            members = classes[c]
            i = 0 if anchor == "original" else int(rng.integers(0, len(members)))
            j = int(rng.integers(0, len(members) - 1))
            j = j + 1 if j >= i else j
            other = int(rng.integers(0, n - 1))
            other = other + 1 if other >= c else other
            k = int(rng.integers(0, len(classes[other])))
            la.append(members[i])
            lp.append(members[j])
            ln.append(classes[other][k])
        t0 = time.perf_counter()
        d = _distances(distance_fn, la + la, lp + ln)
        seconds += time.perf_counter() - t0
        per_repeat.append(triplet_accuracy(d[:n], d[n:]))
    return {
        "accuracy": float(np.mean(per_repeat)),
        "accuracy_std": float(np.std(per_repeat)),
        "per_repeat": [float(x) for x in per_repeat],
        "n_classes": n,
        "n_per_class": len(classes[0]),
        "paper_accuracy": PAPER_SYNTHETIC_ACCURACY,
        "seconds": seconds,
        "classes": classes,
    }
