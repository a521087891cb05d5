"""The trained model as users meet it: embeddings, distances, probabilities, score matrices.

``ForensicModel`` wraps a :class:`~napari_siamforensic.core.model.SiameseNet` on a device.
Inputs are one image or a sequence of images (2D gray or RGB(A), any dtype, any size from
16 px, sizes may differ); each is normalised to [0, 1] and resized to 128 x 128.
"""
from __future__ import annotations

import json
import numbers
import os
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from .._validation import as_image_list, check_pair_lists, check_positive_int
from .config import POSES
from .data import prepare_batch
from .devices import resolve_device, resolve_precision
from .io import MODEL_FORMAT, atomic_save, build_net, model_metadata, net_state, read_safetensors
from .model import SiameseNet

DEFAULT_WEIGHTS = "default.safetensors"
SOFT_FLOOR = 0.25      # the fused distance is itself from here up, and stays above 0 below
COMPILED_CHUNK = 128   # rows per call of a compiled network (one shape, compiled once)


def pose_stack(x: torch.Tensor, poses: str) -> torch.Tensor:
    """``(N, 1, S, S)`` in [0, 1] -> ``(P, N, 1, S, S)``: the 8 dihedral poses (rotations by
    0/90/180/270 degrees, each mirrored or not), and their inversions for ``"dihedral+invert"``.
    ``"none"`` gives P = 1."""
    if poses == "none":
        return x.unsqueeze(0)
    out = []
    for flip in (False, True):
        base = torch.flip(x, dims=(-1,)) if flip else x
        for k in range(4):
            out.append(torch.rot90(base, k, dims=(-2, -1)))
    if poses == "dihedral+invert":
        out += [1 - t for t in out]
    return torch.stack(out)


@lru_cache(maxsize=1)
def pose_composition() -> np.ndarray:
    """``(16, 16)`` int: ``C[s, t]`` is the pose "t, then s" (indices into ``pose_stack``'s order)."""
    # no symmetry of its own: neither a flip or turn of itself, nor of its inversion
    x = torch.tensor([0.0, 0.1, 0.25, 0.3, 0.45, 0.6, 0.65, 0.8, 0.95]).reshape(1, 1, 3, 3)
    poses = pose_stack(x, "dihedral+invert")[:, 0]                          # (16, 1, 3, 3)
    out = np.empty((16, 16), np.int64)
    for t in range(16):
        after = pose_stack(poses[t].unsqueeze(0), "dihedral+invert")[:, 0]
        for s in range(16):
            out[s, t] = int(((poses - after[s]).abs().flatten(1).amax(1) < 1e-6).nonzero()[0, 0])
    return out


@lru_cache(maxsize=1)
def pose_inverse() -> tuple[int, ...]:
    """``inv[p]``: the pose that undoes pose ``p`` (``C[inv[p], p] == 0``)."""
    comp = pose_composition()
    return tuple(int(np.flatnonzero(comp[:, p] == 0)[0]) for p in range(len(comp)))


def soft_floor(z, floor: float = SOFT_FLOOR) -> np.ndarray:
    """``z`` from ``floor`` up, ``floor * exp((z - floor) / floor)`` below: positive, increasing,
    smooth at ``floor``, so a fused distance keeps ``>= 0`` and its order, and ``<= 1`` still
    means what it meant."""
    z = np.asarray(z, dtype=np.float64)
    return np.where(z >= floor, z, floor * np.exp(np.minimum(z - floor, 0.0) / floor))


@dataclass(frozen=True)
class PairwiseProgress:
    """A report of :meth:`ForensicModel.iter_pairwise`: pixel checks ``done`` of ``total`` (0 of
    0 without the check); ``matrix`` is set on the last report."""

    done: int
    total: int
    matrix: np.ndarray | None = None
    stage: str = "pairwise"

    @property
    def message(self) -> str:
        if self.matrix is not None:
            return "matrix done"
        return f"{self.done} of {self.total} pairs checked" if self.total else "embedding"


@dataclass(frozen=True)
class EmbedProgress:
    """One batch of a streamed embedding: ``done`` of ``total`` images; ``embeddings``
    ``(batch, D)`` numpy for images ``start:start+batch``."""

    done: int
    total: int
    start: int
    embeddings: np.ndarray


