"""Where two images match, and the transform between them.

ORB keypoints (scikit-image) matched between image a and each of four variants of image b
(as it is, mirrored, inverted, both: ORB is rotation-invariant but not mirror- or
contrast-inversion-invariant), each verified with RANSAC on a similarity transform (rotation,
uniform scale, translation). The variant with the most inliers wins; the matched regions are
the parts of each frame that the transform maps into the other frame (so a copy that is a
crop of a larger panel gets the crop's box in the panel and its whole frame in the copy).

When no variant has enough inliers (flat or heavily blurred images), the best pose from the
embeddings is reported with whole-frame boxes and ``method="pose"``.
Measured accuracy: see docs/screening.md (IoU against planted regions).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..core.data import normalise_intensity

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Match:
    """Matched regions of a pair and the transform a -> b.

    ``box_a``, ``box_b``: ``(x0, y0, x1, y1)`` in each image's pixels. ``matrix``: 3 x 3
    homogeneous map of (x, y) in a to (x, y) in b. ``transform``: in words.
    ``inliers``: RANSAC inliers (0 for ``method="pose"``). ``inverted``: contrast inverted.
    """

    box_a: Box
    box_b: Box
    transform: str
    matrix: tuple = field(default=((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)))
    mirrored: bool = False
    rotation_deg: float = 0.0
    scale: float = 1.0
    inverted: bool = False
    inliers: int = 0
    method: str = "orb-ransac"


def describe(mirrored: bool, rotation_deg: float, scale: float, inverted: bool) -> str:
    """Words for a transform: ``"mirrored, rotated 90° cw, scale 0.50, inverted"``."""
    parts = []
    if mirrored:
        parts.append("mirrored")
    rot = ((rotation_deg + 180.0) % 360.0) - 180.0
    right = 90.0 * round(rot / 90.0)
    if abs(rot - right) <= 1.5:     # keypoint estimates of quarter turns land within a degree
        rot = right
    if abs(abs(rot) - 180.0) < 0.5:
        parts.append("rotated 180°")
    elif abs(rot) >= 2.0:
        parts.append(f"rotated {abs(rot):.0f}° {'cw' if rot > 0 else 'ccw'}")
    if abs(math.log(max(scale, 1e-6))) >= math.log(1.05):
        parts.append(f"scale {scale:.2f}")
    if inverted:
        parts.append("inverted")
    return ", ".join(parts) if parts else "identity"


def decompose(linear: np.ndarray) -> tuple[bool, float, float]:
    """2 x 2 linear part (x, y; y down) -> (mirrored, clockwise rotation in degrees, scale)."""
    mirrored = bool(np.linalg.det(linear) < 0)
    m = linear @ np.diag([-1.0, 1.0]) if mirrored else linear
    scale = float(math.sqrt(abs(np.linalg.det(m))))
    rot = math.degrees(math.atan2(m[1, 0], m[0, 0]))
    return mirrored, rot, scale


def _project_box(matrix: np.ndarray, shape_src, shape_dst) -> Box | None:
    """Bounding box of the source frame mapped by ``matrix``, clipped to the destination."""
    h, w = shape_src
    corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], float).T
    p = matrix @ corners
    p = p[:2] / p[2:]
    x0, y0 = np.clip(p.min(1), 0, [shape_dst[1], shape_dst[0]])
    x1, y1 = np.clip(p.max(1), 0, [shape_dst[1], shape_dst[0]])
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None
    return int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1))


def pose_linear(pose: int = 0, pose_of_b: bool = True) -> np.ndarray:
    """The 2 x 2 map a -> b (x, y; y down) of a dihedral pose index (0-15, the order of
    :func:`~napari_siamforensic.core.scoring.pose_stack`; inversion is not a map of the plane)."""
    flip, rot = (pose % 8) >= 4, pose % 4
    # pose_stack flips left-right first, then turns k times by 90 degrees counter-clockwise
    # (as displayed). In (x, y) with y down, a counter-clockwise quarter turn is [[0, 1], [-1, 0]].
    turn = np.linalg.matrix_power(np.array([[0.0, 1.0], [-1.0, 0.0]]), rot)
    p = turn @ (np.diag([-1.0, 1.0]) if flip else np.eye(2))
    return np.linalg.inv(p) if pose_of_b else p     # the pose maps b onto a, or a onto b


def pose_match(shape_a, shape_b, pose: int = 0, pose_of_b: bool = True) -> Match:
    """Whole-frame boxes and the transform of a dihedral/inversion pose index (0-15, the order
    of :func:`~napari_siamforensic.core.scoring.pose_stack`)."""
    inv = pose >= 8
    mirrored, cw, _ = decompose(pose_linear(pose, pose_of_b))
    return Match((0, 0, int(shape_a[1]), int(shape_a[0])), (0, 0, int(shape_b[1]), int(shape_b[0])),
                 describe(mirrored, cw, 1.0, bool(inv)), mirrored=mirrored, rotation_deg=cw,
                 inverted=bool(inv), method="pose")


def _prepare(img: np.ndarray, max_side: int, min_side: int) -> tuple[np.ndarray, float]:
    from skimage.transform import rescale

    g = normalise_intensity(np.asarray(img, np.float32))
    s = 1.0
    side = max(g.shape)
    if side > max_side:
        s = max_side / side
    elif min(g.shape) < min_side:
        s = min_side / min(g.shape)
    if s != 1.0:
        g = rescale(g, s, anti_aliasing=s < 1, preserve_range=True).astype(np.float32)
    return g, s


def _orb(img: np.ndarray, n_keypoints: int):
    from skimage.feature import ORB

    orb = ORB(n_keypoints=n_keypoints, fast_threshold=0.03, downscale=1.3, n_scales=6)
    try:
        orb.detect_and_extract(img)
    except (RuntimeError, ValueError, IndexError):
        return None
    if len(orb.keypoints) < 4:
        return None
    return orb.keypoints[:, ::-1].astype(float), orb.descriptors   # (x, y)


class Localizer:
    """Keypoint localisation with a per-item feature cache (an item appears in many pairs).

    ``key``s name images (item ids in a screen); ``None`` keys are not cached.
    """

    VARIANTS = ((False, False), (True, False), (False, True), (True, True))   # (mirrored, inverted)

    def __init__(self, *, n_keypoints: int = 400, min_inliers: int = 8, max_side: int = 512,
                 seed: int = 0, cache_size: int = 512):
        self.n_keypoints, self.min_inliers, self.max_side = n_keypoints, min_inliers, max_side
        self.seed, self.cache_size = seed, cache_size
        self._prepared: dict = {}
        self._features: dict = {}

    def _prep(self, key, image):
        if key is not None and key in self._prepared:
            return self._prepared[key]
        out = _prepare(np.asarray(image, np.float32), self.max_side, 128)
        if key is not None:
            if len(self._prepared) >= self.cache_size:
                self._prepared.clear()
                self._features.clear()
            self._prepared[key] = out
        return out

    def _feat(self, key, gray, variant):
        ck = (key, variant)
        if key is not None and ck in self._features:
            return self._features[ck]
        mirrored, inverted = variant
        v = gray[:, ::-1] if mirrored else gray
        v = 1.0 - v if inverted else v
        f = _orb(np.ascontiguousarray(v), self.n_keypoints)
        if key is not None:
            self._features[ck] = f
        return f

    def __call__(self, image_a, image_b, *, key_a=None, key_b=None, pose_hint: int | None = None,
                 pose_of_b: bool = True) -> Match:
        from skimage.feature import match_descriptors
        from skimage.measure import ransac
        from skimage.transform import SimilarityTransform

        shape_a, shape_b = np.shape(image_a)[:2], np.shape(image_b)[:2]
        ga, sa = self._prep(key_a, image_a)
        gb, sb = self._prep(key_b, image_b)
        fa = self._feat(key_a, ga, (False, False))
        variants = list(self.VARIANTS)
        if pose_hint is not None:
            hint = (bool((pose_hint % 8) >= 4), bool(pose_hint >= 8))
            variants.remove(hint)
            variants.insert(0, hint)
        best = None
        rng = np.random.default_rng(self.seed)
        if fa is not None:
            for variant in variants:
                fb = self._feat(key_b, gb, variant)
                if fb is None:
                    continue
                m = match_descriptors(fa[1], fb[1], cross_check=True, max_ratio=0.85)
                if len(m) < self.min_inliers:
                    continue
                src, dst = fa[0][m[:, 0]], fb[0][m[:, 1]]
                try:
                    model, inl = ransac((src, dst), SimilarityTransform, min_samples=2,
                                        residual_threshold=3.0, max_trials=200, rng=rng)
                except Exception:
                    continue
                if model is None or inl is None:
                    continue
                count = int(inl.sum())
                if best is None or count > best[0]:
                    best = (count, variant[0], variant[1], np.asarray(model.params))
                if count >= 4 * self.min_inliers:
                    break
        if best is None or best[0] < self.min_inliers:
            return pose_match(shape_a, shape_b, pose_hint or 0, pose_of_b)
        count, mirrored, inverted, t = best
        # full-resolution map a -> b: undo a's scaling, t (a -> variant of b), un-mirror, undo b's scaling
        to_a = np.diag([sa, sa, 1.0])
        unmirror = np.array([[-1.0, 0.0, gb.shape[1]], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) if mirrored else np.eye(3)
        from_b = np.diag([1.0 / sb, 1.0 / sb, 1.0])
        full = from_b @ unmirror @ t @ to_a
        box_b = _project_box(full, shape_a, shape_b)
        try:
            box_a = _project_box(np.linalg.inv(full), shape_b, shape_a)
        except np.linalg.LinAlgError:
            box_a = None
        if box_a is None or box_b is None:
            return pose_match(shape_a, shape_b, pose_hint or 0, pose_of_b)
        mir, rot, scale = decompose(full[:2, :2])
        return Match(box_a, box_b, describe(mir, rot, scale, inverted), tuple(map(tuple, full.tolist())),
                     mirrored=mir, rotation_deg=rot, scale=scale, inverted=inverted, inliers=count)


def localize(image_a: np.ndarray, image_b: np.ndarray, *, pose_hint: int | None = None,
             pose_of_b: bool = True, n_keypoints: int = 400, min_inliers: int = 8,
             max_side: int = 512, seed: int = 0) -> Match:
    """The regions two images share and the transform from a to b.

    Parameters
    ----------
    image_a, image_b : (H, W) arrays, any dtype
    pose_hint : int, optional
        Pose index (0-15) that the embeddings found best; tried first, and used when
        keypoints fail.
    pose_of_b : bool
        Whether ``pose_hint`` is a pose of b (turning b into a) or of a.
    n_keypoints, min_inliers : ORB keypoints per image; fewest RANSAC inliers to trust.
    max_side : images are scaled down to at most this side for keypoints (boxes are returned
        in the original pixels).
    seed : RANSAC's random seed (results replay exactly).

    Returns
    -------
    Match
    """
    return Localizer(n_keypoints=n_keypoints, min_inliers=min_inliers, max_side=max_side, seed=seed)(
        image_a, image_b, pose_hint=pose_hint, pose_of_b=pose_of_b)


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two ``(x0, y0, x1, y1)`` boxes."""
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


__all__ = ["Match", "Localizer", "localize", "pose_match", "pose_linear", "describe", "decompose", "box_iou"]
