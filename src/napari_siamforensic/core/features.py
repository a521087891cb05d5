"""Per-pixel features for scribble segmentation: the forensic net's conv maps, upsampled.

The paper's recipe: run the branch network's convolution blocks over the whole image (not a
128 x 128 resize), upsample the feature maps of the last three blocks (32 + 64 + 128 channels)
back to the image and concatenate them, giving 224 features per pixel. Here, optionally, plus
the input-resolution block (16 channels) and a small multiscale filter bank (intensity, edges,
texture at sigmas 1, 2, 4, 8), as ilastik users expect.

Everything is computed **tile by tile**: for an output tile, a window with a halo (at least the
receptive field of the deepest block) is read from the image (reflected at the image borders),
the blocks run on it on the device, and the maps are bilinearly resampled to the tile's pixels.
Windows are aligned to the pooling grid, so a tiled computation equals an untiled one (up to
float rounding) - a 10,000 x 10,000 px image never needs its whole feature stack in memory.

The image is standardised once, globally (the network standardises each input by itself; doing
it per tile would make tiles disagree), and resized by ``rescale`` first when asked (for objects
larger than the receptive field, use ``rescale < 1``).

Shapes: images ``(H, W)`` or ``(H, W, C)`` float; features ``(h, w, F)`` for a box of the image.

Examples
--------
>>> import numpy as np
>>> from napari_siamforensic.core.features import FeatureExtractor, FeatureSettings, fallback_model
>>> fx = FeatureExtractor(fallback_model(device="cpu"), FeatureSettings(blocks=(1, 2)))
>>> img = np.random.default_rng(0).random((64, 80), dtype=np.float32)
>>> fx.compute(fx.prepare(img)).shape   # 32 + 64 conv channels + 16 filter features
(64, 80, 112)
"""
from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .config import ModelConfig
from .devices import make_generator
from .model import SiameseNet

#: Sigmas (in pixels of the working image) of the filter features.
FILTER_SIGMAS = (1.0, 2.0, 4.0, 8.0)
#: Filter features per sigma and channel: smoothed intensity, gradient magnitude, and the two
#: eigenvalues of the Hessian (texture / ridges / blobs).
FILTERS_PER_SIGMA = 4
#: The seed of the freshly initialised network used when no trained model is available.
FALLBACK_SEED = 0

__all__ = ["FeatureSettings", "PreparedImage", "FeatureExtractor", "FeatureCache", "fallback_model",
           "resolve_model", "image_fingerprint", "FILTER_SIGMAS", "FALLBACK_SEED"]


def fallback_model(device: str = "auto"):
    """A freshly initialised network with a fixed seed (:data:`FALLBACK_SEED`).

    Random convolution features are still useful per-pixel features (a random filter bank);
    this is what :class:`~napari_siamforensic.core.segment.Segmenter` uses while no trained
    default model is installed. The same seed always gives the same weights, hence the same
    :meth:`~napari_siamforensic.core.scoring.ForensicModel.identity`.
    """
    from .scoring import ForensicModel

    net = SiameseNet(ModelConfig())
    net.reset_parameters(make_generator(FALLBACK_SEED))
    return ForensicModel(net, device, info={"source": f"random-init(seed={FALLBACK_SEED})"})


def resolve_model(model, device: str = "auto"):
    """``model`` -> ``(ForensicModel, source)``.

    ``None`` -> the bundled default model when it is installed (source ``"default"``), else
    :func:`fallback_model` (source ``"random-init(seed=0)"``). A path -> that file
    (source ``"file:<path>"``). A ``ForensicModel`` -> itself (source ``"given"``).
    """
    from .scoring import ForensicModel, default_weights_path, load_model

    if model is None:
        if default_weights_path().is_file():
            return load_model(None, device=device), "default"
        return fallback_model(device), f"random-init(seed={FALLBACK_SEED})"
    if isinstance(model, str) and model.startswith("random-init"):
        return fallback_model(device), f"random-init(seed={FALLBACK_SEED})"
    if isinstance(model, ForensicModel):
        return model, "given"
    if hasattr(model, "__fspath__") or isinstance(model, str):
        return load_model(model, device=device), f"file:{model}"
    raise TypeError("`model` must be None (the default model), a model file path or a ForensicModel, "
                    f"got {type(model).__name__}")