class ForensicModel:
    """A siamese forensic network ready to score images.

    Parameters
    ----------
    net : SiameseNet
    device : str
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"mps"``.
    precision : {"fp32", "bf16", "auto"}
        Arithmetic of inference. ``"auto"`` uses bf16 where it is fast (see ``resolve_precision``).
    poses : {"none", "dihedral", "dihedral+invert"}
        Default for :meth:`distance`: the minimum of f over these poses of the second image.
        ``"none"`` is the paper's raw f.
    batch_size : int
        Images per forward pass.
    info : dict
        Free-form provenance saved with the weights (training data, steps, ...).
    calibration : (scale, offset)
        :meth:`same_probability` is ``sigmoid(scale * (1 - f) + offset)``; ``(1, 0)`` is the
        paper's ``sigmoid(1 - f)``. Fitted on held-out pairs by :func:`calibrate`.
    pose_penalty : float
        Added to f in every pose but the image's own before the minimum over poses is taken:
        ``min(f_own, min_other f + pose_penalty)``. The minimum of many distances is biased low
        for different images, and re-used images mostly keep their pose; 0 is the plain minimum.
    pixel_check : (weight, center) or None
        Adds the pixel check (:mod:`~napari_siamforensic.core.pixels`: the best normalised
        cross-correlation ``match`` of the two images' band-passed thumbnails over flips,
        quarter turns, crops and sizes, and a small rotation read off their spectra) to f: the
        distance becomes
        ``soft_floor(f + weight * (center - match))``. Fitted on held-out pairs by
        :func:`calibrate_pixels`; None (models you train) leaves f alone.
    """

    def __init__(self, net: SiameseNet, device: str = "auto", *, precision: str = "fp32",
                 poses: str = "none", batch_size: int = 256, info: dict | None = None,
                 calibration: tuple[float, float] = (1.0, 0.0), pose_penalty: float = 0.0,
                 pixel_check: tuple[float, float] | None = None):
        if not isinstance(net, SiameseNet):
            raise TypeError(f"`net` must be a SiameseNet, got {type(net).__name__}")
        self.device = resolve_device(device)
        self.autocast_dtype = resolve_precision(precision, self.device)
        self.precision = precision
        self.poses = self._check_poses(poses)
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.info = dict(info or {})
        self.calibration = self._check_calibration(calibration)
        self.pose_penalty = pose_penalty
        self.pixel_check = pixel_check
        self.net = net.to(self.device).eval()
        self.net.to(memory_format=torch.channels_last)
        self._compiled = None      # torch.compile'd network (see compile())

    # ------------------------------------------------------------------ basics
    @property
    def pose_penalty(self) -> float:
        return self._pose_penalty

    @pose_penalty.setter
    def pose_penalty(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) <= 10.0:
            raise ValueError(f"`pose_penalty` must be a number in [0, 10], got {value!r}")
        self._pose_penalty = float(value)

    @property
    def pixel_check(self) -> tuple[float, float] | None:
        return self._pixel_check

    @pixel_check.setter
    def pixel_check(self, value) -> None:
        if value is None:
            self._pixel_check = None
            return
        try:
            weight, center = (float(v) for v in value)
        except Exception:
            raise TypeError(f"`pixel_check` must be None or a pair (weight, center), got {value!r}") from None
        if not (np.isfinite(weight) and 0.0 < weight <= 100.0 and np.isfinite(center) and -1.0 <= center <= 2.0):
            raise ValueError(f"`pixel_check` needs a weight in (0, 100] and a center in [-1, 2], got {value!r}")
        self._pixel_check = (weight, center)

    def _use_pixels(self, pixels, poses: str) -> bool:
        if pixels is None:
            return self._pixel_check is not None and poses != "none"
        if not isinstance(pixels, bool):
            raise TypeError(f"`pixels` must be True, False or None, got {pixels!r}")
        if pixels and self._pixel_check is None:
            raise ValueError("`pixels=True` needs the model's `pixel_check` (weight, center), and this model has "
                             "none; fit it on held-out pairs with `calibrate_pixels`, or pass pixels=False")
        return pixels

    def fuse(self, f, match) -> np.ndarray:
        """f and the pixel check's ``match`` (same shape) -> the fused distance
        ``soft_floor(f + weight * (center - match))``. f unchanged where ``match`` is NaN (not
        checked) or the model has no ``pixel_check``."""
        f = np.asarray(f, dtype=np.float64)
        if self._pixel_check is None:
            return f.copy()
        weight, center = self._pixel_check
        m = np.asarray(match, dtype=np.float64)
        fused = soft_floor(f + weight * (center - np.nan_to_num(m, nan=center)))
        return np.where(np.isnan(m), f, fused)

    def _pose_offsets(self, n_poses: int) -> torch.Tensor:
        """``(P, 1)``: 0 for the image's own pose (the first), ``pose_penalty`` for the others."""
        off = torch.full((n_poses, 1), self._pose_penalty, device=self.device)
        off[0] = 0.0
        return off

    @property
    def config(self):
        return self.net.config

    @property
    def input_size(self) -> int:
        return self.net.config.input_size

    @property
    def alpha(self) -> np.ndarray:
        """The positive weights of the metric, ``(D,)``."""
        with torch.no_grad():
            return self.net.alpha.float().cpu().numpy()

    def __repr__(self) -> str:
        return (f"ForensicModel(device={str(self.device)!r}, precision={self.precision!r}, "
                f"poses={self.poses!r}, embedding_dim={self.config.embedding_dim})")

    @staticmethod
    def _check_poses(poses: str) -> str:
        if poses not in POSES:
            raise ValueError(f"`poses` must be one of {POSES}, got {poses!r}")
        return poses

    @staticmethod
    def _check_calibration(calibration) -> tuple[float, float]:
        try:
            scale, offset = (float(v) for v in calibration)
        except Exception:
            raise TypeError(f"`calibration` must be a pair (scale, offset), got {calibration!r}") from None
        if not (np.isfinite(scale) and np.isfinite(offset) and scale > 0):
            raise ValueError(f"`calibration` needs a finite scale > 0 and a finite offset, got {calibration!r}")
        return scale, offset

    def _autocast(self):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    # ------------------------------------------------------------------ tensors
    def prepare(self, images) -> torch.Tensor:
        """Images -> ``(N, 1, 128, 128)`` float32 on the model's device, in [0, 1]."""
        return prepare_batch(as_image_list(images), self.input_size, self.device)

    def compile(self) -> "ForensicModel":
        """Embed with a ``torch.compile``'d network from now on; returns ``self``.

        Measured on a 2-core CPU in bf16: about 1.35x the eager images per second, after
        ~30 s of compilation at the first batch (``docs/screening.md``). Batches are then run
        in fixed chunks of ``COMPILED_CHUNK`` rows (the last one padded), so one shape is
        compiled once. Embeddings differ from eager ones by rounding only. Needs what
        ``torch.compile`` needs (a C++ compiler on the CPU); if compiling fails, a warning says
        why and the model stays eager.
        """
        try:
            self._compiled = torch.compile(self.net, dynamic=False)
        except Exception as exc:      # e.g. a Python that torch.compile does not support
            import warnings

            warnings.warn(f"torch.compile is not available, embedding without it: {exc}", RuntimeWarning,
                          stacklevel=2)
            self._compiled = None
        return self

    @property
    def is_compiled(self) -> bool:
        """True while embedding runs through the compiled network (False after a fallback)."""
        return self._compiled is not None

    def _run_compiled(self, x: torch.Tensor) -> torch.Tensor | None:
        """The compiled forward of ``x`` in fixed chunks, or None when compiling failed."""
        out = []
        c = COMPILED_CHUNK
        try:
            for start in range(0, x.shape[0], c):
                chunk = x[start:start + c]
                n = chunk.shape[0]
                if n < c:
                    chunk = torch.cat([chunk, chunk.new_zeros((c - n, *chunk.shape[1:]))])
                chunk = chunk.contiguous(memory_format=torch.channels_last)
                with self._autocast():
                    out.append(self._compiled(chunk).float()[:n])
        except Exception as exc:      # no compiler, unsupported platform, ...: stay eager
            import warnings

            warnings.warn(f"torch.compile failed, embedding without it: {type(exc).__name__}: "
                          f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}", RuntimeWarning,
                          stacklevel=3)
            self._compiled = None
            return None
        return torch.cat(out)

    @torch.no_grad()
    def embed_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 1, 128, 128)`` -> ``(N, D)`` float32 embeddings, in batches of ``batch_size``."""
        if self._compiled is not None and x.shape[0]:
            e = self._run_compiled(x)
            if e is not None:
                return e
        out = []
        for start in range(0, x.shape[0], self.batch_size):
            chunk = x[start:start + self.batch_size].contiguous(memory_format=torch.channels_last)
            with self._autocast():
                out.append(self.net(chunk).float())
        return torch.cat(out) if out else torch.empty(0, self.config.embedding_dim, device=self.device)

    @torch.no_grad()
    def embed_windows_tensor(self, x: torch.Tensor, grid: int, step: int, shared: int | None = None) -> torch.Tensor:
        """``(N, 1, H, W)`` -> ``(N, grid * grid, D)`` float32: the embeddings of a grid of
        ``input_size`` windows ``step`` cells apart, the first ``shared`` conv blocks (default:
        all) run once over each image (:meth:`Branch.windows`), in batches of as many pixels as
        ``batch_size`` network inputs (fewer images than ``batch_size``: the same peak memory as
        :meth:`embed_tensor`; never compiled)."""
        out = []
        per = max(1, (self.batch_size * self.input_size ** 2) // (x.shape[-2] * x.shape[-1]))
        for start in range(0, x.shape[0], per):
            chunk = x[start:start + per].contiguous(memory_format=torch.channels_last)
            with self._autocast():
                out.append(self.net.branch.windows(chunk, grid, step, shared).float())
        if out:
            return torch.cat(out)
        return torch.empty(0, grid * grid, self.config.embedding_dim, device=self.device)

    def _embed_poses(self, x: torch.Tensor, poses: str) -> torch.Tensor:
        stack = pose_stack(x, poses)                       # (P, N, 1, S, S)
        p, n = stack.shape[:2]
        return self.embed_tensor(stack.reshape(p * n, *x.shape[1:])).reshape(p, n, -1)

    # ------------------------------------------------------------------ public API
    def embed(self, images) -> np.ndarray:
        """Embeddings ``(N, D)`` (D = 128) as numpy float32."""
        return self.embed_tensor(self.prepare(images)).cpu().numpy()

    def iter_embed(self, images, batch_size: int | None = None) -> Iterator[EmbedProgress]:
        """Stream embeddings batch by batch (memory does not grow with the number of images).

        ``images`` may be any iterable of images (a generator reading files, say)."""
        bs = check_positive_int(self.batch_size if batch_size is None else batch_size, "batch_size")
        items = images if isinstance(images, list) else None
        total = len(items) if items is not None else -1
        buf: list = []
        done = 0

        def flush():
            nonlocal done, buf
            e = self.embed(buf)
            start = done
            done += len(buf)
            buf = []
            return EmbedProgress(done, total, start, e)

        for im in (items if items is not None else images):
            buf.append(im)
            if len(buf) == bs:
                yield flush()
        if buf:
            yield flush()

    def weighted_embed(self, images) -> np.ndarray:
        """``alpha * embedding``, ``(N, D)``: plain L1 between these rows is the metric f
        (what a nearest-neighbour index such as faiss needs)."""
        return self.embed(images) * self.alpha[None, :]

    @torch.no_grad()
    def distance(self, images_a, images_b, *, poses: str | None = None, pixels: bool | None = None) -> np.ndarray:
        """The forensic distance per pair, ``(N,)``; ``<= 1`` means "b is a manipulated copy of
        a".

        ``poses="none"`` is the paper's raw f. Other ``poses`` take the minimum of f over those
        poses of b (with ``pose_penalty``), and, where the model has a ``pixel_check`` (the
        bundled default model does), add the pixel check: ``soft_floor(f + weight * (center -
        match))`` (see :meth:`fuse`). ``pixels=False`` leaves it out, ``True`` asks for it."""
        a, b = as_image_list(images_a, "images_a"), as_image_list(images_b, "images_b")
        check_pair_lists(a, b)
        poses = self._check_poses(self.poses if poses is None else poses)
        use_pixels = self._use_pixels(pixels, poses)
        ea = self.embed_tensor(prepare_batch(a, self.input_size, self.device))
        eb = self._embed_poses(prepare_batch(b, self.input_size, self.device), poses)    # (P, N, D)
        d = ((ea.unsqueeze(0) - eb).abs() * self.net.alpha.float()).sum(-1)               # (P, N)
        f = (d + self._pose_offsets(d.shape[0])).min(dim=0).values.cpu().numpy()
        if not use_pixels:
            return f
        from .pixels import match_checked_pairs

        return self.fuse(f, match_checked_pairs(a, b).score).astype(np.float32)

    def same_probability(self, images_a, images_b, *, poses: str | None = None,
                         pixels: bool | None = None) -> np.ndarray:
        """The probability that b is a manipulated copy of a, per pair, ``(N,)`` in [0, 1].

        ``sigmoid(scale * (1 - d) + offset)`` of :meth:`distance` ``d`` with this model's
        ``calibration``; with the default ``(1, 0)`` it is the paper's ``sigmoid(1 - f)``."""
        return self.probability_from_distance(self.distance(images_a, images_b, poses=poses, pixels=pixels))

    def probability_from_distance(self, distance) -> np.ndarray:
        """Map distances f to calibrated "same" probabilities (same shape, float32)."""
        scale, offset = self.calibration
        z = scale * (1.0 - np.asarray(distance, dtype=np.float64)) + offset
        return (0.5 * (1.0 + np.tanh(0.5 * z))).astype(np.float32)   # a sigmoid that cannot overflow

    def pairwise(self, images, *, poses: str | None = None, pixels: bool | None = None) -> np.ndarray:
        """The matrix of :meth:`distance` between all images, ``(N, N)``, symmetric, zero diagonal.

        With poses, ``M[i, j]`` is the minimum over poses of j (and of i, by symmetry), with
        ``pose_penalty`` added to the poses other than j's own; with the pixel check (as in
        :meth:`distance`) it is fused in for every pair (``N (N - 1) / 2`` checks of a few ms
        each, each image's thumbnails made once; :meth:`iter_pairwise` reports progress)."""
        report = None
        for report in self.iter_pairwise(images, poses=poses, pixels=pixels):
            pass
        return report.matrix

    def iter_pairwise(self, images, *, poses: str | None = None, pixels: bool | None = None,
                      chunk: int = 2048) -> Iterator["PairwiseProgress"]:
        """:meth:`pairwise` as a generator: a :class:`PairwiseProgress` after the embeddings and
        after every ``chunk`` pixel checks; the last one holds the matrix. Stop iterating to
        cancel."""
        ims = as_image_list(images)
        poses = self._check_poses(self.poses if poses is None else poses)
        use_pixels = self._use_pixels(pixels, poses)
        chunk = check_positive_int(chunk, "chunk")
        m = self._pose_matrix(ims, poses)
        n = len(ims)
        total = n * (n - 1) // 2 if use_pixels else 0
        yield PairwiseProgress(0, total)
        if use_pixels and n > 1:
            from .pixels import PixelChecker

            i, j = np.triu_indices(n, 1)
            checker = PixelChecker(lambda k: ims[k])
            match = np.empty(total, np.float32)
            for s0 in range(0, total, chunk):
                match[s0:s0 + chunk] = checker(i[s0:s0 + chunk], j[s0:s0 + chunk]).score
                if s0 + chunk < total:
                    yield PairwiseProgress(s0 + chunk, total)
            m[i, j] = m[j, i] = self.fuse(m[i, j], match)
        yield PairwiseProgress(total, total, m)

    @torch.no_grad()
    def _pose_matrix(self, ims: list[np.ndarray], poses: str) -> np.ndarray:
        e = self._embed_poses(prepare_batch(ims, self.input_size, self.device), poses)   # (P, N, D)
        w = self.net.alpha.float()
        n = e.shape[1]
        out = torch.empty(n, n, device=self.device)
        off = self._pose_offsets(e.shape[0])
        for i in range(n):   # rows, so memory stays O(P * N * D)
            out[i] = (((e[0, i][None, None, :] - e).abs() * w).sum(-1) + off).min(dim=0).values
        out = torch.minimum(out, out.T)
        out.fill_diagonal_(0)
        return out.cpu().numpy()

    @torch.no_grad()
    def feature_maps(self, x: torch.Tensor, blocks=None) -> list[torch.Tensor]:
        """Per-block conv feature maps of ``(B, 1, H, W)`` tensors (H, W multiples of 16).

        See :meth:`Branch.feature_maps`. Used for segmentation."""
        with self._autocast():
            return [f.float() for f in self.net.branch.feature_maps(x.to(self.device), blocks)]

    def save(self, path: str | os.PathLike, *, dtype: str = "float32") -> Path:
        """Write the weights as safetensors with the config as JSON metadata (atomic)."""
        if dtype not in ("float32", "float16"):
            raise ValueError(f"`dtype` must be 'float32' or 'float16', got {dtype!r}")
        tensors = net_state(self.net, torch.float16 if dtype == "float16" else None)
        meta = model_metadata(self.net, {"poses": self.poses, "info": self.info,
                                         "calibration": list(self.calibration),
                                         "pose_penalty": self.pose_penalty,
                                         "pixel_check": list(self.pixel_check) if self.pixel_check else None})
        return atomic_save(tensors, path, meta)

    def identity(self) -> str:
        """A short hash of the weights, to tie saved classifiers/indices to this model."""
        import hashlib

        h = hashlib.sha256()
        for k, v in sorted(self.net.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().float().cpu().numpy().tobytes())
        return h.hexdigest()[:16]


