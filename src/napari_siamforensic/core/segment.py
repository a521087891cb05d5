"""Scribble segmentation: the forensic net's per-pixel features and a random forest.

The user paints a few strokes per class (labels, 0 = unlabelled); :class:`Segmenter` fits a
random forest on the features of the painted pixels only and predicts every pixel (or only a
slice, a tile, a viewport). Features come from :mod:`~napari_siamforensic.core.features`
(conv maps of the branch network upsampled to the image, plus optional filters), computed tile
by tile and cached, so a refit after a new stroke does not run the network again.

Images (``image``) and labels (``labels``) - "spatial shape" is ``labels.shape``:

=====================================  ================================  =========================
image                                  meaning                           spatial shape
=====================================  ================================  =========================
``(H, W)``                             gray                              ``(H, W)``
``(H, W, 3|4)``                        RGB(A) (alpha ignored)            ``(H, W)``
``(Z, H, W)`` / ``(T, Z, H, W)``       stack: features slice by slice    ``(Z, H, W)`` / ...
``(Z, H, W, 3|4)``                     stack of RGB(A)                   ``(Z, H, W)``
any, with ``channel_axis=k``           multichannel (axis k = channels)  the other axes
=====================================  ================================  =========================

The network sees gray planes: the luminance of RGB, each channel of a multichannel image. The
filter features see every colour channel.

Examples
--------
>>> import numpy as np
>>> from napari_siamforensic.core.segment import Segmenter
>>> rng = np.random.default_rng(0)
>>> img = rng.normal(0.2, 0.05, (64, 64)).astype(np.float32)
>>> img[16:48, 16:48] += 0.6                      # a bright square
>>> labels = np.zeros(img.shape, np.uint8)
>>> labels[30:34, 30:34] = 7                      # a stroke inside
>>> labels[2:4, 2:60] = 3                         # a stroke outside
>>> seg = Segmenter(n_estimators=20, n_jobs=1).fit(img, labels)
>>> pred = seg.predict(img)
>>> sorted(np.unique(pred).tolist()), int(pred[32, 32]), int(pred[5, 5])
([3, 7], 7, 3)
>>> seg.predict_proba(img, region=(slice(0, 8), slice(0, 8))).shape
(8, 8, 2)
"""
from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .features import FeatureCache, FeatureExtractor, FeatureSettings, resolve_model

SEGMENTER_FORMAT = "napari-siamforensic-segmenter"
SEGMENTER_FORMAT_VERSION = "1"
_META_NAME = "segmenter.json"
_FOREST_NAME = "forest.skops"
#: The only type a saved forest may hold beyond skops' default trusted types.
_TRUSTED_FOREST_TYPES = frozenset({"sklearn.tree._tree.Tree"})
_PREDICT_CHUNK = 1 << 17      # pixels per forest call (bounds the float32 copy of features)

__all__ = ["Segmenter", "TilePrediction", "NotFittedError", "SEGMENTER_FORMAT"]


def _random_forest():
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier


def _extra_trees():
    from sklearn.ensemble import ExtraTreesClassifier

    return ExtraTreesClassifier


#: ``Segmenter(forest=...)`` -> a function returning the scikit-learn class.
_FORESTS = {"random": _random_forest, "extra": _extra_trees}

try:  # scikit-learn's own class, so `except NotFittedError` works for sklearn users too
    from sklearn.exceptions import NotFittedError
except Exception:  # pragma: no cover
    class NotFittedError(ValueError, AttributeError):
        pass


@dataclass(frozen=True)
class TilePrediction:
    """One predicted tile of :meth:`Segmenter.iter_predict`.

    ``index``: the plane's position in the leading (stack) axes of the *output* (``()`` for
    2D); ``rows``, ``cols``: where the tile sits in the output's last two axes; ``labels``
    ``(h, w)`` in the painted class values; ``proba`` ``(h, w, n_classes)`` float32 or None.
    """

    done: int
    total: int
    index: tuple
    rows: slice
    cols: slice
    labels: np.ndarray
    proba: np.ndarray | None


# ------------------------------------------------------------------------------------ layout
@dataclass(frozen=True)
class _Layout:
    """How an image array maps to 2D planes."""

    kind: str                  # "gray", "rgb" or "multichannel"
    n_channels: int            # channels the filters see (1 for gray, 3 for RGB(A))
    spatial: tuple             # the labels' shape: (..., H, W)
    array: np.ndarray          # channels last for rgb/multichannel

    @property
    def leading(self) -> tuple:
        return self.spatial[:-2]

    def plane(self, index: tuple) -> tuple[np.ndarray, np.ndarray | None]:
        """``(plane for filters (H, W) or (H, W, C), plane for the net or None)``."""
        p = np.asarray(self.array[index], dtype=np.float32)
        if self.kind == "rgb":
            rgb = p[..., :3]
            return rgb, 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
        return p, None