def image_fingerprint(array: np.ndarray) -> str:
    """A content hash of an array (shape, dtype and bytes): the feature-cache key of an image."""
    a = np.ascontiguousarray(array)
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((a.shape, a.dtype.str)).encode())
    h.update(memoryview(a).cast("B"))
    return h.hexdigest()


@dataclass(frozen=True)
class FeatureSettings:
    """What goes into the per-pixel feature vector.

    Parameters
    ----------
    blocks : tuple of int
        Conv blocks of the branch network whose maps are used (0..3; block ``i`` has
        16 * 2**i channels at 1/2**i resolution). The paper uses ``(1, 2, 3)``.
    filters : bool
        Add :data:`FILTERS_PER_SIGMA` filter features at each of :data:`FILTER_SIGMAS` per
        channel (16 per channel).
    rescale : float
        Resize the image by this factor before computing features (0.5 doubles the effective
        receptive field, for big objects; 2 for tiny ones). Features come back at full size.
    tile_size : int
        Output tile side in pixels (memory per tile grows with its square).
    overlap : int or None
        Halo read around each tile, in working-image pixels; None -> enough for the deepest
        block's receptive field and the largest filter (tiled then equals untiled).
    """

    blocks: tuple = (1, 2, 3)
    filters: bool = True
    rescale: float = 1.0
    tile_size: int = 512
    overlap: int | None = None

    def __post_init__(self):
        blocks = tuple(sorted({int(b) for b in self.blocks})) if self.blocks is not None else ()
        if any(b < 0 or b > 3 for b in blocks):
            raise ValueError(f"`blocks` must hold block indices within [0, 3], got {self.blocks!r}")
        if not blocks and not self.filters:
            raise ValueError("no features asked for: give at least one block in `blocks` or set `filters=True`")
        object.__setattr__(self, "blocks", blocks)
        if isinstance(self.rescale, bool) or not isinstance(self.rescale, (int, float)) or \
                not (0.05 <= float(self.rescale) <= 8):
            raise ValueError(f"`rescale` out of bounds: expected a number within [0.05, 8], got {self.rescale!r}")
        object.__setattr__(self, "rescale", float(self.rescale))
        if isinstance(self.tile_size, bool) or not isinstance(self.tile_size, (int, np.integer)) or self.tile_size < 32:
            raise ValueError(f"`tile_size` must be an integer >= 32, got {self.tile_size!r}")
        if self.overlap is not None and (isinstance(self.overlap, bool) or not isinstance(self.overlap, (int, np.integer))
                                         or self.overlap < 0):
            raise ValueError(f"`overlap` must be None or an integer >= 0, got {self.overlap!r}")

    @property
    def alignment(self) -> int:
        """Windows start on multiples of this (the pooling grid of the deepest block)."""
        return 2 ** max(self.blocks) if self.blocks else 1

    @property
    def halo(self) -> int:
        """The halo in working-image pixels (``overlap``, or the automatic one)."""
        if self.overlap is not None:
            h = int(self.overlap)
        else:
            h = 0
            if self.blocks:
                # receptive field of block b's output: 5, 14, 32, 68 px -> half, plus one
                # low-resolution sample for the bilinear resampling
                rf = {0: 5, 1: 14, 2: 32, 3: 68}[max(self.blocks)]
                h = rf // 2 + 2 * self.alignment
            if self.filters:
                h = max(h, int(math.ceil(3 * max(FILTER_SIGMAS))) + 2)
        a = self.alignment
        return int(math.ceil(h / a) * a)

    def n_features(self, n_net_channels: int, n_filter_channels: int) -> int:
        conv = sum(16 * 2 ** b for b in self.blocks) * n_net_channels
        filt = len(FILTER_SIGMAS) * FILTERS_PER_SIGMA * n_filter_channels if self.filters else 0
        return conv + filt

    def key(self) -> tuple:
        d = asdict(self)
        d["halo"] = self.halo
        return tuple(sorted(d.items()))