def calibrate(model: ForensicModel, distances, is_duplicate) -> tuple[float, float]:
    """Fit ``model.calibration`` by logistic regression of ``is_duplicate`` on ``1 - f``
    (held-out pairs, never the training ones) and set it on the model. Returns (scale, offset).

    ``distances``: ``(N,)`` f values; ``is_duplicate``: ``(N,)`` booleans with both classes.
    """
    from sklearn.linear_model import LogisticRegression

    d = np.asarray(distances, dtype=np.float64).ravel()
    y = np.asarray(is_duplicate).astype(bool).ravel()
    if d.shape != y.shape or d.size < 4:
        raise ValueError(f"`distances` and `is_duplicate` must be equal-length 1D arrays of >= 4 pairs, "
                         f"got shapes {np.shape(distances)} and {np.shape(is_duplicate)}")
    if y.all() or not y.any():
        raise ValueError("`is_duplicate` must hold both duplicates and non-duplicates to calibrate")
    lr = LogisticRegression(C=1e4).fit((1.0 - d)[:, None], y)
    scale = float(lr.coef_[0, 0])
    if scale <= 0:
        raise ValueError("calibration failed: on these pairs larger distances do not mean fewer duplicates")
    model.calibration = (scale, float(lr.intercept_[0]))
    return model.calibration


