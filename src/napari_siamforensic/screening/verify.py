"""The screen's pixel check of candidate pairs.

The check itself lives in :mod:`napari_siamforensic.core.pixels` (``ForensicModel.distance``
uses it too); this module names it for the screen and puts a matched pair's relation in words.
"""
from __future__ import annotations

from ..core.pixels import MATCH_THRESHOLD, PixelChecker, PixelMatch, pair_match
from .localize import describe, pose_match


def match_transform(match: PixelMatch, r: int) -> str:
    """Pair ``r``'s transform a -> b in words ("mirrored, rotated 90° cw, scale 0.80")."""
    m = pose_match((1, 1), (1, 1), int(match.pose[r]), bool(match.of_b[r]))
    return describe(m.mirrored, m.rotation_deg, float(match.scale[r]), m.inverted)


__all__ = ["MATCH_THRESHOLD", "PixelChecker", "PixelMatch", "match_transform", "pair_match"]
