"""Pixel check of image pairs: normalised cross-correlation of band-passed thumbnails.

Used by the screen on every candidate pair (``screening``) and by
:meth:`~napari_siamforensic.core.scoring.ForensicModel.distance`, which adds it to f
(``ForensicModel.pixel_check``).

The embedding finds candidates; on corpora of panels of one kind (textures, cell fields) it
also finds many different images that merely look alike, and its distance ranks them close to
the real copies (the embedding's best pose is often wrong there too). A re-used image is the
same pixels, so the check asks for that directly:

* each item becomes a **check thumbnail**: gray, its longer side resized to ``SIDE`` (64) px,
  rank-equalised (ninth session: erased rectangles and levels changes no longer dominate),
  band-passed (a difference of Gaussians, sigma 0.7 and 3 px), which takes out the smooth
  shading and the pixel noise that make different images of one texture correlate; and a
  ``COARSE`` (32) px one made the same way;
* the smaller picture is slid over the other at each relative size of ``SCALES`` (a copy may
  be a crop of the other, down to half its side), in both directions, in each of the 8 flips
  and quarter turns of the larger, and the normalised cross-correlation (NCC) is computed at
  every offset at once by FFT; ``|NCC|`` because an inverted copy correlates at -1. This runs
  on the coarse thumbnails; the best direction and pose is then measured again on the 64 px
  ones (both directions where the pictures are about the same);
* ``match`` is that best ``|NCC|``; its offset and size give the matched region in both
  images, its pose, size and sign the transform.

Pairs that score from 0.5 on are measured once more at sizes 3 % apart around the best
(``REFINE``; ``SCALES`` are 10 % apart), for a truer scale and region.

**Strips, and pairs with nothing to compare** (twelfth session). A template must hold the area
of ``MIN_TEMPLATE`` x ``MIN_TEMPLATE`` (12 x 12) px of the 64 px thumbnail and be
``MIN_TEMPLATE_SIDE`` (6) px across, a coarse px counting as two, so a strip such as a blot's
lane (64 x 9 px on its thumbnail) is checked like any panel. A pair where no template fits
anywhere (an unreadable or flat picture, or one more than about 10 times as wide as high)
scores NaN: no evidence either way, and ``ForensicModel.fuse`` keeps its f.

**Lines: what is constant along rows or columns is not evidence** (fourteenth session). Two
regions of one western blot that share no pixel line their bands up at the same heights, and
every lane's bands are the same along the lane's width: the two correlate, lane for lane, by
their rows alone (before this rule 0.49-0.79 on generated blots, where real cropped copies
matched 0.83-0.87; ``benchmarks/pixel_check.py``). So every correlation the check measures (at
each stage's best offset) is capped by how well the two aligned windows still correlate after
each row's mean is taken out of both, and after each column's mean is (the smaller of the two;
:func:`_beyond_lines`). A copy keeps its match: its lanes differ from one another, and its
pixels beyond the lines are the same. Different lanes have nothing left (0.28-0.57). On ordinary
pictures a row's or a column's mean of a band-passed thumbnail is small, so the cap hardly
moves their score. ``PixelChecker(structure=False)`` turns it off. Not covered: stripes at
other angles (oriented fibres), whose lines are not rows or columns.

**Small templates count less** (fifteenth session). The correlation of two unrelated pictures
over N px spreads as one over the square root of N (its Fisher z), so a small template (a
strip's, or a picture cut down by the rotation stage or shrunk to half its size) matches a
window of another picture by chance more than a full one does: before this rule a crop holding
one nucleus matched another nuclei picture at 0.72, and an unrelated pair of the calibration
screen 0.56. Below ``TEMPLATE_FULL_AREA`` (1,024 px of the 64 px thumbnail: a square
picture at half its size) a template's ``|NCC|`` r counts as ``tanh(atanh(r) sqrt(area /
TEMPLATE_FULL_AREA))``, applied to every template before the best is chosen (the overlap
stage's rule, for whole pictures; :func:`_small_discount`). A square picture's templates at
sizes 0.5 to 1 are not touched; a picture twice as wide as high from size 0.7 down is. The
area was chosen on calibration data only (``training/calibrate_default.py``'s pairs and a
screen of 3,000 panels from seed 20,000,500; model card, *Fifteenth session*).
``PixelChecker(template_full_area=None)`` turns it off.

**Stretched copies** (twelfth session). A panel resized without keeping its aspect ratio (to
fit a figure's layout cell) matches no template of its own aspect. Where b in one of the 8
poses has an aspect ratio ``STRETCH_RANGE`` (1.05 to 2 times) away from a's, a's thumbnail is
resized to b's posed one and the two are correlated whole against whole (one offset, so
different pictures stay low); the better of this and the other stages is kept, and
``PixelMatch.stretch`` says how the aspect changed. A stretched copy that is also cropped is
not covered.

**Overlapping views** (thirteenth session). Two panels cut from one larger picture that share
a region, neither holding the other (overlapping fields of view: a classic finding of image
integrity work), match no template: each template is a whole picture. The overlap stage keeps
the larger picture's thumbnail (larger in its own pixels), resizes the other to the same pixel
size (the two are assumed to show their pixels at one scale), and computes the NCC *over the
shared region only* at every offset where the two share at least ``OVERLAP_MIN_FRACTION`` (a
quarter) of the smaller picture, in each of the 8 poses of the larger: on the coarse
thumbnails, then at 64 px in the best pose near the best offset. Smaller regions correlate more
by chance (their Fisher z spreads as one over the square root of their pixels), so below
``OVERLAP_FULL_AREA`` (half of a 64 x 64 thumbnail) a region's ``|NCC|`` r counts as
``tanh(atanh(r) sqrt(area / OVERLAP_FULL_AREA))``. Its score counts only from
``MATCH_THRESHOLD`` on (below, it is mostly chance over the many offsets tried, and the fused
distance would read it as evidence), and only where its best offset is unique
(``OVERLAP_UNIQUE``): repeated structure, a gel's or a blot's lanes, matches another region of
the same picture at a shifted offset, and at several. **Off by default** (``overlap=True``
turns it on; ``screen(..., overlap=True)``, ``siamforensic screen --overlap``): the uniqueness
rule was fitted on the 8 calibration hard negatives it removes (two regions of one generated
blot, gel or cell field sharing at most a tenth, verified at a shifted offset without it), which
is thin evidence against a false "shared region", and ``ForensicModel.distance``, whose
calibration and figures are fitted without the stage, does not use it. ``PixelMatch.overlap`` marks the pairs it matched;
their boxes are the shared region in each. Views at different scales are not covered,
nor are regions under a quarter of the smaller picture (the re-use set's hard negatives, two
regions of one parent, share at most a tenth).

**Small rotations** (tenth session). A copy turned by a few degrees no longer correlates at
64 px (its corners move by pixels). The angle between two pictures is read off their power
spectra: a rotation turns the spectrum by the same angle, whatever the scale or offset (and
about so after a moderate crop), so the *angular profile* of each check thumbnail's spectrum
(summed over radius) is shifted by it. The circular correlation of the two profiles (and of
one profile mirrored) gives the angle modulo 90 degrees (quarter turns are searched anyway);
where it is between ``ROTATION_RANGE`` (1.5 and 20 degrees, either way) and the profiles fit
well enough (``ROTATION_MIN_STRENGTH``, a correlation of 0.6: the turned copies of the
calibration pairs fitted at 0.84 or more, pairs of different pictures mostly less), the first
picture is turned by it (mirrored first if the mirrored profile fitted better), cut to the
largest upright rectangle inside, and checked against the second once more, every pose and
size as above; the better of the two checks is kept. It is one more hypothesis per pair, set
by the spectra rather than searched for the best correlation, so different pictures gain
little from it. On the calibration pairs of ``training/calibrate_default.py`` (never the test
set; a prototype of this stage) the 16 turned copies had their angle read to within 2 degrees
in 15 cases and matched 0.59-0.99 instead of 0.21-0.66, unrelated pairs' mean match went
0.220 -> 0.227; with this code the fused decision on the report half went 0.948 -> 0.958.
On the screen's candidate pairs the stage makes the check about 1.5-1.7x as long.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from .._validation import check_positive_int
from .scoring import pose_inverse

SIDE = 64
COARSE = 32
SCALES = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)
COARSE_SCALES = (1.0, 0.8, 0.6)
FIRST_PASS_SCALES = (1.0, 0.9, 0.8, 0.7, 0.6)   # PixelChecker.first_pass: sizes 10 % apart (at 20 % apart a
#                                               fine texture's copy of 0.7 the size scored 0.46, at 10 % 0.74)
REFINE = (0.94, 0.97, 1.0, 1.03, 1.06)
MATCH_THRESHOLD = 0.6
FIRST_PASS_THRESHOLD = 0.5     # PixelChecker.first_pass: the screen's wider search keeps pairs from here on
# sf.screen(gate_nearest=True): a nearest pair the first pass stops is fused as if the full check had
# given it this, the median of what it gives such pairs (0.203 over the 26,688 nearest pairs the first
# pass stopped among the 3,000 panels of a calibration corpus, seed 20,000,500; the first pass's own
# score hardly predicts it: correlation 0.12, medians 0.19-0.21 from first-pass 0.2 to 0.5)
GATED_MATCH = 0.2
MIN_TEMPLATE = 12          # a template needs the area of 12 x 12 px of the 64 px check thumbnail ...
MIN_TEMPLATE_SIDE = 6      # ... and 6 px on its shorter side: smaller ones correlate by chance
STRETCH_RANGE = (1.05, 2.0)    # aspect-ratio changes (either way) the stretch stage tries
ROTATION_RANGE = (1.5, 20.0)   # degrees: the small rotations the check turns a picture by
ROTATION_MIN_STRENGTH = 0.6    # ... where the two angular profiles correlate at least this well
OVERLAP_MIN_FRACTION = 0.25   # the overlap stage: a shared region of at least this share of the smaller picture
OVERLAP_FULL_AREA = 2048.0     # ... whose |NCC| counts in full from this area (64 px units) on, less below
TEMPLATE_FULL_AREA = 1024.0    # a whole-picture template's |NCC| counts in full from this area (64 px units) on
OVERLAP_REFINE = 3             # fine px around the coarse stage's offset the fine stage searches
OVERLAP_UNIQUE = (3, 0.35)     # its best coarse offset must beat every other offset of its pose more than
#                                3 coarse px away by 0.35 in Fisher z (atanh): repeated structure (a
#                                gel's lanes) matches at many offsets, a real shared region at one
_PROFILE_BINS = 180            # angular profile of a thumbnail's power spectrum, 1 degree bins
_PROFILE_RADII = np.arange(3.0, 30.5, 0.5)   # spectrum radii (cycles per 64 px) summed into it


def check_thumbnail(image: np.ndarray, side: int = SIDE) -> np.ndarray:
    """The check thumbnail of a gray image: ``(h, w)`` float32 with ``max(h, w) == side``,
    rank-equalised and band-passed (difference of Gaussians, sigma 0.7 and 3 px). Its
    intensity scale does not matter: the correlation is normalised."""
    g = np.asarray(image, np.float32)
    if g.ndim != 2:
        raise ValueError(f"check_thumbnail needs a 2D gray image, got shape {g.shape}")
    return _band_pass(_to_side(g, side))


def _to_side(g: np.ndarray, side: int) -> np.ndarray:
    from PIL import Image

    h, w = g.shape
    s = side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    resample = Image.Resampling.BOX if s < 1 else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(np.ascontiguousarray(g, np.float32)).resize(size, resample), np.float32)


def _band_pass(t: np.ndarray) -> np.ndarray:
    """Rank-equalise (equal values keep one rank, so flat stays flat), then a difference of
    Gaussians. Equalising first makes the check blind to levels and gamma, and keeps the sharp
    edges of an erased or pasted rectangle (black or white on a dim picture) from outweighing
    the picture itself."""
    return _dog(_equalise(t))


def _equalise(t: np.ndarray) -> np.ndarray:
    """Pixel ranks scaled to [0, 1] (average ranks for ties)."""
    from scipy.stats import rankdata

    t = np.asarray(t, np.float32)
    if t.size > 1:
        t = ((rankdata(t, method="average").reshape(t.shape) - 1.0) / (t.size - 1)).astype(np.float32)
    return t


def _dog(t: np.ndarray) -> np.ndarray:
    from scipy import ndimage as ndi

    return (ndi.gaussian_filter(t, 0.7) - ndi.gaussian_filter(t, 3.0)).astype(np.float32)


def angular_profile(thumb: np.ndarray, side: int = SIDE) -> np.ndarray:
    """``(_PROFILE_BINS,)``: the power spectrum of a check thumbnail (Hann-windowed, in a
    ``side`` x ``side`` frame) summed over radius at each angle from 0 to 179 degrees
    (counter-clockwise), log-compressed, zero-mean and unit-norm (all zero for a flat picture).
    Turning the picture by ``t`` degrees shifts it by ``t`` bins; a change of scale, a quarter
    turn (90 bins) and a moderate crop leave it about the same. A crop to about half the side
    of a picture that is not the same all over (a few fibres, a blot's bands) can change it
    enough to give a wrong angle; the stage then finds nothing and the plain check stands."""
    from scipy import ndimage as ndi

    t = np.asarray(thumb, np.float64)
    h, w = t.shape
    frame = np.zeros((side, side))
    frame[:h, :w] = (t - t.mean()) * np.outer(np.hanning(h), np.hanning(w))
    power = np.fft.fftshift(np.abs(np.fft.fft2(frame)) ** 2)
    phi = np.deg2rad(np.arange(_PROFILE_BINS) * 180.0 / _PROFILE_BINS)
    radii = _PROFILE_RADII * (side / 64.0)
    c = side // 2
    v = ndi.map_coordinates(power, [c - radii[:, None] * np.sin(phi), c + radii[:, None] * np.cos(phi)], order=1)
    mean = v.mean()
    if not mean > 1e-12:
        return np.zeros(_PROFILE_BINS)
    p = np.log1p(v / mean).sum(0)
    p -= p.mean()
    norm = np.linalg.norm(p)
    return p / norm if norm > 1e-9 else np.zeros(_PROFILE_BINS)


def estimate_rotation(profile_a: np.ndarray, profile_b: np.ndarray) -> tuple[bool, float, float]:
    """``(mirror, angle, strength)``: b looks like a (mirrored left-right first where ``mirror``)
    turned ``angle`` degrees counter-clockwise, in (-45, 45] (modulo quarter turns), by the
    circular correlation of the two :func:`angular_profile` s; ``strength`` is that correlation
    at its peak (1: the same profile). Arrays of profiles ``(n, bins)`` give arrays."""
    pa, pb = np.atleast_2d(profile_a), np.atleast_2d(profile_b)
    bins = pa.shape[1]
    fb = np.fft.fft(pb, axis=1)
    best_val = best_shift = None
    best_mirror = np.zeros(len(pa), bool)
    for mirror in (False, True):
        q = pa[:, (-np.arange(bins)) % bins] if mirror else pa      # mirrored: angle -> -angle
        cc = np.real(np.fft.ifft(fb * np.conj(np.fft.fft(q, axis=1)), axis=1))   # cc[s] = sum pb[x] q[x - s]
        shift, val = cc.argmax(1), cc.max(1)
        if best_val is None:
            best_val, best_shift = val, shift
        else:
            better = val > best_val
            best_val, best_shift = np.where(better, val, best_val), np.where(better, shift, best_shift)
            best_mirror = better
    angle = best_shift * (180.0 / bins)
    angle = 45.0 - ((45.0 - angle) % 90.0)                  # to (-45, 45]
    if np.ndim(profile_a) == 1:
        return bool(best_mirror[0]), float(angle[0]), float(best_val[0])
    return best_mirror, angle, best_val


def _inscribed(h: int, w: int, angle_deg: float) -> tuple[int, int]:
    """The largest upright rectangle ``(height, width)`` inside an ``h`` x ``w`` one turned by
    ``angle_deg`` about its centre. (``evaluation.reuse`` has its own for the test set's small
    rotations on purpose: the test set's manipulations are kept apart from the product's code,
    so that a mistake here cannot hide itself in the figures.)"""
    a = np.deg2rad(abs(angle_deg) % 180.0)
    if a > np.pi / 2:
        a = np.pi - a
    sn, cs = np.sin(a), np.cos(a)
    if sn < 1e-9:
        return h, w
    long, short = (w, h) if w >= h else (h, w)
    if short <= 2.0 * sn * cs * long or abs(sn - cs) < 1e-9:
        x = 0.5 * short
        wr, hr = (x / sn, x / cs) if w >= h else (x / cs, x / sn)
    else:
        c2 = cs * cs - sn * sn
        wr, hr = (w * cs - h * sn) / c2, (h * cs - w * sn) / c2
    return max(0, min(h, int(hr))), max(0, min(w, int(wr)))


def _dihedral(x: np.ndarray, pose: int) -> np.ndarray:
    """Pose ``pose`` (0-15; inversion ignored) as :func:`~napari_siamforensic.core.scoring.pose_stack`
    makes it: mirror left-right for 4-7, then ``pose % 4`` counter-clockwise quarter turns."""
    p = int(pose) % 8
    return np.rot90(x[:, ::-1] if p >= 4 else x, p % 4)


def _resized(t: np.ndarray, c: float) -> np.ndarray:
    if c == 1.0:
        return t
    from PIL import Image

    h, w = t.shape
    size = (max(1, round(w * c)), max(1, round(h * c)))
    return np.asarray(Image.fromarray(np.ascontiguousarray(t, np.float32)).resize(size, Image.Resampling.BOX),
                      np.float32)


@dataclass
class PixelMatch:
    """Per pair: ``score`` (best ``|NCC|``, capped by the line rule; NaN where nothing could be
    compared: an unreadable item, a flat one, or one too thin for any template, under
    ``MIN_TEMPLATE_SIDE`` px of its check thumbnail across), and the matched box in each
    image's own pixels ``(x0, y0, x1, y1)`` (None where nothing matched). ``compared``: False where ``score`` is
    NaN. A NaN score is no evidence either way: ``ForensicModel.fuse`` leaves f alone there.
    (Before the twelfth session such pairs scored 0, and the fused distance counted them as
    pixels that differ.)"""

    score: np.ndarray
    box_a: list
    box_b: list
    pose: np.ndarray = None       # the relation, in the terms of ``localize.pose_match``:
    of_b: np.ndarray = None       # pose ``pose`` of b matches a (True) or of a matches b
    scale: np.ndarray = None      # size of a's content in b / in a (pixels of b per pixel of a)
    rel: np.ndarray = None        # the template's size relative to its check thumbnail
    angle: np.ndarray = None      # degrees counter-clockwise a was turned by (after mirroring it
    mirror_a: np.ndarray = None   # left-right where ``mirror_a``) before ``pose`` relates it to b
    compared: np.ndarray = None   # a template fitted somewhere: False where ``score`` is NaN
    stretch: np.ndarray = None    # b's aspect ratio (width / height, in pose ``pose``) over a's: 1
    #                               but where the stretch stage matched the whole pictures
    overlap: np.ndarray = None    # the overlap stage matched: a and b share a region, neither
    #                               holds the other (the boxes are the shared region in each)

    @classmethod
    def empty(cls, m: int) -> "PixelMatch":
        """``m`` pairs not compared (yet): score 0 (the checker's starting point; NaN once a
        check is done and nothing could be compared), no boxes, identity relation."""
        return cls(np.zeros(m, np.float32), [None] * m, [None] * m, np.zeros(m, np.int64), np.ones(m, bool),
                   np.ones(m, np.float64), np.ones(m, np.float64), np.zeros(m, np.float64), np.zeros(m, bool),
                   np.zeros(m, bool), np.ones(m, np.float64), np.zeros(m, bool))

    @classmethod
    def concat(cls, parts: list["PixelMatch"]) -> "PixelMatch":
        """Consecutive runs of pairs as one."""
        out = cls.empty(0)
        for name in ("score", "pose", "of_b", "scale", "rel", "angle", "mirror_a", "compared", "stretch", "overlap"):
            setattr(out, name, np.concatenate([getattr(p, name) for p in parts] or [getattr(out, name)]))
        out.box_a = [x for p in parts for x in p.box_a]
        out.box_b = [x for p in parts for x in p.box_b]
        return out


class PixelChecker:
    """Scores pairs of items by the correlation of their check thumbnails (see the module's
    doc). Thumbnails are made once per item from ``image_of(i)`` (an array, or None when the
    item cannot be read).

    Two stages: every pose (8: flips and quarter turns; inversion by ``|NCC|``), both
    directions and every scale of ``scales`` on ``coarse``-px thumbnails; then the best of
    those again on ``side``-px thumbnails, which gives the score and the boxes. ``rotations``,
    ``stretch`` and ``overlap`` switch the small-rotation, stretch and overlap stages (the
    last off by default); ``structure`` the line rule (on by default: each score is at most
    the correlation beyond the rows' and the columns' means, see the module's doc);
    ``template_full_area`` the small-template discount (px of the 64 px thumbnail from which a
    template's correlation counts in full; None: no discount). ``cache_items`` and
    ``first_pass_cache`` bound what is kept per item (see :meth:`_prepared` and
    :meth:`iter_first_pass`)."""

    def __init__(self, image_of, *, side: int = SIDE, coarse: int = COARSE, scales=SCALES,
                 coarse_scales=COARSE_SCALES, block: int = 128, cache_items: int = 512,
                 first_pass_cache: int = 16384,
                 refine_from: float = 0.5, rotations: bool = True, stretch: bool = True,
                 overlap: bool = False, structure: bool = True,
                 template_full_area: float | None = TEMPLATE_FULL_AREA):
        if template_full_area is not None and not (np.isfinite(template_full_area) and template_full_area > 0):
            raise ValueError(f"`template_full_area` must be None (no discount) or a positive area in px of the "
                             f"{SIDE} px check thumbnail, got {template_full_area!r}")
        self.template_full_area = None if template_full_area is None else float(template_full_area)
        self.image_of, self.side, self.coarse, self.block = image_of, side, coarse, block
        self.refine_from = refine_from
        self.rotations, self.stretch, self.overlap = bool(rotations), bool(stretch), bool(overlap)
        self.structure = bool(structure)
        self._unit: OrderedDict[tuple, np.ndarray] = OrderedDict()   # the stretch stage's frames
        self.scales, self.coarse_scales = tuple(scales), tuple(coarse_scales)
        self._thumb: dict[int, tuple | None] = {}
        self._equalised: dict[int, np.ndarray] = {}       # rank-equalised fine thumbnails (uint8)
        self._profile: dict[int, np.ndarray] = {}
        self._prep: OrderedDict[tuple[int, str], tuple] = OrderedDict()
        self._cache_items = cache_items
        self.first_pass_cache = check_positive_int(first_pass_cache, "first_pass_cache", minimum=0)
        self._first_tmp: OrderedDict[int, tuple] = OrderedDict()    # the first pass's templates

    def _full_area(self) -> float | None:
        """``template_full_area`` in px of this checker's ``side``-px thumbnails."""
        if self.template_full_area is None:
            return None
        return self.template_full_area * (self.side / SIDE) ** 2

    def thumb(self, i: int, image=None):
        """``(fine thumbnail, coarse thumbnail, shape of the item's image)`` or None; kept for
        the checker's life (float16, about 10 KB per item; 5 KB more with ``rotations``).
        ``image``: item ``i``'s image where the caller has read it already (then it is not
        read again)."""
        if i not in self._thumb:
            img = self.image_of(i) if image is None else image
            if img is None:
                self._thumb[i] = None
            else:
                g = np.asarray(img, np.float32)
                if g.ndim != 2:
                    raise ValueError(f"a check thumbnail needs a 2D gray image, got shape {g.shape}")
                fine = _to_side(g, self.side)
                eq = _equalise(fine)
                self._thumb[i] = self._thumbs(fine, g.shape, eq)
                if self.rotations:
                    self._equalised[i] = np.round(eq * 255.0).astype(np.uint8)
        return self._thumb[i]

    def _thumbs(self, fine: np.ndarray, shape, eq: np.ndarray | None = None) -> tuple:
        """A check-thumbnail entry from a ``side``-px picture: its band-passed fine and coarse
        thumbnails (float16) and ``shape``; ``eq``: ``fine`` rank-equalised already."""
        eq = _equalise(fine) if eq is None else eq
        return (_dog(eq).astype(np.float16), _band_pass(_to_side(fine, self.coarse)).astype(np.float16), shape)

    def _prepared(self, i: int, stage: str):
        """Templates of item ``i`` at every scale of the stage (``"coarse"`` or ``"fine"``), and
        (coarse) its 8 posed frames; those of the last ``cache_items`` items are kept (about
        45 KB coarse and 100 KB fine per item)."""
        def make():
            fine, coarse, _ = self._thumb[i]
            if stage == "coarse":
                t = coarse.astype(np.float32)
                return _templates(t, self.coarse_scales, self.coarse) + _posed(t, range(8), self.coarse)
            return _templates(fine.astype(np.float32), self.scales, self.side)

        return _kept(self._prep, (i, stage), make, 2 * self._cache_items)

    def __call__(self, a: np.ndarray, b: np.ndarray) -> PixelMatch:
        """Scores and boxes of the pairs ``(a[m], b[m])``."""
        m = len(a)
        out = PixelMatch.empty(m)
        order = np.lexsort((b, a))            # an item's prepared frames are reused while it lasts
        gate = np.zeros(m)                    # |NCC| before the line rule and discount: which pairs are refined
        for s in range(0, m, self.block):
            rows = [int(r) for r in order[s:s + self.block]
                    if self.thumb(int(a[r])) is not None and self.thumb(int(b[r])) is not None]
            if rows:
                self._block(rows, a, b, out, gate)
        self._refine(np.flatnonzero(gate >= self.refine_from), a, b, out)
        rows = [r for r in range(m) if self._thumb.get(int(a[r])) is not None
                and self._thumb.get(int(b[r])) is not None]
        if self.stretch:
            for r in rows:
                self._stretched(r, int(a[r]), int(b[r]), out)
        if self.overlap:                      # half blocks: its (pairs, 8 poses, offsets) arrays are large
            step = max(1, self.block // 2)
            for s in range(0, len(rows), step):
                self._overlapped(rows[s:s + step], a, b, out)
        if self.rotations:
            for s in range(0, len(rows), self.block):
                self._rotated(rows[s:s + self.block], a, b, out)
        out.score[~out.compared] = np.nan
        return out

    def _unit_frame(self, i: int, pose: int | None, shape=None) -> np.ndarray:
        """Item ``i``'s fine thumbnail in ``pose`` (or, with ``shape``, resized to it),
        zero-mean and unit-norm; the last few thousand are kept."""
        def make():
            t = self._thumb[i][0].astype(np.float32)
            if shape is not None:
                from PIL import Image

                t = np.asarray(Image.fromarray(t).resize((shape[1], shape[0]), Image.Resampling.BILINEAR),
                               np.float32)
            else:
                t = np.ascontiguousarray(_dihedral(t, pose))
            t = t - t.mean()
            nrm = float(np.sqrt((t * t).sum()))
            return t / nrm if nrm > 1e-6 else None

        return _kept(self._unit, (i, pose, shape), make, 8 * self._cache_items)

    def _stretched(self, r: int, i: int, j: int, out: PixelMatch) -> None:
        """The stretch stage (twelfth session): a copy squeezed or stretched to another aspect
        ratio (a panel resized to fit a figure's layout cell) matches no template of the same
        aspect. Where b in one of the 8 poses has an aspect ratio ``STRETCH_RANGE`` (1.05 to 2
        times) away from a's, a's thumbnail is resized to b's posed one and the two are
        correlated whole against whole (one offset, so different pictures stay low: at most
        0.18 among 96 pairs of generated panels, where stretched copies matched 0.95 or more;
        throwaway ``/tmp/s12/stretch_proto.py``). Kept where it beats the other stages."""
        lo, hi = STRETCH_RANGE
        ha, wa = self._thumb[i][0].shape
        best = None
        for q in range(8):
            hq, wq = self._thumb[j][0].shape[::-1] if q % 2 else self._thumb[j][0].shape
            ratio = (wq / hq) / (wa / ha)
            if not lo <= max(ratio, 1.0 / ratio) <= hi:
                continue
            ta, tb = self._unit_frame(i, None, (hq, wq)), self._unit_frame(j, q)
            if ta is None or tb is None:
                continue
            v = float((ta * tb).sum())
            if best is None or abs(v) > abs(best[0]):
                best = (v, q, ta, tb)
        if best is None or (out.compared[r] and abs(best[0]) <= out.score[r]):
            return
        v, q, ta, tb = best
        if self.structure:
            fa, fb = np.zeros((2, 1, self.side, self.side), np.float32)
            fa[0, :ta.shape[0], :ta.shape[1]], fb[0, :tb.shape[0], :tb.shape[1]] = ta, tb
            v = float(np.sign(v)) * min(abs(v), float(_beyond_lines(fa, fb, np.array([ta.shape]), [0], [0])[0]))
        full = self._full_area()
        if full is not None:
            v = float(np.sign(v)) * float(_small_discount(abs(v), ta.size, full))
        if out.compared[r] and abs(v) <= out.score[r]:
            return
        (Ha, Wa), (Hb, Wb) = self._thumb[i][2], self._thumb[j][2]
        out.score[r], out.compared[r] = min(abs(v), 1.0), True
        out.pose[r], out.of_b[r] = q + (8 if v < 0 else 0), True
        out.scale[r] = float(np.sqrt((Hb * Wb) / (Ha * Wa)))
        out.rel[r], out.angle[r], out.mirror_a[r] = 1.0, 0.0, False
        out.stretch[r] = ((Hb / Wb) if q % 2 else (Wb / Hb)) / (Wa / Ha)       # in the items' own pixels
        out.box_a[r], out.box_b[r] = (0, 0, int(Wa), int(Ha)), (0, 0, int(Wb), int(Hb))

    def _overlapped(self, rows, a, b, out: PixelMatch) -> None:
        """The overlap stage (thirteenth session): two panels cut from one larger picture with
        a shared region, neither holding the other (overlapping fields of view). The larger
        picture (in its own pixels) keeps its thumbnail, the other is resized to the same
        pixel size (the two are assumed to show their pixels at one scale), and the normalised
        cross-correlation *over the shared region only* is computed at every offset where they
        share at least ``OVERLAP_MIN_FRACTION`` of the smaller picture, in each of the larger
        one's 8 poses: coarse first, then at 64 px in the best pose, ``OVERLAP_REFINE`` px around
        the coarse offset. A small region correlates more by chance, so its ``|NCC|`` r counts
        as ``tanh(atanh(r) sqrt(area / OVERLAP_FULL_AREA))`` below that area (a chance
        correlation's Fisher z spreads as one over the square root of the pixels; see
        :func:`_overlap_ncc`). The coarse best must be
        unique (``OVERLAP_UNIQUE``): on the calibration re-use pairs (seeds 20,000,100+, 240
        hard negatives: two regions of one generated parent sharing at most a tenth) 8 hard
        negatives of blots, gels, fibres and cells matched 0.61-0.82 at a shifted offset
        (lanes and bands repeat), each with a second offset within 0.32 in Fisher z of the
        best; 47 of 48 generated overlapping views had a margin of 0.38 or more (one 0.16).
        Kept where it reaches ``MATCH_THRESHOLD`` and beats the other stages: below the threshold a shared region's
        correlation is mostly chance over the many offsets and poses tried, and counting it
        raised the match of different regions of one picture (the calibration pairs' hard
        negatives: mean 0.222 -> 0.244, the most 0.416 -> 0.479), which the fused distance
        reads as evidence (one more of them went under distance 1)."""
        jobs = []
        for r in rows:
            i, j = int(a[r]), int(b[r])
            si, sj = self._thumb[i][2], self._thumb[j][2]
            f_item, g_item = (i, j) if max(si) >= max(sj) else (j, i)
            jobs.append((r, f_item, g_item, max(self._thumb[g_item][2]) / max(self._thumb[f_item][2])))
        if not jobs:
            return
        S, C = self.side, self.coarse
        n = len(jobs)
        G = np.zeros((n, C, C), np.float32)
        gsh = np.zeros((n, 2), np.int64)
        for k, (_, _, g_item, rho) in enumerate(jobs):
            gc = _resized(self._thumb[g_item][1].astype(np.float32), rho)
            G[k, :gc.shape[0], :gc.shape[1]] = gc
            gsh[k] = gc.shape
        prep = [self._prepared(f, "coarse") for _, f, _, _ in jobs]
        radius, margin = OVERLAP_UNIQUE
        best, _, pose, uy, ux, _, fits, second = _overlap_ncc(np.stack([x[2] for x in prep]),
                                                              np.stack([x[3] for x in prep]), G, gsh, C, second=radius)
        unique = np.arctanh(np.minimum(best, 1 - 1e-6)) - np.arctanh(np.minimum(second, 1 - 1e-6)) >= margin
        keep = np.flatnonzero(fits & unique)
        if not len(keep):
            return
        u = S // C
        F = np.zeros((len(keep), 1, S, S), np.float32)
        fsh = np.zeros((len(keep), 1, 2), np.int64)
        G = np.zeros((len(keep), S, S), np.float32)
        gsh = np.zeros((len(keep), 2), np.int64)
        fine_g = {}                               # the fine thumbnails resized only where the coarse stage kept the pair
        for m, k in enumerate(keep):
            _, f_item, g_item, rho = jobs[k]
            gf = fine_g[k] = _resized(self._thumb[g_item][0].astype(np.float32), rho)
            F[m], fsh[m] = _posed(self._thumb[f_item][0].astype(np.float32), [int(pose[k])], S)
            G[m, :gf.shape[0], :gf.shape[1]] = gf
            gsh[m] = gf.shape
        near = np.stack([uy[keep] * u, ux[keep] * u], 1)
        val, _, _, fy, fx, sign, ok = _overlap_ncc(F, fsh, G, gsh, S, near=near, radius=OVERLAP_REFINE)
        for m, k in enumerate(keep):
            r, f_item, g_item, _ = jobs[k]
            gf = fine_g[k]
            if not ok[m] or val[m] < MATCH_THRESHOLD:
                continue                          # below it, mostly chance over the many offsets tried
            if out.compared[r] and val[m] <= out.score[r]:
                continue
            q = int(pose[k])
            hf, wf = (int(x) for x in fsh[m, 0])
            oy, ox = int(fy[m]), int(fx[m])
            y0, y1 = max(0, oy), min(hf, oy + gf.shape[0])
            x0, x1 = max(0, ox), min(wf, ox + gf.shape[1])
            if self.structure:                    # the shared region must match beyond its rows' and columns' means
                fa, fb = np.zeros((2, 1, S, S), np.float32)
                fa[0, :y1 - y0, :x1 - x0] = F[m, 0, y0:y1, x0:x1]
                fb[0, :y1 - y0, :x1 - x0] = gf[y0 - oy:y1 - oy, x0 - ox:x1 - ox]
                beyond = float(_beyond_lines(fa, fb, np.array([[y1 - y0, x1 - x0]]), [0], [0])[0])
                val[m] = min(float(val[m]), float(_small_discount(beyond, (y1 - y0) * (x1 - x0), OVERLAP_FULL_AREA)))
                if val[m] < MATCH_THRESHOLD or (out.compared[r] and val[m] <= out.score[r]):
                    continue
            f_box = _unpose_box((x0, y0, x1, y1), q, self._thumb[f_item][0].shape, self._thumb[f_item][2])
            g_box = _scale_box((x0 - ox, y0 - oy, x1 - ox, y1 - oy), gf.shape, self._thumb[g_item][2])
            of_b = f_item == int(b[r])                   # the posed (larger) picture is b
            out.score[r], out.compared[r] = float(val[m]), True
            out.pose[r], out.of_b[r] = q + (8 if sign[m] < 0 else 0), of_b
            out.scale[r], out.rel[r], out.angle[r], out.mirror_a[r], out.stretch[r] = 1.0, 1.0, 0.0, False, 1.0
            out.overlap[r] = True
            out.box_a[r], out.box_b[r] = (g_box, f_box) if of_b else (f_box, g_box)

    def _profile_of(self, i: int) -> np.ndarray:
        if i not in self._profile:
            self._profile[i] = angular_profile(self._thumb[i][0].astype(np.float32), self.side).astype(np.float32)
        return self._profile[i]

    def _rotated(self, rows, a, b, out: PixelMatch) -> None:
        """The small-rotation stage (see the module's doc): where the spectra say b is a turned
        by an angle in ``ROTATION_RANGE``, a turned by it (and cut to its upright inside) is
        checked against b; the better check of each pair is kept."""
        lo, hi = ROTATION_RANGE
        mirror, angle, strength = estimate_rotation(np.stack([self._profile_of(int(a[r])) for r in rows]),
                                                    np.stack([self._profile_of(int(b[r])) for r in rows]))
        todo = [k for k in range(len(rows)) if lo <= abs(angle[k]) <= hi and strength[k] >= ROTATION_MIN_STRENGTH]
        pseudo, keep, geometry = [], [], []
        for k in todo:
            key = -1 - len(pseudo)                       # item ids are >= 0: these never collide
            g = self._turned_item(int(a[rows[k]]), bool(mirror[k]), float(angle[k]), key)
            if g is not None:
                pseudo.append(key)
                keep.append(k)
                geometry.append(g)
        if not pseudo:
            return
        a2 = np.array(pseudo, np.int64)
        b2 = np.array([int(b[rows[k]]) for k in keep], np.int64)
        sub = PixelMatch.empty(len(pseudo))
        gate = np.zeros(len(pseudo))
        try:
            self._block(list(range(len(pseudo))), a2, b2, sub, gate)
            self._refine(np.flatnonzero(gate >= self.refine_from), a2, b2, sub)
        finally:
            for key in pseudo:
                self._thumb.pop(key, None)
                self._prep.pop((key, "coarse"), None)
                self._prep.pop((key, "fine"), None)
        for j, k in enumerate(keep):
            r = rows[k]
            if not (sub.compared[j] and (sub.score[j] > out.score[r] or not out.compared[r])):
                continue
            for name in ("score", "pose", "of_b", "scale", "rel", "compared", "stretch", "overlap"):
                getattr(out, name)[r] = getattr(sub, name)[j]
            out.angle[r], out.mirror_a[r] = float(angle[k]), bool(mirror[k])
            out.box_b[r] = sub.box_b[j]
            out.box_a[r] = _unturn_box(sub.box_a[j], geometry[j])

    def _turned_item(self, i: int, mirror: bool, angle: float, key: int):
        """Check thumbnails of item ``i`` mirrored (``mirror``), turned ``angle`` degrees
        counter-clockwise and cut to the largest upright rectangle inside, stored as item
        ``key``; returns what :func:`_unturn_box` needs, or None where too little is left."""
        eq = self._equalised[i].astype(np.float32) / 255.0
        x = np.ascontiguousarray(eq[:, ::-1] if mirror else eq)
        h, w = x.shape
        ih, iw = _inscribed(h, w, angle)
        if not _usable(ih, iw, self.side):
            return None
        from PIL import Image

        turned = np.asarray(Image.fromarray(x).rotate(angle, resample=Image.Resampling.BICUBIC), np.float32)
        y0, x0 = (h - ih) // 2, (w - iw) // 2
        fine = _to_side(turned[y0:y0 + ih, x0:x0 + iw], self.side)
        shape = self._thumb[i][2]
        fy, fx = shape[0] / h, shape[1] / w               # item pixels per thumbnail pixel
        self._thumb[key] = self._thumbs(fine, (max(1, round(ih * fy)), max(1, round(iw * fx))))
        return (fy, fx, y0, x0, h, w, mirror, angle, shape)

    def first_pass(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """A cheap filter before the full check (``sf.screen``'s ``wider``): per pair the best
        ``|NCC|`` of the ``coarse``-px thumbnails over every pose, both directions and the sizes
        ``FIRST_PASS_SCALES`` (the coarse stage with sizes 10 % apart; no line rule, no
        discount, no other stage); NaN where an item cannot be read or nothing fitted.
        :meth:`iter_first_pass` is the same with progress."""
        run = self.iter_first_pass(a, b)
        while True:
            try:
                next(run)
            except StopIteration as stop:
                return stop.value

    def iter_first_pass(self, a: np.ndarray, b: np.ndarray, every: int = 32768):
        """:meth:`first_pass` as a generator: yields ``(jobs done, jobs)`` after about every
        ``every`` jobs (two per pair, one per direction) and returns the scores.

        Both directions of every pair are one job each (an image item, a template item), and the
        jobs are sorted by the image item: the image's window sums (the local means and
        variances under each template size, two thirds of the inverse FFTs of
        :func:`_correlate`) are computed once per image item and template shape in a block
        rather than once per job, so the more often items recur in the list (a screen's
        neighbour lists: pass them all at once) the less a pair costs. Templates are kept for
        the last ``first_pass_cache`` items (float16, 10 KB each; 0 keeps none). The numbers
        are those of the coarse stage run pair by pair, to about 1e-4 (the float16 templates)."""
        a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
        out = np.full(len(a), np.nan)
        rows = np.array([r for r in range(len(a)) if self.thumb(int(a[r])) is not None
                         and self.thumb(int(b[r])) is not None], np.int64)
        if not len(rows):
            return out
        img = np.concatenate([b[rows], a[rows]])          # a inside b, then b inside a
        tmp = np.concatenate([a[rows], b[rows]])
        row = np.concatenate([rows, rows])
        shapes = {int(i): self._thumb[int(i)][1].shape for i in np.unique(tmp)}
        shp = np.array([shapes[int(i)] for i in tmp], np.int64).reshape(-1, 2)
        order = np.lexsort((tmp, shp[:, 1], shp[:, 0], img))
        best = np.full(len(a), -1.0)                      # -1: no template fitted either way
        every = max(int(every), self.block)
        for s in range(0, len(order), self.block):
            o = order[s:s + self.block]
            val, fits = self._first_block(img[o], tmp[o], shp[o])
            np.maximum.at(best, row[o], np.where(fits, val, -1.0))
            done = min(s + self.block, len(order))
            if done // every > s // every and done < len(order):
                yield done, len(order)
        out[best >= 0] = best[best >= 0]
        return out

    def _first_templates(self, i: int):
        """Item ``i``'s first-pass templates (float16 ``(C, S, S)``) and their sizes, kept for
        the last ``first_pass_cache`` items."""
        def make():
            t, size = _templates(self._thumb[i][1].astype(np.float32), FIRST_PASS_SCALES, self.coarse)
            return t.astype(np.float16), size

        return _kept(self._first_tmp, i, make, self.first_pass_cache)

    def _first_block(self, img, tmp, shp):
        """:meth:`first_pass` of the jobs (image item ``img[k]``, template item ``tmp[k]`` whose
        coarse thumbnail has the shape ``shp[k]``): ``(best |NCC|, whether any template fitted)``."""
        keys, gi = np.unique(np.stack([img, shp[:, 0], shp[:, 1]], 1), axis=0, return_inverse=True)
        gi = torch.from_numpy(gi.reshape(-1))
        n, G = len(img), len(keys)
        posed = {}
        for k in np.unique(keys[:, 0]):
            posed[int(k)] = _posed(self._thumb[int(k)][1].astype(np.float32), range(8), self.coarse)
        imgs = np.stack([posed[int(k)][0] for k in keys[:, 0]])         # (G, P, S, S) posed images
        ishape = np.stack([posed[int(k)][1] for k in keys[:, 0]])       # (G, P, 2)
        jobs = [self._first_templates(int(t)) for t in tmp]
        tmps = np.stack([j[0] for j in jobs]).astype(np.float32)        # (n, C, S, S)
        tsize = np.stack([j[1] for j in jobs])                          # (n, C, 2): 0 where unusable or flat
        gsize = np.zeros((G, tsize.shape[1], 2), np.int64)              # a group's template sizes (one shape)
        np.maximum.at(gsize, gi.numpy(), tsize)
        S = imgs.shape[-1]
        C = tmps.shape[1]
        FI, var, valid = _window_stats(imgs, ishape, gsize)             # once per group, not per job
        inv = torch.where(valid, 1.0 / var.clamp(min=1e-20), torch.zeros(()))   # 0 where not compared
        # a template that is unusable or flat is all zeros (:func:`_templates`): it scores 0 and
        # fits nowhere
        used = torch.from_numpy(tsize[..., 0] > 0)                              # (n, C)
        fits = (valid.flatten(3).any(3)[gi] & used[:, None, :]).flatten(1).any(1).numpy()
        FT = torch.conj(torch.fft.rfft2(torch.from_numpy(tmps)))[:, None]       # (n, 1, C, ...)
        num = torch.fft.irfft2(FI[gi] * FT, s=(S, S))                   # (n, P, C, S, S)
        # per scale, only the offsets where a template fits somewhere in the block
        where = valid.any(1).any(0)                                     # (C, S, S)
        rows, cols = where.any(2), where.any(1)                         # (C, S)
        best = torch.zeros(n)
        for c in range(C):
            if not bool(rows[c].any()):
                continue
            Y, X = int(rows[c].nonzero().max()) + 1, int(cols[c].nonzero().max()) + 1
            q = num[:, :, c, :Y, :X].square() * inv[:, :, c, :Y, :X][gi]       # NCC squared
            best = torch.maximum(best, q.flatten(1).max(1).values)
        return np.minimum(np.sqrt(best.numpy().astype(np.float64)), 1.0), fits

    def _coarse(self, rows, a, b):
        """The coarse stage: a inside b in each of b's poses, and b inside a in each of a's
        poses (two :func:`_correlate` results). A checker with ``coarse_scales=FIRST_PASS_SCALES``
        computes here, pair by pair, what :meth:`first_pass` computes grouped by item."""
        ca = [self._prepared(int(a[r]), "coarse") for r in rows]
        cb = [self._prepared(int(b[r]), "coarse") for r in rows]
        ab = _correlate(np.stack([x[2] for x in cb]), np.stack([x[3] for x in cb]),
                        np.stack([x[0] for x in ca]), np.stack([x[1] for x in ca]))
        ba = _correlate(np.stack([x[2] for x in ca]), np.stack([x[3] for x in ca]),
                        np.stack([x[0] for x in cb]), np.stack([x[1] for x in cb]))
        return ab, ba

    def _block(self, rows, a, b, out: PixelMatch, gate: np.ndarray | None = None):
        ab, ba = self._coarse(rows, a, b)     # stage 1, coarse
        a_in_b = ab[0] >= ba[0]
        pose = np.where(a_in_b, ab[1], ba[1])
        # stage 2, fine: the better direction in its best pose, every scale; where that was the
        # whole frame (scale 1: the two are about the same picture) the other direction too,
        # in the inverse pose (the coarse scores of the two often tie there)
        both = np.where(a_in_b, ab[2], ba[2]) == 0
        jobs = [(k, bool(d), int(q)) for k, (d, q) in enumerate(zip(a_in_b, pose))]
        inverse = pose_inverse()
        jobs += [(k, not bool(a_in_b[k]), inverse[int(pose[k])]) for k in np.flatnonzero(both)]
        t_item = [int(a[rows[k]]) if d else int(b[rows[k]]) for k, d, _ in jobs]
        i_item = [int(b[rows[k]]) if d else int(a[rows[k]]) for k, d, _ in jobs]
        ft = [self._prepared(i, "fine") for i in t_item]
        self._fine([(rows[k], d, q, t, i) for (k, d, q), t, i in zip(jobs, t_item, i_item)], ft, self.scales, out,
                   gate)

    def _fine(self, jobs, templates, scales, out: PixelMatch, gate: np.ndarray | None = None) -> None:
        """Jobs ``(row, a inside b?, pose of the image item, template item, image item)`` with
        their templates ``(tmps (C, S, S), sizes (C, 2))`` at ``scales`` (one list for all, or one
        per job): keep each row's best. ``gate`` (per row) keeps the best ``|NCC|`` of the chosen
        templates before the line rule and the small-template discount, which decides what
        ``_refine`` measures again: at the coarse grid of sizes a copy's correlation is partial,
        and capping it there would keep the copy from the sizes that match it (one planted copy
        of the N = 10,000 screen went 0.859 -> 0.495 so)."""
        fi = [_posed(self._thumb[i][0].astype(np.float32), [q], self.side) for _, _, q, _, i in jobs]
        full = self._full_area()
        val, _, cj, oy, ox, sign, fits, raw = _correlate(np.stack([x[0] for x in fi]), np.stack([x[1] for x in fi]),
                                                         np.stack([x[0] for x in templates]),
                                                         np.stack([x[1] for x in templates]), full)
        if gate is not None:
            np.maximum.at(gate, np.array([jobs[j][0] for j in np.flatnonzero(fits)], np.intp), raw[fits])
        if self.structure:
            tmp = np.stack([x[0][c] for x, c in zip(templates, cj)])       # (n, S, S): the winning templates
            hw = np.stack([x[1][c] for x, c in zip(templates, cj)])
            beyond = _beyond_lines(tmp, np.stack([x[0][0] for x in fi]), hw, oy, ox)
            if full is not None:
                beyond = _small_discount(beyond, hw[:, 0] * hw[:, 1], full)
            val = np.minimum(val, beyond)
        for j in np.argsort(val, kind="stable"):          # the best job of each pair is written last
            r, d, q, t_item, i_item = jobs[j]
            if not fits[j] or (out.compared[r] and val[j] <= out.score[r]):
                continue
            out.compared[r] = True
            out.score[r] = val[j]
            th, tw = templates[j][1][cj[j]]
            t_shape, i_thumb, i_shape = self._thumb[t_item][2], self._thumb[i_item][0], self._thumb[i_item][2]
            whole = (0, 0, int(t_shape[1]), int(t_shape[0]))
            inside = _unpose_box((int(ox[j]), int(oy[j]), int(ox[j] + tw), int(oy[j] + th)), q, i_thumb.shape, i_shape)
            out.box_a[r], out.box_b[r] = (whole, inside) if d else (inside, whole)
            # d: the template a (resized by c) lies inside b in pose q, i.e. pose q of b matches a
            c = float(scales[j][cj[j]] if isinstance(scales, list) else scales[cj[j]])
            la, lb = (max(t_shape), max(i_shape)) if d else (max(i_shape), max(t_shape))
            out.pose[r] = q + (8 if sign[j] < 0 else 0)
            out.of_b[r] = d
            out.scale[r] = c * lb / la if d else lb / (c * la)
            out.rel[r] = c

    def _refine(self, rows, a, b, out: PixelMatch) -> None:
        """Matched rows again, at sizes 3 % apart around the best (``SCALES`` are 10 % apart):
        a truer scale and box."""
        jobs, templates, scales = [], [], []
        for r in rows:
            d, q = bool(out.of_b[r]), int(out.pose[r]) % 8
            t_item, i_item = (int(a[r]), int(b[r])) if d else (int(b[r]), int(a[r]))
            sc = [float(out.rel[r]) * f for f in REFINE]
            jobs.append((r, d, q, t_item, i_item))
            templates.append(_templates(self._thumb[t_item][0].astype(np.float32), sc, self.side))
            scales.append(sc)
        for s in range(0, len(jobs), self.block):
            sl = slice(s, s + self.block)
            self._fine(jobs[sl], templates[sl], scales[sl], out)


def _templates(t: np.ndarray, scales, S: int):
    """``t`` resized by each scale, zero-mean and unit-norm, in ``(C, S, S)`` frames, and the
    sizes ``(C, 2)`` (0 where too small or flat: never matched)."""
    C = len(scales)
    tmps = np.zeros((C, S, S), np.float32)
    tsize = np.zeros((C, 2), np.int64)
    for j, c in enumerate(scales):
        r = _resized(t, c)
        th, tw = r.shape
        if not _usable(th, tw, S):
            continue
        r = r - r.mean()
        nrm = float(np.sqrt((r * r).sum()))
        if nrm < 1e-6:
            continue
        tmps[j, :th, :tw] = r / nrm
        tsize[j] = (th, tw)
    return tmps, tsize


def _beyond_lines(tmp: np.ndarray, img: np.ndarray, hw: np.ndarray, oy, ox) -> np.ndarray:
    """``(n,)``: how well each template ``tmp[k]`` (its ``hw[k]`` top-left px of an ``S`` x ``S``
    frame) still correlates with the window of ``img[k]`` at ``(oy[k], ox[k])`` once what is
    constant along their rows, or along their columns, is taken out: the smaller of the two
    ``|NCC|`` after subtracting each row's mean, and after subtracting each column's mean (0
    where a residual is flat or correlates with the other sign than the two windows do).
    Different lanes of one blot have their bands at the same heights: their rows correlate, and
    nothing beyond them does (thirteenth session's weak case)."""
    n, S, _ = tmp.shape
    if n == 0:
        return np.zeros(0)
    ar = np.arange(S)
    h = np.asarray(hw[:, 0], np.float64)
    w = np.asarray(hw[:, 1], np.float64)
    mask = (ar[None, :, None] < h[:, None, None]) & (ar[None, None, :] < w[:, None, None])
    q = img[np.arange(n)[:, None, None], (np.asarray(oy)[:, None] + ar)[:, :, None] % S,
            (np.asarray(ox)[:, None] + ar)[:, None, :] % S] * mask            # the windows, zero outside
    p = np.asarray(tmp, np.float32)
    p = (p - (p.sum((1, 2)) / np.maximum(h * w, 1.0)).astype(np.float32)[:, None, None]) * mask
    # q's own mean needs no subtracting where it meets p (zero-mean), only in its sums below
    pq = (p * q).sum((1, 2), dtype=np.float64)
    pp = (p * p).sum((1, 2), dtype=np.float64)
    qq = (q * q).sum((1, 2), dtype=np.float64)
    mq = q.sum((1, 2), dtype=np.float64) / np.maximum(h * w, 1.0)
    qq = qq - mq * mq * h * w
    sign = np.sign(pq)
    out = np.ones(n)
    for axis, length, count in ((2, w, h), (1, h, w)):    # each row's mean (along x), then each column's
        sp = p.sum(axis, dtype=np.float64)                # (n, S): zero past the box
        sq = q.sum(axis, dtype=np.float64) - (mq * length)[:, None] * (ar[None] < count[:, None])
        num = pq - (sp * sq).sum(1) / np.maximum(length, 1.0)
        den = np.sqrt(np.maximum(pp - (sp * sp).sum(1) / np.maximum(length, 1.0), 0.0)
                      * np.maximum(qq - (sq * sq).sum(1) / np.maximum(length, 1.0), 0.0))
        r = np.where(den > 1e-12, sign * num / np.maximum(den, 1e-300), 0.0)
        out = np.minimum(out, np.maximum(r, 0.0))
    return out


def _usable(h: int, w: int, S: int) -> bool:
    """Whether an ``h`` x ``w`` template on an ``S``-px check thumbnail (``SIDE`` fine,
    ``COARSE`` coarse) fits its ``S`` x ``S`` frame and is big enough to correlate by more than
    chance: at least ``MIN_TEMPLATE`` squared px of area and ``MIN_TEMPLATE_SIDE`` px on its
    shorter side, both in ``SIDE``-px units (a coarse px is two). By area, not by the shorter
    side alone: a strip (a blot's lane, a wide panel) is 64 x 9 px on its thumbnail and holds
    as many pixels as a 24 px square (before the twelfth session both sides had to be 12 px:
    panels more than 2.7 times as wide as high lost the coarse stage, which picks the pose,
    and from 5.3 times the check compared nothing)."""
    u = SIDE / S
    return (h <= S and w <= S and min(h, w) * u >= MIN_TEMPLATE_SIDE
            and h * w * u * u >= MIN_TEMPLATE * MIN_TEMPLATE)


def _posed(t: np.ndarray, poses, S: int):
    """``t`` in each pose, in ``(P, S, S)`` frames, and the posed shapes ``(P, 2)``."""
    poses = list(poses)
    imgs = np.zeros((len(poses), S, S), np.float32)
    shape = np.zeros((len(poses), 2), np.int64)
    for j, q in enumerate(poses):
        im = _dihedral(t, q)
        imgs[j, :im.shape[0], :im.shape[1]] = im
        shape[j] = im.shape
    return imgs, shape


def _kept(cache: OrderedDict, key, make, limit: int):
    """``cache[key]``, made by ``make()`` when missing; the cache keeps the last ``limit`` keys
    used (least recently used dropped first)."""
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    out = cache[key] = make()
    if len(cache) > limit:
        cache.popitem(last=False)
    return out


def _window_stats(imgs, ishape, tsize):
    """For the posed frames ``imgs`` (``(m, P, S, S)``, sizes ``ishape`` ``(m, P, 2)``) and the
    template sizes ``tsize`` (``(m, C, 2)``, 0: none): the frames' spectra ``(m, P, 1, S, S/2+1)``,
    the variance (times the area) of the window under each template size at every offset
    ``(m, P, C, S, S)``, and where a template lies inside its frame on a window that is not
    flat. All by FFT: the frames are S x S and a valid offset never wraps around."""
    m, P, S, _ = imgs.shape
    C = tsize.shape[1]
    yy = torch.arange(S)
    th = torch.from_numpy(tsize[..., 0])
    tw = torch.from_numpy(tsize[..., 1])
    boxes = ((yy.view(1, 1, -1, 1) < th.view(m, C, 1, 1)) & (yy.view(1, 1, 1, -1) < tw.view(m, C, 1, 1))).float()
    I = torch.from_numpy(imgs)
    FI, FI2 = torch.fft.rfft2(I)[:, :, None], torch.fft.rfft2(I * I)[:, :, None]      # (m, P, 1, S, S/2+1)
    FB = torch.conj(torch.fft.rfft2(boxes))[:, None]                                    # (m, 1, C, ...)
    s1 = torch.fft.irfft2(FI * FB, s=(S, S))                                            # window sums
    s2 = torch.fft.irfft2(FI2 * FB, s=(S, S))
    h = th.view(m, 1, C, 1, 1)
    w = tw.view(m, 1, C, 1, 1)
    area = (h * w).clamp(min=1).float()
    var = s2 - s1 * s1 / area
    hs = torch.from_numpy(ishape[..., 0]).view(m, P, 1, 1, 1)
    ws = torch.from_numpy(ishape[..., 1]).view(m, P, 1, 1, 1)
    valid = ((h > 0) & (yy.view(1, 1, 1, -1, 1) <= hs - h) & (yy.view(1, 1, 1, 1, -1) <= ws - w)
             & (var > 1e-6 * area * _scale2(imgs)))
    return FI, var, valid


def _correlate(imgs, ishape, tmps, tsize, full_area: float | None = None):
    """For each k, the best ``|NCC|`` of the templates ``tmps[k]`` (``(C, S, S)``, sizes
    ``tsize[k]``) at every offset where they lie inside the frames ``imgs[k]`` (``(P, S, S)``,
    the posed images, sizes ``ishape[k]``). Returns arrays ``(value, pose index, scale index,
    y, x, sign of the correlation, whether any template fitted, raw)`` (value 0 where none did;
    sign -1: inverted). With ``full_area`` (px of these frames) a template smaller than that
    has its ``|NCC|`` discounted (:func:`_small_discount`) before the best is chosen; ``raw`` is
    the chosen one's ``|NCC|`` before the discount (``value`` without ``full_area``)."""
    n, P, S, _ = imgs.shape
    C = tmps.shape[1]
    FI, var, valid = _window_stats(imgs, ishape, tsize)
    FT = torch.conj(torch.fft.rfft2(torch.from_numpy(tmps)))[:, None]                   # (n, 1, C, ...)
    num = torch.fft.irfft2(FI * FT, s=(S, S))                                           # (n, P, C, S, S)
    ncc = torch.where(valid, num * num / var.clamp(min=1e-20), torch.zeros(())).view(n, -1)    # NCC squared
    fits = valid.view(n, -1).any(1).numpy()
    if full_area is None:
        val, arg = ncc.max(1)
        raw = np.minimum(np.sqrt(val.numpy()), 1.0)
        value = raw
    else:   # the best offset of each (pose, template), discounted by the template's area, then the best of those
        best, at = ncc.view(n, P, C, S * S).max(-1)                                       # (n, P, C)
        raw_all = np.minimum(np.sqrt(best.numpy().astype(np.float64)), 1.0)
        disc = _small_discount(raw_all, (tsize[..., 0] * tsize[..., 1])[:, None, :], full_area)
        flat = disc.reshape(n, -1).argmax(1)
        raw = raw_all.reshape(n, -1)[np.arange(n), flat]
        value = disc.reshape(n, -1)[np.arange(n), flat]
        arg = torch.from_numpy(flat * (S * S) + at.view(n, -1).numpy()[np.arange(n), flat])
    sign = torch.sign(torch.gather(num.reshape(n, -1), 1, arg[:, None])[:, 0]).numpy()
    pj, rest = np.divmod(arg.numpy(), C * S * S)
    cj, rest = np.divmod(rest, S * S)
    oy, ox = np.divmod(rest, S)
    return value, pj, cj, oy, ox, sign, fits, raw


def _small_discount(r, area, full_area: float) -> np.ndarray:
    """``|NCC|`` ``r`` of a template of ``area`` px discounted where that is under
    ``full_area``: ``tanh(atanh(r) sqrt(area / full_area))`` (the Fisher z of a correlation over
    N px spreads as one over the square root of N, so a smaller template matches more by
    chance). The overlap stage discounts its shared regions so too, with ``OVERLAP_FULL_AREA``."""
    r = np.asarray(r, np.float64)
    k = np.sqrt(np.clip(np.asarray(area, np.float64) / float(full_area), 0.0, 1.0))
    return np.where(k >= 1.0, r, np.tanh(np.arctanh(np.minimum(r, 1 - 1e-6)) * k))


def _box_sums(x: torch.Tensor, y0, y1, x0, x1) -> torch.Tensor:
    """Sums of the frames ``x`` (``(n, P, H, W)``) over the boxes ``[y0, y1) x [x0, x1)``: the
    rows' ends ``y*`` are ``(n, P, Ly, 1)``, the columns' ``x*`` ``(n, P, 1, Lx)``; the result is
    ``(n, P, Ly, Lx)``. Separable: the column range first (prefix sums along x), then the rows."""
    n, P, H, W = x.shape
    Ly, Lx = y0.shape[-2], x0.shape[-1]
    cx = x.new_zeros(n, P, H, W + 1)                                          # prefix sums along x
    cx[..., 1:] = x.cumsum(-1)
    ix1, ix0 = x1.expand(n, P, 1, Lx).expand(n, P, H, Lx), x0.expand(n, P, 1, Lx).expand(n, P, H, Lx)
    cols = cx.gather(-1, ix1) - cx.gather(-1, ix0)                            # (n, P, H, Lx)
    cy = cols.new_zeros(n, P, H + 1, Lx)                                      # ... then along y
    cy[..., 1:, :] = cols.cumsum(-2)
    iy1, iy0 = y1.expand(n, P, Ly, 1).expand(n, P, Ly, Lx), y0.expand(n, P, Ly, 1).expand(n, P, Ly, Lx)
    return cy.gather(-2, iy1) - cy.gather(-2, iy0)


def _overlap_ncc(F, fsh, G, gsh, S: int, near=None, radius: int = 0, second: int | None = None):
    """Normalised cross-correlation over the *shared region only*, at every offset of the
    moving picture ``G[k]`` (``(S, S)`` frame, size ``gsh[k]``) on each posed fixed picture
    ``F[k, p]`` (``(P, S, S)`` frames, sizes ``fsh[k, p]``), where the two share at least
    ``OVERLAP_MIN_FRACTION`` of the smaller one's area, ``MIN_TEMPLATE`` squared px and
    ``MIN_TEMPLATE_SIDE`` px each way (in ``SIDE``-px units). With ``near`` (``(n, 2)``
    offsets) only the offsets within ``radius`` of it are computed.

    The cross term is one FFT correlation per pose (padded to 2S, so no offset wraps); the
    sums of each picture over the shared box and of their squares are separable prefix sums.
    A shared region of N px (``SIDE`` units) under ``OVERLAP_FULL_AREA`` has its ``|NCC|`` r
    scored ``tanh(atanh(r) sqrt(N / OVERLAP_FULL_AREA))``: for unrelated pictures r is about
    normal with a spread of 1 / sqrt(N) in Fisher's z, so the small regions near the minimum,
    which are also the most numerous offsets, would otherwise win by chance.

    Returns ``(score, r, pose index, y, x, sign, whether any offset counted)``; ``(y, x)`` is
    the moving picture's top-left corner on the fixed one (may be negative)."""
    n, P = F.shape[:2]
    L = 2 * S
    u = SIDE / S
    F, G = torch.from_numpy(np.ascontiguousarray(F)), torch.from_numpy(np.ascontiguousarray(G))
    cross = torch.fft.irfft2(torch.fft.rfft2(F, s=(L, L)) * torch.conj(torch.fft.rfft2(G, s=(L, L)))[:, None],
                             s=(L, L))                                     # (n, P, L, L): sum F[y+u] G[y]
    if near is None:
        # only offsets that can share enough: the shared rows (columns) must hold the least
        # area over the widest (highest) shared extent, and MIN_TEMPLATE_SIDE
        area = np.minimum(fsh[..., 0] * fsh[..., 1], gsh[:, None, 0] * gsh[:, None, 1])
        need = np.maximum(OVERLAP_MIN_FRACTION * area, MIN_TEMPLATE * MIN_TEMPLATE / (u * u))
        oh = np.maximum(np.ceil(need / np.minimum(fsh[..., 1], gsh[:, None, 1])), MIN_TEMPLATE_SIDE / u)
        ow = np.maximum(np.ceil(need / np.minimum(fsh[..., 0], gsh[:, None, 0])), MIN_TEMPLATE_SIDE / u)
        ymax = int(max(0, np.max(np.maximum(fsh[..., 0], gsh[:, None, 0]) - oh)))
        xmax = int(max(0, np.max(np.maximum(fsh[..., 1], gsh[:, None, 1]) - ow)))
        oy = torch.arange(-ymax, ymax + 1).view(1, 1, -1, 1).expand(n, 1, -1, 1)
        ox = torch.arange(-xmax, xmax + 1).view(1, 1, 1, -1).expand(n, 1, 1, -1)
        cross = torch.roll(cross, (ymax, xmax), (-2, -1))[..., :2 * ymax + 1, :2 * xmax + 1]   # offset -ymax first
    else:
        w = torch.arange(-radius, radius + 1)
        near = torch.from_numpy(np.asarray(near, np.int64))
        oy = (near[:, 0].view(n, 1, 1, 1) + w.view(1, 1, -1, 1)).clamp(-S + 1, S - 1)
        ox = (near[:, 1].view(n, 1, 1, 1) + w.view(1, 1, 1, -1)).clamp(-S + 1, S - 1)
        cross = cross.gather(-2, (oy % L).expand(n, P, -1, L)).gather(-1, (ox % L).expand(n, P, oy.shape[-2], -1))
    hf = torch.from_numpy(fsh[..., 0]).view(n, P, 1, 1)
    wf = torch.from_numpy(fsh[..., 1]).view(n, P, 1, 1)
    hg = torch.from_numpy(gsh[:, 0]).view(n, 1, 1, 1)
    wg = torch.from_numpy(gsh[:, 1]).view(n, 1, 1, 1)
    y0, x0 = oy.clamp(min=0), ox.clamp(min=0)
    y1, x1 = torch.maximum(torch.minimum(hf, oy + hg), y0), torch.maximum(torch.minimum(wf, ox + wg), x0)
    y0, x0 = y0.expand_as(y1), x0.expand_as(x1)
    N = ((y1 - y0) * (x1 - x0)).float()
    sf, sff = _box_sums(F, y0, y1, x0, x1), _box_sums(F * F, y0, y1, x0, x1)
    gy0, gy1, gx0, gx1 = y0 - oy, y1 - oy, x0 - ox, x1 - ox                # the same box in G's frame
    # G's box depends on the pose only through F's shape: 8 poses in order have two shapes,
    # (h, w) at the even ones and (w, h) at the odd ones
    two = P == 8 and bool((fsh[:, 0::2] == fsh[:, :1]).all() and (fsh[:, 1::2] == fsh[:, 1:2]).all())
    if two:
        gy0, gy1, gx0, gx1 = gy0[:, :2], gy1[:, :2], gx0[:, :2], gx1[:, :2]
    Gp = G[:, None].expand(n, gy1.shape[1], S, S)
    sg, sgg = _box_sums(Gp, gy0, gy1, gx0, gx1), _box_sums(Gp * Gp, gy0, gy1, gx0, gx1)
    if two:
        sg, sgg = sg.repeat(1, 4, 1, 1), sgg.repeat(1, 4, 1, 1)
    Nc = N.clamp(min=1.0)
    num = cross - sf * sg / Nc
    vf, vg = sff - sf * sf / Nc, sgg - sg * sg / Nc
    need = (OVERLAP_MIN_FRACTION * torch.minimum(hf * wf, hg * wg).float()).clamp(
        min=MIN_TEMPLATE * MIN_TEMPLATE / (u * u))
    ok = (((y1 - y0) * u >= MIN_TEMPLATE_SIDE) & ((x1 - x0) * u >= MIN_TEMPLATE_SIDE) & (N >= need)
          & (vf > 1e-6 * Nc * _scale2(F.numpy())[..., 0]) & (vg > 1e-6 * Nc * _scale2(G.numpy()[:, None])[..., 0]))
    r = (num * torch.rsqrt(vf.clamp(min=1e-30) * vg.clamp(min=1e-30))).clamp(-1.0, 1.0)
    z = torch.atanh(r.abs().clamp(max=1 - 1e-6)) * (N * (u * u / OVERLAP_FULL_AREA)).clamp(max=1.0).sqrt()
    zmap = torch.where(ok, z, torch.zeros(()))
    z, arg = zmap.reshape(n, -1).max(1)
    val = torch.tanh(z)
    rr = r.reshape(n, -1).gather(1, arg[:, None])[:, 0]
    Ly, Lx = oy.shape[-2], ox.shape[-1]
    pj, rest = np.divmod(arg.numpy(), Ly * Lx)
    iy, ix = np.divmod(rest, Lx)
    if second is not None:
        # the best score of the same pose away from the best offset (more than ``second`` px)
        k = torch.arange(n)
        zp = zmap[k, torch.from_numpy(pj)]                                   # (n, Ly, Lx)
        far = (((torch.arange(Ly).view(1, -1, 1) - torch.from_numpy(iy).view(-1, 1, 1)).abs() > second)
               | ((torch.arange(Lx).view(1, 1, -1) - torch.from_numpy(ix).view(-1, 1, 1)).abs() > second))
        second_val = torch.tanh(torch.where(far, zp, torch.zeros(())).reshape(n, -1).max(1).values).numpy()
    y = oy.expand(n, 1, Ly, 1)[:, 0, :, 0].numpy()[np.arange(n), iy]
    x = ox.expand(n, 1, 1, Lx)[:, 0, 0, :].numpy()[np.arange(n), ix]
    out = (val.numpy(), rr.abs().numpy(), pj, y, x, torch.sign(rr).numpy(), ok.reshape(n, -1).any(1).numpy())
    return out + (second_val,) if second is not None else out


def _scale2(imgs: np.ndarray) -> torch.Tensor:
    """Per image, the mean square of its pixels ``(n, 1, 1, 1, 1)``: flat windows (variance
    under a millionth of it) are not compared."""
    ms = (imgs.astype(np.float64) ** 2).mean(axis=(1, 2, 3)) + 1e-12
    return torch.from_numpy(ms.astype(np.float32)).view(-1, 1, 1, 1, 1)


def _unturn_box(box, geometry) -> tuple[int, int, int, int] | None:
    """A box in a turned item (:meth:`PixelChecker._turned_item`, in the item's pixels) -> the
    upright box around it in the item's own pixels."""
    if box is None:
        return None
    fy, fx, y0, x0, h, w, mirror, angle, shape = geometry
    bx0, by0, bx1, by1 = box
    # item pixels -> the turned thumbnail's frame (the cut starts at y0, x0)
    xs = np.array([bx0, bx1, bx1, bx0], np.float64) / fx + x0
    ys = np.array([by0, by0, by1, by1], np.float64) / fy + y0
    # undo the counter-clockwise turn about the centre (PIL's): p = c + R^T (p' - c), y down
    t = np.deg2rad(angle)
    cx, cy = w / 2.0, h / 2.0
    dx, dy = xs - cx, ys - cy
    ux = cx + np.cos(t) * dx - np.sin(t) * dy
    uy = cy + np.sin(t) * dx + np.cos(t) * dy
    if mirror:
        ux = w - ux
    ux, uy = np.clip(ux, 0, w), np.clip(uy, 0, h)
    return (int(round(ux.min() * fx)), int(round(uy.min() * fy)), int(min(shape[1], round(ux.max() * fx))),
            int(min(shape[0], round(uy.max() * fy))))


def _scale_box(box, thumb_shape, shape) -> tuple[int, int, int, int]:
    """A box in a check thumbnail -> the item's own pixels."""
    fy, fx = shape[0] / thumb_shape[0], shape[1] / thumb_shape[1]
    x0, y0, x1, y1 = box
    return (int(round(x0 * fx)), int(round(y0 * fy)), int(min(shape[1], round(x1 * fx))),
            int(min(shape[0], round(y1 * fy))))


def _unpose_box(box, pose: int, thumb_shape, shape) -> tuple[int, int, int, int]:
    """A box in the posed thumbnail of X -> X's own pixels (through the pose's inverse)."""
    h, w = thumb_shape
    idx = _dihedral(np.arange(h * w).reshape(h, w), pose)
    x0, y0, x1, y1 = box
    sel = idx[y0:y1, x0:x1]
    rows, cols = sel // w, sel % w
    return _scale_box((int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1),
                      thumb_shape, shape)


def pair_match(images_a, images_b, *, overlap: bool = False) -> PixelMatch:
    """The pixel check of the pairs ``(images_a[i], images_b[i])``: images as
    ``ForensicModel.distance`` takes them (arrays, gray or RGB, or sequences of them).
    ``overlap=True`` adds the overlap stage (views that share a region; see the module's doc)."""
    from .._validation import as_image_list, check_pair_lists

    if not isinstance(overlap, bool):
        raise TypeError(f"`overlap` must be True or False, got {overlap!r}")
    a, b = as_image_list(images_a, "images_a"), as_image_list(images_b, "images_b")
    check_pair_lists(a, b)
    return match_checked_pairs(a, b, overlap=overlap)


def match_checked_pairs(a: list[np.ndarray], b: list[np.ndarray], *, overlap: bool = False) -> PixelMatch:
    """:func:`pair_match` of images already checked (2D float32 gray, as many in ``b`` as in
    ``a``), without checking them again."""
    images = a + b
    n = len(a)
    return PixelChecker(lambda i: images[i], overlap=overlap)(np.arange(n), np.arange(n, 2 * n))


__all__ = ["SIDE", "SCALES", "MATCH_THRESHOLD", "OVERLAP_MIN_FRACTION", "OVERLAP_FULL_AREA", "OVERLAP_UNIQUE",
           "TEMPLATE_FULL_AREA", "ROTATION_RANGE",
           "ROTATION_MIN_STRENGTH", "check_thumbnail", "PixelChecker", "PixelMatch", "angular_profile",
           "estimate_rotation", "pair_match"]