@dataclass(frozen=True)
class PreparedImage:
    """One 2D plane ready for feature extraction.

    ``net`` ``(C_net, Hr, Wr)`` float32: the standardised working image(s) the network sees
    (rescaled); ``filt`` ``(C_filt, Hr, Wr)``: the channels the filters see; ``shape`` the
    original ``(H, W)``; ``fingerprint`` the content hash of the original plane.
    """

    net: np.ndarray
    filt: np.ndarray
    shape: tuple
    fingerprint: str


def _gaussian_kernel(sigma: float, order: int, device) -> torch.Tensor:
    radius = int(math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    g = g / g.sum()
    if order == 1:
        g = -x / sigma ** 2 * g
    elif order == 2:
        g = (x ** 2 / sigma ** 4 - 1 / sigma ** 2) * g
    return g


def filter_features(x: torch.Tensor) -> torch.Tensor:
    """``(N, 1, H, W)`` -> ``(N, 16, H, W)``: per sigma in :data:`FILTER_SIGMAS`, the Gaussian-
    smoothed intensity, the gradient magnitude and the two Hessian eigenvalues (scale-normalised).

    Separable Gaussian derivative filters: one vertical pass giving orders 0, 1, 2, then one
    horizontal pass per vertical result. Borders are replicated; the caller's halo covers them.
    """
    n = x.shape[0]
    out = []
    for s in FILTER_SIGMAS:
        ks = torch.stack([_gaussian_kernel(s, o, x.device) for o in (0, 1, 2)]).flip(-1)   # (3, k)
        r = ks.shape[-1] // 2
        v = F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), ks.view(3, 1, -1, 1))        # (N, 3, H, W)
        v = F.pad(v, (r, r, 0, 0), mode="replicate").reshape(n * 3, 1, v.shape[-2], -1)
        hv = F.conv2d(v, ks.view(3, 1, 1, -1)).reshape(n, 3, 3, *x.shape[-2:])              # [vert, horiz]
        smooth, dx, dxx = hv[:, 0, 0], hv[:, 0, 1], hv[:, 0, 2]
        dy, dxy, dyy = hv[:, 1, 0], hv[:, 1, 1], hv[:, 2, 0]
        grad = torch.sqrt(dy * dy + dx * dx) * s
        half_trace = (dyy + dxx) / 2
        root = torch.sqrt(((dyy - dxx) / 2) ** 2 + dxy ** 2)
        out += [smooth, grad, (half_trace + root) * s * s, (half_trace - root) * s * s]
    return torch.stack(out, dim=1)


def _reflect_index(idx: np.ndarray, n: int) -> np.ndarray:
    """Indices outside ``[0, n)`` reflected back in (``d c b | a b c d | c b a``), any distance."""
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    m = np.mod(idx, period)
    return np.where(m < n, m, period - m)