_ACCEPTED = ("a 2D gray image (H, W), RGB(A) (H, W, 3|4), a stack (Z, H, W) or (T, Z, H, W) "
             "(optionally RGB(A) in a last axis of 3|4), or any of these with channels on the "
             "axis named by `channel_axis`; any integer or float dtype, at least 16 x 16 px per plane")


def _layout(image, channel_axis, name: str = "image") -> _Layout:
    if isinstance(image, (str, os.PathLike)):
        raise TypeError(f"`{name}` must be an array, got a path {str(image)!r}; read it first")
    try:
        arr = np.asarray(image)
    except Exception as exc:
        raise TypeError(f"`{name}` could not be turned into an array ({exc}); expected {_ACCEPTED}") from None
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"`{name}` has dtype {arr.dtype}; expected {_ACCEPTED}")
    if channel_axis is not None:
        if isinstance(channel_axis, bool) or not isinstance(channel_axis, (int, np.integer)) or \
                not -arr.ndim <= channel_axis < arr.ndim:
            raise ValueError(f"`channel_axis` must be an axis of the {arr.ndim}D image, got {channel_axis!r}")
        arr = np.moveaxis(arr, int(channel_axis), -1)
        kind, spatial, n_ch = "multichannel", arr.shape[:-1], arr.shape[-1]
    elif arr.ndim >= 3 and arr.shape[-1] in (3, 4):
        kind, spatial, n_ch = "rgb", arr.shape[:-1], 3
    else:
        kind, spatial, n_ch = "gray", arr.shape, 1
    if not 2 <= len(spatial) <= 4:
        raise ValueError(f"`{name}` of shape {np.shape(image)} has {len(spatial)} spatial axes; expected {_ACCEPTED}")
    if spatial[-1] < 16 or spatial[-2] < 16:
        raise ValueError(f"`{name}` planes are {spatial[-2]} x {spatial[-1]} px, smaller than 16 x 16; "
                         f"expected {_ACCEPTED}")
    if n_ch < 1:
        raise ValueError(f"`{name}` has no channels on `channel_axis`; expected {_ACCEPTED}")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise ValueError(f"`{name}` contains NaN or infinite values; expected {_ACCEPTED}")
    return _Layout(kind, int(n_ch), tuple(int(s) for s in spatial), arr)


def _check_labels(labels, spatial: tuple) -> np.ndarray:
    if isinstance(labels, (str, os.PathLike)):
        raise TypeError(f"`labels` must be an integer array, got a path {str(labels)!r}")
    lab = np.asarray(labels)
    if lab.dtype == bool:
        raise ValueError("`labels` is a boolean mask; paint at least two classes with integer values "
                         "(0 = unlabelled, e.g. 1 = background, 2 = object)")
    if not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"`labels` must be an integer array (0 = unlabelled, 1, 2, ... = classes), got dtype "
                         f"{lab.dtype}; convert with labels.astype(int) if the values are whole numbers")
    if lab.shape != tuple(spatial):
        raise ValueError(f"`labels` has shape {lab.shape} but the image's spatial shape is {tuple(spatial)}; "
                         "labels must cover the image pixel for pixel (without a colour/channel axis)")
    if lab.size and lab.min() < 0:
        raise ValueError(f"`labels` contains negative values (min {lab.min()}); use 0 for unlabelled and "
                         "positive integers for classes")
    return lab


def _parse_region(region, spatial: tuple):
    """``region`` (ints / unit-step slices over the labels' axes) -> (list of plane index
    tuples, output leading shape, ((y0, y1), (x0, x1)))."""
    nd = len(spatial)
    if region is None:
        region = ()
    if not isinstance(region, tuple):
        region = (region,)
    if len(region) > nd:
        raise ValueError(f"`region` has {len(region)} entries but the labels have {nd} axes {spatial}")
    region = region + (slice(None),) * (nd - len(region))
    per_axis, out_shape = [], []
    for ax, (r, n) in enumerate(zip(region, spatial)):
        if isinstance(r, (int, np.integer)) and not isinstance(r, bool):
            if not -n <= r < n:
                raise ValueError(f"`region` index {r} is out of range for axis {ax} of size {n}")
            if ax >= nd - 2:
                raise ValueError("`region` must use slices for the last two (row, column) axes, e.g. "
                                 "(slice(0, 256), slice(0, 256)); ints are for stack axes")
            per_axis.append([int(r) % n])
        elif isinstance(r, slice):
            start, stop, step = r.indices(n)
            if step != 1 or stop <= start:
                raise ValueError(f"`region` slice {r} on axis {ax} must be non-empty with step 1")
            per_axis.append(list(range(start, stop)))
            if ax < nd - 2:
                out_shape.append(stop - start)
        else:
            raise TypeError(f"`region` entries must be ints or slices, got {r!r}")
    planes = [tuple(i) for i in np.ndindex(*[len(p) for p in per_axis[:-2]])]
    plane_index = [tuple(per_axis[a][k] for a, k in enumerate(idx)) for idx in planes]
    out_index = [tuple(k for a, k in enumerate(idx) if isinstance(region[a], slice)) for idx in planes]
    box = ((per_axis[-2][0], per_axis[-2][-1] + 1), (per_axis[-1][0], per_axis[-1][-1] + 1))
    return list(zip(plane_index, out_index)), tuple(out_shape), box


