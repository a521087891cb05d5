"""The screen's pixel check of candidate pairs.

The check itself lives in :mod:`napari_siamforensic.core.pixels` (``ForensicModel.distance``
uses it too); this module names it for the screen and puts a matched pair's relation in words.
"""
from __future__ import annotations

import math

import numpy as np

from ..core.pixels import FIRST_PASS_THRESHOLD, GATED_MATCH, MATCH_THRESHOLD, PixelChecker, PixelMatch, pair_match
from .localize import decompose, describe, pose_linear


def add_words(words: str, more: str) -> str:
    """A transform in words with ``more`` appended ("identity" gives way to it)."""
    return more if words == "identity" else f"{words}, {more}"


def match_transform(match: PixelMatch, r: int) -> str:
    """Pair ``r``'s transform a -> b in words ("mirrored, rotated 90° cw, scale 0.80"), the
    small rotation of the check's rotation stage included ("rotated 8° ccw"), and the stretch
    stage's change of aspect ratio ("aspect x1.43": b is 1.43 times as wide, for its height,
    as a), and "shared region" where the overlap stage matched a region the two share (neither
    holds the other)."""
    pose, of_b = int(match.pose[r]), bool(match.of_b[r])
    angle = float(match.angle[r]) if match.angle is not None else 0.0
    mirror_a = bool(match.mirror_a[r]) if match.mirror_a is not None else False
    # a -> a' (mirrored, then turned counter-clockwise as displayed), then the pose a' -> b;
    # 2 x 2 maps of (x, y) with y down, as localize.decompose reads them
    u = math.radians(angle)
    pre = np.array([[math.cos(u), math.sin(u)], [-math.sin(u), math.cos(u)]])
    pre = pre @ np.diag([-1.0, 1.0]) if mirror_a else pre
    mirrored, cw, _ = decompose(pose_linear(pose, of_b) @ pre)
    words = describe(mirrored, cw, float(match.scale[r]), pose >= 8)
    stretch = float(match.stretch[r]) if match.stretch is not None else 1.0
    if abs(math.log(max(stretch, 1e-6))) >= math.log(1.05):      # the stretch stage's aspect change
        words = add_words(words, f"aspect x{stretch:.2f}")
    if match.overlap is not None and bool(match.overlap[r]):
        words = add_words(words, "shared region")
    return words


__all__ = ["FIRST_PASS_THRESHOLD", "GATED_MATCH", "MATCH_THRESHOLD", "PixelChecker", "PixelMatch", "add_words", "match_transform", "pair_match"]