class FeatureExtractor:
    """Per-pixel features of 2D planes from a :class:`ForensicModel`, tile by tile.

    Parameters
    ----------
    model : ForensicModel
        The network; its device is where convolutions and resampling run.
    settings : FeatureSettings
    """

    def __init__(self, model, settings: FeatureSettings):
        self.model = model
        self.settings = settings
        self.device = model.device
        self._identity = None

    @property
    def identity(self) -> str:
        if self._identity is None:
            self._identity = self.model.identity()
        return self._identity

    def n_features(self, n_net_channels: int = 1, n_filter_channels: int = 1) -> int:
        return self.settings.n_features(n_net_channels, n_filter_channels)

    # ------------------------------------------------------------------ preparing a plane
    def prepare(self, plane: np.ndarray, *, net_channels: np.ndarray | None = None) -> PreparedImage:
        """A plane ``(H, W)`` or ``(H, W, C)`` float -> :class:`PreparedImage`.

        ``(H, W)``: gray, the net and the filters see it. ``(H, W, C)``: the filters see each
        channel; the net sees ``net_channels`` ``(H, W, C_net)`` when given (e.g. the luminance
        of RGB), else each channel.
        """
        plane = np.asarray(plane, dtype=np.float32)
        chans = plane[None] if plane.ndim == 2 else np.moveaxis(plane, -1, 0)
        if net_channels is None:
            net = chans
        else:
            net_channels = np.asarray(net_channels, dtype=np.float32)
            net = net_channels[None] if net_channels.ndim == 2 else np.moveaxis(net_channels, -1, 0)
        fingerprint = image_fingerprint(plane)
        net_ready = self._standardise_resize(net)
        filt_ready = net_ready if net is chans else self._standardise_resize(chans)   # gray: one copy
        return PreparedImage(net_ready, filt_ready, tuple(plane.shape[:2]), fingerprint)

    def _standardise_resize(self, chans: np.ndarray) -> np.ndarray:
        out = []
        for c in chans:
            mean, std = float(c.mean(dtype=np.float64)), float(c.std(dtype=np.float64))
            out.append((c - mean) / (std + 1e-6) if std > 1e-12 else np.zeros_like(c))
        stack = np.stack(out).astype(np.float32)
        r = self.settings.rescale
        if r != 1.0:
            h, w = stack.shape[1:]
            size = (max(1, round(h * r)), max(1, round(w * r)))
            t = torch.from_numpy(stack)[None]
            stack = F.interpolate(t, size=size, mode="bilinear", align_corners=False,
                                  antialias=r < 1).numpy()[0]
        return np.ascontiguousarray(stack)

    # ------------------------------------------------------------------ tiles
    def tiles(self, shape, box=None) -> list[tuple[slice, slice]]:
        """The output tiles ``(rows, cols)`` covering ``box`` (default the whole ``shape``)."""
        (y0, y1), (x0, x1) = box if box is not None else ((0, shape[0]), (0, shape[1]))
        t = self.settings.tile_size
        return [(slice(y, min(y + t, y1)), slice(x, min(x + t, x1)))
                for y in range(y0, y1, t) for x in range(x0, x1, t)]

    def iter_tiles(self, prepared: PreparedImage, box=None) -> Iterator[tuple[tuple[slice, slice], np.ndarray]]:
        """Yield ``((rows, cols), features (h, w, F) float32)`` tile by tile over ``box``
        (``((y0, y1), (x0, x1))`` in original pixels, default the whole plane)."""
        for rows, cols in self.tiles(prepared.shape, box):
            yield (rows, cols), self.compute(prepared, ((rows.start, rows.stop), (cols.start, cols.stop)))

    def compute_tiled(self, prepared: PreparedImage, box=None) -> np.ndarray:
        """Features of ``box`` assembled from tiles, ``(h, w, F)`` float32."""
        (y0, y1), (x0, x1) = box if box is not None else ((0, prepared.shape[0]), (0, prepared.shape[1]))
        out = None
        for (rows, cols), f in self.iter_tiles(prepared, ((y0, y1), (x0, x1))):
            if out is None:
                out = np.empty((y1 - y0, x1 - x0, f.shape[-1]), np.float32)
            out[rows.start - y0:rows.stop - y0, cols.start - x0:cols.stop - x0] = f
        return out

    @torch.no_grad()
    def compute(self, prepared: PreparedImage, box=None) -> np.ndarray:
        """Features of one box ``((y0, y1), (x0, x1))`` (original pixels; default the whole
        plane) in a single window: ``(y1 - y0, x1 - x0, F)`` float32 numpy."""
        return self.compute_tensor(prepared, box).permute(1, 2, 0).cpu().numpy()

    @torch.no_grad()
    def compute_tensor(self, prepared: PreparedImage, box=None) -> torch.Tensor:
        """As :meth:`compute`, as a ``(F, h, w)`` float32 tensor on the device."""
        s = self.settings
        H, W = prepared.shape
        (y0, y1), (x0, x1) = box if box is not None else ((0, H), (0, W))
        if not (0 <= y0 < y1 <= H and 0 <= x0 < x1 <= W):
            raise ValueError(f"box {((y0, y1), (x0, x1))} is not a non-empty part of a {H} x {W} plane")
        Hr, Wr = prepared.net.shape[1:]
        ry, rx = Hr / H, Wr / W
        a, halo = s.alignment, s.halo
        # the working-image span the output box needs, plus the halo, aligned to the pooling grid
        wy0 = int(math.floor(((y0 + 0.5) * ry - 0.5) - halo) // a * a)
        wy1 = int(math.ceil((math.ceil((y1 - 0.5) * ry - 0.5) + 1 + halo) / a) * a)
        wx0 = int(math.floor(((x0 + 0.5) * rx - 0.5) - halo) // a * a)
        wx1 = int(math.ceil((math.ceil((x1 - 0.5) * rx - 0.5) + 1 + halo) / a) * a)
        rows = _reflect_index(np.arange(wy0, wy1), Hr)
        cols = _reflect_index(np.arange(wx0, wx1), Wr)
        # sampling grid of the output pixels in the window, normalised for grid_sample
        gy = ((torch.arange(y0, y1, dtype=torch.float64) + 0.5) * ry - wy0) / (wy1 - wy0) * 2 - 1
        gx = ((torch.arange(x0, x1, dtype=torch.float64) + 0.5) * rx - wx0) / (wx1 - wx0) * 2 - 1
        grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1).float().to(self.device)[None]

        def sample(maps: torch.Tensor) -> torch.Tensor:   # (N, C, h, w) -> (N*C, y1-y0, x1-x0)
            out = F.grid_sample(maps.float(), grid.expand(maps.shape[0], -1, -1, -1), mode="bilinear",
                                padding_mode="border", align_corners=False)
            return out.reshape(-1, *out.shape[-2:])

        parts = []
        if s.blocks:
            win = torch.from_numpy(prepared.net[:, rows][:, :, cols]).to(self.device).unsqueeze(1)
            for m in self._block_maps(win):
                parts.append(sample(m))
        if s.filters:
            win = torch.from_numpy(prepared.filt[:, rows][:, :, cols]).to(self.device).unsqueeze(1)
            parts.append(sample(filter_features(win)))
        return torch.cat(parts, dim=0)

    def _block_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``(N, 1, h, w)`` standardised windows -> the wanted blocks' maps (no per-window
        standardisation, unlike ``Branch.feature_maps``)."""
        wanted, last = set(self.settings.blocks), max(self.settings.blocks)
        out = []
        with self.model._autocast():
            for i, block in enumerate(self.model.net.branch.blocks):
                f = block.features(x)
                if i in wanted:
                    out.append(f.float())
                if i == last:
                    break
                x = F.max_pool2d(f, 2)
        return out


class FeatureCache:
    """A byte-bounded LRU cache of feature tiles (stored as float16 numpy arrays).

    Keys are ``(image fingerprint, settings key, model identity, tile box)``; a refit after a
    new stroke, or a predict after a fit, reuses them instead of running the network again.
    """

    def __init__(self, max_bytes: int = 1 << 30):
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict = OrderedDict()
        self.nbytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, key):
        item = self._items.get(key)
        if item is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return item

    def put(self, key, value: np.ndarray) -> None:
        if value.nbytes > self.max_bytes:
            return
        old = self._items.pop(key, None)
        if old is not None:
            self.nbytes -= old.nbytes
        self._items[key] = value
        self.nbytes += value.nbytes
        while self.nbytes > self.max_bytes and self._items:
            _, v = self._items.popitem(last=False)
            self.nbytes -= v.nbytes

    def clear(self) -> None:
        self._items.clear()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._items)
