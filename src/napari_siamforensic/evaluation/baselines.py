"""What research-integrity staff use today, as distances on image pairs (lower = more alike).

* :func:`phash_distance`: ``imagehash.phash`` (64-bit DCT hash), Hamming distance 0-64.
* :func:`phash_dihedral_distance`: the minimum over the 8 dihedral poses of ``b``, each
  as is and inverted (16 hashes), so flips, 90-degree turns and inversion cost nothing.
* :func:`orb_ransac_distance`: scikit-image ORB keypoints, cross-checked descriptor
  matches, and a RANSAC similarity transform; distance ``1 / (1 + inliers)``, so 1 means
  "no geometric match" (too few keypoints or matches count as no match, never as an error).

Each takes two equally long sequences of 2D images (any size) and returns
``(distances (N,) float64, seconds float)``: the wall time of the whole call, features
included. Features of an image that appears several times in one call (the same array
object) are computed once.
"""
from __future__ import annotations

import time
import warnings
from typing import Sequence

import numpy as np
from PIL import Image

from ._images import to_gray01

__all__ = ["phash_distance", "phash_dihedral_distance", "orb_ransac_distance", "BASELINES"]


def _pairs(images_a, images_b) -> tuple[list, list]:
    a, b = list(images_a), list(images_b)
    if len(a) != len(b):
        raise ValueError(f"`images_a` and `images_b` must be equally long, got {len(a)} and {len(b)}")
    return a, b


def _pil(a: np.ndarray) -> Image.Image:
    return Image.fromarray((np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8))


class _Cache:
    """Per-call feature cache keyed by object identity (objects stay alive during the call)."""

    def __init__(self, fn):
        self.fn, self.store = fn, {}

    def __call__(self, img):
        key = id(img)
        if key not in self.store:
            self.store[key] = (img, self.fn(img))  # keep img referenced: its id stays unique
        return self.store[key][1]


def _hash_bits(a: np.ndarray) -> np.ndarray:
    import imagehash

    return np.asarray(imagehash.phash(_pil(a)).hash, dtype=bool).reshape(-1)


def phash_distance(images_a: Sequence[np.ndarray], images_b: Sequence[np.ndarray]):
    """Hamming distance of ``imagehash.phash`` (0 = identical hash, 64 = all bits differ)."""
    t0 = time.perf_counter()
    a, b = _pairs(images_a, images_b)
    h = _Cache(lambda im: _hash_bits(to_gray01(im)))
    d = np.array([np.count_nonzero(h(x) != h(y)) for x, y in zip(a, b)], dtype=np.float64)
    return d, time.perf_counter() - t0


def _dihedral(a: np.ndarray):
    for k in range(4):
        r = np.rot90(a, k)
        yield r
        yield r[:, ::-1]


def phash_dihedral_distance(images_a: Sequence[np.ndarray], images_b: Sequence[np.ndarray]):
    """phash Hamming distance, minimised over the 8 dihedral poses of ``b``, inverted or not."""
    t0 = time.perf_counter()
    a, b = _pairs(images_a, images_b)
    ha = _Cache(lambda im: _hash_bits(to_gray01(im)))

    def poses(im):
        g = to_gray01(im)
        return np.stack([_hash_bits(p) for q in (g, 1.0 - g) for p in _dihedral(q)])  # (16, 64)

    hb = _Cache(poses)
    d = np.array([np.count_nonzero(hb(y) != ha(x)[None, :], axis=1).min() for x, y in zip(a, b)], dtype=np.float64)
    return d, time.perf_counter() - t0


_ORB_MIN_SIDE = 64


def _orb_features(img, n_keypoints: int):
    """(keypoints (K, 2), descriptors (K, 256) bool) or None when ORB finds too little."""
    from skimage.feature import ORB

    a = to_gray01(img)
    scale = 1.0
    if min(a.shape) < _ORB_MIN_SIDE:  # ORB's 31 px patches need some room
        scale = _ORB_MIN_SIDE / min(a.shape)
        a = np.asarray(Image.fromarray(a).resize((round(a.shape[1] * scale), round(a.shape[0] * scale)),
                                                 Image.BICUBIC), dtype=np.float32)
    orb = ORB(n_keypoints=n_keypoints, fast_threshold=0.05)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            orb.detect_and_extract(a)
    except (RuntimeError, ValueError, IndexError):
        return None
    if orb.descriptors is None or len(orb.descriptors) < 3:
        return None
    return orb.keypoints / scale, orb.descriptors


def _inliers(fa, fb, seed: int, residual_threshold: float) -> int:
    from skimage.feature import match_descriptors
    from skimage.measure import ransac
    from skimage.transform import SimilarityTransform

    if fa is None or fb is None:
        return 0
    matches = match_descriptors(fa[1], fb[1], cross_check=True, max_ratio=0.8)
    if len(matches) < 3:
        return 0
    src = fa[0][matches[:, 0]][:, ::-1]  # (row, col) -> (x, y)
    dst = fb[0][matches[:, 1]][:, ::-1]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, inliers = ransac((src, dst), SimilarityTransform, min_samples=3,
                                    residual_threshold=residual_threshold, max_trials=500, rng=seed)
    except (RuntimeError, ValueError, np.linalg.LinAlgError):
        return 0
    if model is None or inliers is None:
        return 0
    return int(np.count_nonzero(inliers))


def orb_ransac_distance(images_a: Sequence[np.ndarray], images_b: Sequence[np.ndarray], *,
                        n_keypoints: int = 300, residual_threshold: float = 3.0, seed: int = 0):
    """``1 / (1 + RANSAC inliers)`` of ORB matches under a similarity transform (1 = no match)."""
    t0 = time.perf_counter()
    a, b = _pairs(images_a, images_b)
    feats = _Cache(lambda im: _orb_features(im, n_keypoints))
    d = np.array([1.0 / (1.0 + _inliers(feats(x), feats(y), seed, residual_threshold)) for x, y in zip(a, b)],
                 dtype=np.float64)
    return d, time.perf_counter() - t0


#: The baselines of the evaluation, by report name.
BASELINES = {
    "phash": phash_distance,
    "phash_dihedral": phash_dihedral_distance,
    "orb_ransac": orb_ransac_distance,
}