# ------------------------------------------------------------------------------ torch forest
class TorchForest:
    """A fitted scikit-learn forest as padded node arrays, evaluated in torch on a device by
    gather-based traversal (all trees and pixels at once, ``max_depth`` steps).

    Gives the same probabilities as ``forest.predict_proba`` (thresholds compared in float64
    where the device has it, float32 elsewhere).
    """

    def __init__(self, forest, device):
        self.device = torch.device(device)
        trees = [e.tree_ for e in forest.estimators_]
        m = max(t.node_count for t in trees)
        t_n, k = len(trees), forest.n_classes_
        feature = np.zeros((t_n, m), np.int64)
        thresh = np.zeros((t_n, m), np.float64)
        left = np.zeros((t_n, m), np.int64)
        right = np.zeros((t_n, m), np.int64)
        value = np.zeros((t_n, m, k), np.float32)
        for i, t in enumerate(trees):
            n = t.node_count
            leaf = t.children_left[:n] < 0
            idx = np.arange(n)
            feature[i, :n] = np.where(leaf, 0, t.feature[:n])
            thresh[i, :n] = t.threshold[:n]
            left[i, :n] = np.where(leaf, idx, t.children_left[:n])
            right[i, :n] = np.where(leaf, idx, t.children_right[:n])
            v = t.value[:n, 0, :].astype(np.float64)
            value[i, :n] = v / np.maximum(v.sum(-1, keepdims=True), 1e-12)
        fdtype = torch.float32 if self.device.type == "mps" else torch.float64
        self.depth = max(t.max_depth for t in trees)
        self.feature = torch.from_numpy(feature).to(self.device)
        self.threshold = torch.from_numpy(thresh).to(self.device, fdtype)
        self.left = torch.from_numpy(left).to(self.device)
        self.right = torch.from_numpy(right).to(self.device)
        self.value = torch.from_numpy(value).to(self.device)
        self.n_trees = t_n

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, F)`` -> ``(N, n_classes)`` float32, on the device."""
        x = x.to(self.device, self.threshold.dtype)
        n = x.shape[0]
        node = torch.zeros(self.n_trees, n, dtype=torch.long, device=self.device)
        for _ in range(self.depth):
            f = self.feature.gather(1, node)                           # (T, N)
            xv = x.gather(1, f.T).T                                    # (T, N)
            go_left = xv <= self.threshold.gather(1, node)
            node = torch.where(go_left, self.left.gather(1, node), self.right.gather(1, node))
        t_idx = torch.arange(self.n_trees, device=self.device)[:, None]
        return self.value[t_idx, node].mean(0)


# -------------------------------------------------------------------------------- Segmenter
class Segmenter:
    """Scribble segmentation on the forensic network's per-pixel features (scikit-learn style).

    ``__init__`` only stores the options; :meth:`fit` validates, resolves the model and fits.

    Parameters
    ----------
    model : None, str / path or ForensicModel
        The network whose conv maps are the features. ``None``: the bundled default model when
        it is installed, otherwise a freshly initialised network with a fixed seed (random conv
        features are still useful features). Which one was used is in ``model_source_`` and
        ``model_identity_`` after fitting, and is saved with the segmenter.
    blocks : tuple of int
        Conv blocks whose maps are features (block ``i``: 16 * 2**i channels, 1/2**i resolution).
        The paper's choice ``(1, 2, 3)`` gives 32 + 64 + 128 = 224 features per pixel.
    include_input_resolution : bool
        Also use block 0, the input-resolution maps (16 more features).
    filters : bool
        Add 16 multiscale filter features per channel (smoothed intensity, gradient magnitude,
        Hessian eigenvalues at sigma 1, 2, 4, 8).
    rescale : float
        Resize the image by this factor before the network (0.5 for objects larger than the
        receptive field of ~70 px, 2 for tiny ones); predictions come back at full size.
    forest : {"extra", "random"}
        :class:`~sklearn.ensemble.ExtraTreesClassifier` (random split thresholds; the default:
        on 2 idle cores a refit after a stroke takes 0.17 s instead of 0.81 s, and its mean IoU
        in ``benchmarks/segmentation.py`` was 0.719 against 0.707-0.715), or
        :class:`sklearn.ensemble.RandomForestClassifier` (the paper's and ilastik's forest).
    n_estimators, max_depth, min_samples_leaf, class_weight
        The forest's. 50 trees with leaves of at least 2 pixels predicted as well as 100 fully
        grown trees in ``benchmarks/segmentation.py``, at about half the time.
    max_samples_per_class : int or None
        Fit on at most this many painted pixels per class (drawn with ``random_state``).
    tile_size : int
        Features are computed and predicted in tiles of this side (memory per tile ~
        ``tile_size**2 * n_features * 4`` bytes).
    overlap : int or None
        Halo around each tile; None: enough for tiles to agree with an untiled computation.
    device : str
        Where the network (and, on a GPU, the forest's trees) run: "auto", "cpu", "cuda", "mps".
        Applies when ``model`` is None or a path; a given ForensicModel keeps its own device.
    channel_axis : int or None
        The channel axis of a multichannel image (see the module's table of layouts).
    n_jobs : int
        Cores for the forest on the CPU (-1: all).
    cache_mb : float
        Memory for cached feature tiles (float16), least recently used dropped first.
    random_state : int
        Seeds the forest and the per-class subsampling.

    Attributes
    ----------
    classes_ : (n_classes,) ndarray
        The painted class values, sorted; ``predict`` returns these values.
    forest_ : RandomForestClassifier or ExtraTreesClassifier
        Fitted on class indices ``0 .. n_classes - 1``.
    n_features_in_ : int
        Features per pixel.
    model_ : ForensicModel
    model_identity_ : str
        Hash of the network's weights (see ``ForensicModel.identity``).
    model_source_ : str
        ``"default"``, ``"random-init(seed=0)"``, ``"file:<path>"`` or ``"given"``.
    feature_settings_ : FeatureSettings
    image_kind_ : str
        ``"gray"``, ``"rgb"`` or ``"multichannel"``; ``n_channels_`` the channels.
    n_samples_fit_ : int
        Painted pixels the forest was fitted on (after subsampling).
    """

    def __init__(self, model=None, *, blocks=(1, 2, 3), include_input_resolution=False, filters=True,
                 rescale=1.0, forest="extra", n_estimators=50, max_depth=None, min_samples_leaf=2,
                 class_weight=None, max_samples_per_class=10000, tile_size=512, overlap=None, device="auto",
                 channel_axis=None, n_jobs=-1, cache_mb=1024, random_state=0):
        self.model = model
        self.blocks = blocks
        self.include_input_resolution = include_input_resolution
        self.filters = filters
        self.rescale = rescale
        self.forest = forest
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.class_weight = class_weight
        self.max_samples_per_class = max_samples_per_class
        self.tile_size = tile_size
        self.overlap = overlap
        self.device = device
        self.channel_axis = channel_axis
        self.n_jobs = n_jobs
        self.cache_mb = cache_mb
        self.random_state = random_state

    # -------------------------------------------------------------- scikit-learn plumbing
    _PARAMS = ("model", "blocks", "include_input_resolution", "filters", "rescale", "forest", "n_estimators",
               "max_depth", "min_samples_leaf", "class_weight", "max_samples_per_class", "tile_size",
               "overlap", "device", "channel_axis", "n_jobs", "cache_mb", "random_state")

    def get_params(self, deep: bool = True) -> dict:
        return {k: getattr(self, k) for k in self._PARAMS}

    def set_params(self, **params) -> "Segmenter":
        for k, v in params.items():
            if k not in self._PARAMS:
                raise ValueError(f"invalid parameter {k!r} for Segmenter; valid: {list(self._PARAMS)}")
            setattr(self, k, v)
        return self

    def __repr__(self) -> str:
        changed = []
        defaults = Segmenter()
        for k in self._PARAMS:
            v = getattr(self, k)
            if k == "model" and v is not None:
                changed.append(f"model={type(v).__name__ if not isinstance(v, (str, os.PathLike)) else repr(str(v))}")
            elif k != "model" and v != getattr(defaults, k):
                changed.append(f"{k}={v!r}")
        return f"Segmenter({', '.join(changed)})"

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_cache", None)      # features are recomputed, never pickled
        state.pop("_extractor", None)
        state.pop("_torch_forest", None)
        return state

    def _check_fitted(self):
        if not hasattr(self, "forest_"):
            raise NotFittedError("this Segmenter is not fitted yet; call fit(image, labels) with a few "
                                 "painted strokes of at least two classes first (or Segmenter.load(path))")

    # -------------------------------------------------------------- settings
    def _feature_settings(self) -> FeatureSettings:
        blocks = () if self.blocks is None else tuple(self.blocks)
        if self.include_input_resolution:
            blocks = (0,) + blocks
        return FeatureSettings(blocks=blocks, filters=bool(self.filters), rescale=self.rescale,
                               tile_size=self.tile_size, overlap=self.overlap)

    def _forest_params(self) -> dict:
        if self.forest not in _FORESTS:
            raise ValueError(f"`forest` must be one of {sorted(_FORESTS)}, got {self.forest!r}")
        for name in ("n_estimators", "min_samples_leaf"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"`{name}` must be an integer >= 1, got {v!r}")
        if self.max_depth is not None and (isinstance(self.max_depth, bool) or
                                           not isinstance(self.max_depth, (int, np.integer)) or self.max_depth < 1):
            raise ValueError(f"`max_depth` must be None or an integer >= 1, got {self.max_depth!r}")
        return dict(n_estimators=int(self.n_estimators), max_depth=self.max_depth,
                    min_samples_leaf=int(self.min_samples_leaf), class_weight=self.class_weight,
                    n_jobs=self.n_jobs, random_state=self.random_state)

    def _cache_obj(self) -> FeatureCache:
        cache = getattr(self, "_cache", None)
        want = int(float(self.cache_mb) * (1 << 20))
        if cache is None:
            cache = self._cache = FeatureCache(want)
        cache.max_bytes = want
        return cache

    def _get_extractor(self, settings: FeatureSettings) -> FeatureExtractor:
        ex = getattr(self, "_extractor", None)
        if ex is None or ex.settings != settings or ex.model is not self.model_:
            ex = self._extractor = FeatureExtractor(self.model_, settings)
            ex._identity = self.model_identity_
        return ex

    def clear_cache(self) -> None:
        """Drop the cached feature tiles (they are rebuilt on demand)."""
        if getattr(self, "_cache", None) is not None:
            self._cache.clear()

    # -------------------------------------------------------------- features
    def _tile_features(self, ex: FeatureExtractor, prepared, rows: slice, cols: slice) -> np.ndarray:
        """Features of one grid tile, ``(h, w, F)`` float16, from the cache or computed."""
        cache = self._cache_obj()
        key = (prepared.fingerprint, ex.settings.key(), ex.identity, rows.start, rows.stop, cols.start, cols.stop)
        f = cache.get(key)
        if f is None:
            f = ex.compute(prepared, ((rows.start, rows.stop), (cols.start, cols.stop)))
            f = np.clip(f, -65000, 65000).astype(np.float16)
            cache.put(key, f)
        return f

    def _prepare(self, ex: FeatureExtractor, layout: _Layout, index: tuple):
        plane, net_plane = layout.plane(index)
        return ex.prepare(plane, net_channels=net_plane)

    def _grid_tiles(self, ex: FeatureExtractor, shape, box):
        """Tiles of the global tile grid that meet ``box``, as (rows, cols) slices."""
        t = ex.settings.tile_size
        (y0, y1), (x0, x1) = box
        out = []
        for ty in range(y0 // t * t, y1, t):
            for tx in range(x0 // t * t, x1, t):
                out.append((slice(ty, min(ty + t, shape[0])), slice(tx, min(tx + t, shape[1]))))
        return out

    def iter_cache_features(self, image) -> Iterator[tuple[int, int]]:
        """Compute and cache the features of every tile of ``image`` ahead of painting; yields
        ``(done, total)`` tiles. Needs a fitted segmenter or, before fitting, resolves the model
        from the parameters (and keeps it)."""
        layout = _layout(image, self.channel_axis)
        settings = self._feature_settings()
        self._ensure_model()
        ex = self._get_extractor(settings)
        planes = list(np.ndindex(*layout.leading))
        h, w = layout.spatial[-2:]
        per_plane = self._grid_tiles(ex, (h, w), ((0, h), (0, w)))
        total, done = len(planes) * len(per_plane), 0
        for index in planes:
            prepared = self._prepare(ex, layout, index)
            for rows, cols in per_plane:
                self._tile_features(ex, prepared, rows, cols)
                done += 1
                yield done, total

    def _ensure_model(self):
        """Resolve the ``model`` parameter unless it (and ``device``) are unchanged since the
        last resolution, so refits do not reload the network."""
        if getattr(self, "model_", None) is not None and getattr(self, "_fitted_model_param", object()) is self.model \
                and getattr(self, "_fitted_device", None) == self.device:
            return
        model, source = resolve_model(self.model, self.device if self.model is None or
                                      isinstance(self.model, (str, os.PathLike)) else "auto")
        self.model_, self.model_source_ = model, source
        self.model_identity_ = model.identity()
        self._fitted_model_param, self._fitted_device = self.model, self.device

    # -------------------------------------------------------------- fit
    def fit(self, image, labels) -> "Segmenter":
        """Fit the forest on the painted pixels of ``labels``.

        Parameters
        ----------
        image : array, see the module's table of layouts
        labels : int array, the image's spatial shape
            0 = unlabelled; every other value is a class (at least two classes, any positive
            integers, e.g. 3 and 7). Only planes with paint are featurised.

        Returns
        -------
        self
        """
        layout = _layout(image, self.channel_axis)
        lab = _check_labels(labels, layout.spatial)
        classes = np.unique(lab[lab > 0]) if lab.size else np.array([], lab.dtype)
        if classes.size < 2:
            raise ValueError(f"`labels` must paint at least two classes (values > 0; 0 = unlabelled), "
                             f"found {classes.size} ({classes.tolist()}); paint strokes of each class")
        mspc = self.max_samples_per_class
        if mspc is not None and (isinstance(mspc, bool) or not isinstance(mspc, (int, np.integer)) or mspc < 1):
            raise ValueError(f"`max_samples_per_class` must be None or an integer >= 1, got {mspc!r}")
        forest_params = self._forest_params()
        settings = self._feature_settings()
        self._ensure_model()
        ex = self._get_extractor(settings)

        # choose the painted pixels to fit on (per class at most max_samples_per_class)
        rng = np.random.default_rng(self.random_state)
        flat = np.flatnonzero(lab.reshape(-1) > 0)
        values = lab.reshape(-1)[flat]
        y_index = np.searchsorted(classes, values)
        keep = []
        for k in range(classes.size):
            idx = np.flatnonzero(y_index == k)
            if mspc is not None and idx.size > mspc:
                idx = np.sort(rng.choice(idx, size=int(mspc), replace=False))
            keep.append(idx)
        keep = np.sort(np.concatenate(keep))
        flat, y_index = flat[keep], y_index[keep]
        coords = np.unravel_index(flat, layout.spatial)

        # gather their features plane by plane, tile by tile (cached)
        h, w = layout.spatial[-2:]
        n_feat = None
        X = None
        plane_ids = np.ravel_multi_index(coords[:-2], layout.leading) if layout.leading else np.zeros(flat.size, int)
        t = settings.tile_size
        for pid in np.unique(plane_ids):
            sel = np.flatnonzero(plane_ids == pid)
            index = np.unravel_index(pid, layout.leading) if layout.leading else ()
            index = tuple(int(i) for i in index)
            prepared = self._prepare(ex, layout, index)
            ys, xs = coords[-2][sel], coords[-1][sel]
            tile_id = (ys // t) * ((w + t - 1) // t) + xs // t
            for tid in np.unique(tile_id):
                ty, tx = divmod(int(tid), (w + t - 1) // t)
                rows, cols = slice(ty * t, min(ty * t + t, h)), slice(tx * t, min(tx * t + t, w))
                f = self._tile_features(ex, prepared, rows, cols)
                if X is None:
                    n_feat = f.shape[-1]
                    X = np.empty((flat.size, n_feat), np.float32)
                s = sel[tile_id == tid]
                X[s] = f[coords[-2][s] - rows.start, coords[-1][s] - cols.start]
        forest = _FORESTS[self.forest]()(**forest_params)
        forest.fit(X, y_index)
        self.forest_ = forest
        self.classes_ = classes
        self.n_features_in_ = int(n_feat)
        self.feature_settings_ = settings
        self.image_kind_ = layout.kind
        self.n_channels_ = layout.n_channels
        self.n_samples_fit_ = int(flat.size)
        self._torch_forest = None
        return self

    # -------------------------------------------------------------- predict
    def _forest_device(self) -> torch.device:
        return self.model_.device

    def _proba_rows(self, X: np.ndarray) -> np.ndarray:
        """``(N, F)`` float16/32 -> ``(N, n_classes)`` float32, in chunks."""
        dev = self._forest_device()
        out = np.empty((X.shape[0], self.classes_.size), np.float32)
        if dev.type != "cpu":
            if getattr(self, "_torch_forest", None) is None:
                self._torch_forest = TorchForest(self.forest_, dev)
            tf = self._torch_forest
        for s in range(0, X.shape[0], _PREDICT_CHUNK):
            chunk = np.asarray(X[s:s + _PREDICT_CHUNK], dtype=np.float32)
            if dev.type != "cpu":
                out[s:s + len(chunk)] = tf.predict_proba(torch.from_numpy(chunk)).cpu().numpy()
            else:
                out[s:s + len(chunk)] = self.forest_.predict_proba(chunk)
        return out

    def _check_layout(self, layout: _Layout):
        if layout.kind != self.image_kind_ or layout.n_channels != self.n_channels_:
            raise ValueError(f"this Segmenter was fitted on {self.image_kind_} images with {self.n_channels_} "
                             f"channel(s) but `image` is {layout.kind} with {layout.n_channels}; "
                             "pass images of the same kind (and the same `channel_axis`)")

    def iter_predict(self, image, *, region=None, proba: bool = False) -> Iterator[TilePrediction]:
        """Predict tile by tile, yielding :class:`TilePrediction` (what a viewer refreshes first:
        pass the viewport as ``region``).

        ``region``: ints and unit-step slices over the labels' axes, e.g.
        ``(slice(0, 256), slice(512, 768))`` for a 2D view, ``(5,)`` for plane 5 of a stack.
        """
        self._check_fitted()
        layout = _layout(image, self.channel_axis)
        self._check_layout(layout)
        planes, _, box = _parse_region(region, layout.spatial)
        ex = self._get_extractor(self.feature_settings_)
        h, w = layout.spatial[-2:]
        tiles = self._grid_tiles(ex, (h, w), box)
        (y0, y1), (x0, x1) = box
        total, done = len(planes) * len(tiles), 0
        for index, out_index in planes:
            prepared = self._prepare(ex, layout, index)
            for rows, cols in tiles:
                f = self._tile_features(ex, prepared, rows, cols)
                ry0, ry1 = max(rows.start, y0), min(rows.stop, y1)
                rx0, rx1 = max(cols.start, x0), min(cols.stop, x1)
                part = f[ry0 - rows.start:ry1 - rows.start, rx0 - cols.start:rx1 - cols.start]
                if part.shape[-1] != self.n_features_in_:
                    raise ValueError(f"features have {part.shape[-1]} values per pixel, the forest expects "
                                     f"{self.n_features_in_}")
                p = self._proba_rows(part.reshape(-1, part.shape[-1])).reshape(part.shape[:2] + (-1,))
                done += 1
                yield TilePrediction(done, total, out_index, slice(ry0 - y0, ry1 - y0), slice(rx0 - x0, rx1 - x0),
                                     self.classes_[p.argmax(-1)], p if proba else None)

    def predict_proba(self, image, *, region=None) -> np.ndarray:
        """Class probabilities, ``labels.shape[region] + (n_classes,)`` float32, in the order
        of ``classes_``."""
        self._check_fitted()
        layout = _layout(image, self.channel_axis)
        _, lead, box = _parse_region(region, layout.spatial)
        out = np.empty(lead + (box[0][1] - box[0][0], box[1][1] - box[1][0], self.classes_.size), np.float32)
        for tp in self.iter_predict(image, region=region, proba=True):
            out[tp.index + (tp.rows, tp.cols)] = tp.proba
        return out

    def predict(self, image, *, region=None) -> np.ndarray:
        """Labels in the painted class values, ``labels.shape[region]`` (the dtype of ``classes_``)."""
        self._check_fitted()
        layout = _layout(image, self.channel_axis)
        _, lead, box = _parse_region(region, layout.spatial)
        out = np.empty(lead + (box[0][1] - box[0][0], box[1][1] - box[1][0]), self.classes_.dtype)
        for tp in self.iter_predict(image, region=region):
            out[tp.index + (tp.rows, tp.cols)] = tp.labels
        return out

    def fit_predict(self, image, labels) -> np.ndarray:
        """``fit(image, labels).predict(image)``."""
        return self.fit(image, labels).predict(image)

    # -------------------------------------------------------------- save / load
    def save(self, path) -> Path:
        """Write the fitted segmenter: a zip holding ``segmenter.json`` (format, options, classes,
        feature settings, model identity and source) and the forest as skops (no pickle).
        Written atomically."""
        import skops.io as sio

        self._check_fitted()
        params = {k: getattr(self, k) for k in self._PARAMS if k != "model"}
        params["blocks"] = list(params["blocks"]) if params["blocks"] is not None else None
        meta = {
            "format": SEGMENTER_FORMAT,
            "format_version": SEGMENTER_FORMAT_VERSION,
            "params": params,
            "classes": self.classes_.tolist(),
            "classes_dtype": self.classes_.dtype.str,
            "n_features_in": self.n_features_in_,
            "feature_settings": {**self.feature_settings_.__dict__, "blocks": list(self.feature_settings_.blocks)},
            "model_identity": self.model_identity_,
            "model_source": self.model_source_,
            "image_kind": self.image_kind_,
            "n_channels": self.n_channels_,
            "n_samples_fit": self.n_samples_fit_,
        }
        try:
            text = json.dumps(meta, sort_keys=True)
        except TypeError as exc:
            raise ValueError(f"cannot save: an option is not JSON-serialisable ({exc})") from None
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
            z.writestr(_META_NAME, text)
            z.writestr(_FOREST_NAME, sio.dumps(self.forest_))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path, model=None, *, device: str = "auto") -> "Segmenter":
        """Read a segmenter written by :meth:`save`.

        ``model``: None resolves the model the segmenter was fitted with when that is the
        default model or the seeded random network; a file-based or given model must be passed
        (a path or a ForensicModel). Its identity must match the saved one, else ``ValueError``.
        A file that is not a segmenter, or a forest holding unexpected types, is refused.
        """
        import skops.io as sio

        p = Path(path)
        if not p.is_file():
            raise ValueError(f"no such segmenter file: {str(p)!r}")
        try:
            with zipfile.ZipFile(p) as z:
                names = set(z.namelist())
                if _META_NAME not in names or _FOREST_NAME not in names:
                    raise ValueError(f"{str(p)!r} is a zip file but not a napari-siamforensic segmenter "
                                     f"(it lacks {_META_NAME!r} / {_FOREST_NAME!r})")
                meta_bytes = z.read(_META_NAME)
                forest_bytes = z.read(_FOREST_NAME)
        except (zipfile.BadZipFile, OSError) as exc:
            raise ValueError(f"{str(p)!r} is not a napari-siamforensic segmenter ({type(exc).__name__}: {exc})") from None
        try:
            meta = json.loads(meta_bytes)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ValueError(f"{str(p)!r}: its {_META_NAME} is not valid JSON") from None
        if not isinstance(meta, dict) or meta.get("format") != SEGMENTER_FORMAT:
            raise ValueError(f"{str(p)!r} is not a napari-siamforensic segmenter (format "
                             f"{meta.get('format') if isinstance(meta, dict) else None!r})")
        if meta.get("format_version") != SEGMENTER_FORMAT_VERSION:
            raise ValueError(f"{str(p)!r} has segmenter format version {meta.get('format_version')!r}; this "
                             f"version reads {SEGMENTER_FORMAT_VERSION!r}")
        untrusted = set(sio.get_untrusted_types(data=forest_bytes))
        if not untrusted <= _TRUSTED_FOREST_TYPES:
            raise ValueError(f"{str(p)!r}: the stored forest holds unexpected types "
                             f"{sorted(untrusted - _TRUSTED_FOREST_TYPES)}; refusing to load it")
        forest = sio.loads(forest_bytes, trusted=sorted(untrusted))
        if not isinstance(forest, tuple(make() for make in _FORESTS.values())):
            raise ValueError(f"{str(p)!r}: the stored classifier is a {type(forest).__name__}, not a forest of ours")

        source = meta["model_source"]
        if model is None:
            if source == "default" or source.startswith("random-init"):
                model_arg = None if source == "default" else source
            else:
                raise ValueError(f"{str(p)!r} was fitted with the model {source!r} (identity "
                                 f"{meta['model_identity']}); pass that model: Segmenter.load(path, model=...)")
        else:
            model_arg = model
        try:
            resolved, resolved_source = resolve_model(model_arg, device)
        except ValueError as exc:
            raise ValueError(f"{str(p)!r} needs the model {source!r} (identity {meta['model_identity']}), "
                             f"which could not be loaded: {exc}") from None
        identity = resolved.identity()
        if identity != meta["model_identity"]:
            raise ValueError(f"{str(p)!r} was fitted with model {meta['model_identity']} ({source}) but the model "
                             f"given is {identity} ({resolved_source}); features of a different network do not fit "
                             "this forest - pass the same model, or refit")
        params = dict(meta["params"])
        params["blocks"] = tuple(params["blocks"]) if params.get("blocks") is not None else None
        params["device"] = device
        seg = cls(model=model, **params)
        seg.model_, seg.model_source_, seg.model_identity_ = resolved, source, identity
        seg._fitted_model_param, seg._fitted_device = seg.model, seg.device
        fs = dict(meta["feature_settings"])
        fs["blocks"] = tuple(fs["blocks"])
        seg.feature_settings_ = FeatureSettings(**fs)
        seg.forest_ = forest
        seg.classes_ = np.asarray(meta["classes"], dtype=np.dtype(meta["classes_dtype"]))
        seg.n_features_in_ = int(meta["n_features_in"])
        seg.image_kind_ = meta["image_kind"]
        seg.n_channels_ = int(meta["n_channels"])
        seg.n_samples_fit_ = int(meta["n_samples_fit"])
        seg._torch_forest = None
        return seg