def calibrate_pixels(model: ForensicModel, f, match, is_duplicate) -> tuple[float, float]:
    """Fit ``model.pixel_check`` (weight, center) on held-out pairs (never the training ones)
    and set it on the model. Returns (weight, center).

    ``f``: ``(N,)`` distances without the check (``model.distance(a, b, pixels=False)``);
    ``match``: ``(N,)`` pixel-check scores (:func:`~napari_siamforensic.core.pixels.pair_match`;
    pairs where it is NaN, not compared, are left out: :meth:`ForensicModel.fuse` keeps their f);
    ``is_duplicate``: ``(N,)`` booleans with both classes. A logistic regression of
    ``is_duplicate`` on (f, match), with the classes weighted equally, gives the line where
    duplicates and different images are equally likely; (weight, center) put it at
    ``f + weight * (center - match) == 1``, so ``distance <= 1`` stays the decision. Refit
    ``calibration`` (:func:`calibrate`) on the fused distances afterwards.
    """
    from sklearn.linear_model import LogisticRegression

    f = np.asarray(f, dtype=np.float64).ravel()
    m = np.asarray(match, dtype=np.float64).ravel()
    y = np.asarray(is_duplicate).astype(bool).ravel()
    if not (f.shape == m.shape == y.shape) or f.size < 4:
        raise ValueError(f"`f`, `match` and `is_duplicate` must be equal-length 1D arrays of >= 4 pairs, got shapes "
                         f"{np.shape(f)}, {np.shape(match)} and {np.shape(is_duplicate)}")
    compared = ~np.isnan(m)
    if not (np.isfinite(f).all() and np.isfinite(m[compared]).all()):
        raise ValueError("`f` must be finite, and `match` finite or NaN (not compared)")
    f, m, y = f[compared], m[compared], y[compared]
    if f.size < 4:
        raise ValueError(f"`match` is NaN (not compared) for all but {f.size} pairs; need >= 4 compared pairs")
    if y.all() or not y.any():
        raise ValueError("`is_duplicate` must hold both duplicates and non-duplicates to calibrate")
    lr = LogisticRegression(C=1e4, class_weight="balanced").fit(np.c_[f, m], y)
    coef_f, coef_m = (float(v) for v in lr.coef_[0])
    if coef_f >= 0 or coef_m <= 0:
        raise ValueError("calibration failed: on these pairs a larger f or a smaller match does not mean fewer "
                         f"duplicates (coefficients f {coef_f:.3g}, match {coef_m:.3g})")
    weight = coef_m / -coef_f
    center = (1.0 + float(lr.intercept_[0]) / coef_f) / weight
    model.pixel_check = (weight, center)
    return model.pixel_check


def default_weights_path() -> Path:
    """Where the bundled default model lives inside the installed package."""
    return Path(str(resources.files("napari_siamforensic") / "weights" / DEFAULT_WEIGHTS))


def load_model(path: str | os.PathLike | None = None, device: str = "auto", *,
               precision: str = "fp32", poses: str | None = None, batch_size: int = 256,
               pose_penalty: float | None = None) -> ForensicModel:
    """Load a model file (or the bundled default model when ``path`` is None).

    Training checkpoints load too. Raises ``ValueError`` for a missing, foreign, truncated,
    corrupted or wrong-architecture file; nothing is unpickled.
    """
    if path is None:
        path = default_weights_path()
        if not path.is_file():
            raise ValueError("this installation has no bundled default model "
                             f"({str(path)!r} is missing); pass the path of a model file")
    elif not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`path` must be a file path or None, got {type(path).__name__}")
    tensors, meta = read_safetensors(path)
    net = build_net(tensors, meta, str(path))
    stored_poses = meta.get("poses", "none")
    try:
        info = json.loads(meta.get("info", "{}"))
    except json.JSONDecodeError:
        info = {}
    try:
        calibration = tuple(json.loads(meta.get("calibration", "[1.0, 0.0]")))
    except json.JSONDecodeError:
        raise ValueError(f"{str(path)!r}: its calibration metadata is not valid JSON") from None
    try:
        pixel_check = json.loads(meta.get("pixel_check", "null"))
        pixel_check = None if pixel_check is None else tuple(float(v) for v in pixel_check)
        if pixel_check is not None and len(pixel_check) != 2:
            raise TypeError
    except (json.JSONDecodeError, TypeError, ValueError):
        raise ValueError(f"{str(path)!r}: its pixel_check metadata is not a pair of numbers") from None
    if pose_penalty is None:
        try:
            pose_penalty = float(json.loads(meta.get("pose_penalty", "0")))
        except (json.JSONDecodeError, TypeError, ValueError):
            raise ValueError(f"{str(path)!r}: its pose_penalty metadata is not a number") from None
    return ForensicModel(net, device, precision=precision, calibration=calibration, pose_penalty=pose_penalty,
                         pixel_check=pixel_check,
                         poses=poses if poses is not None else (stored_poses if stored_poses in POSES else "none"),
                         batch_size=batch_size, info=info if isinstance(info, dict) else {})
