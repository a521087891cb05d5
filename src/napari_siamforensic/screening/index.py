"""Streamed pose embeddings in a resumable on-disk store, and nearest-neighbour candidates.

Vectors are ``alpha * embedding`` (so plain L1 between rows is the model's metric f), one
per stored pose: ``(N, P, D)`` with pose 0 the image as it is.

Which poses are stored (``pose_embedding``):

* ``"all"``: every pose of the group (P = 1, 8 or 16 for ``"none"``, ``"dihedral"``,
  ``"dihedral+invert"``). Pairs are scored exactly as :meth:`ForensicModel.pairwise` does:
  the minimum over the poses of one image against the other as it is, both directions.
* ``"basis"``: a *difference basis* of the group, ``POSE_BASES`` (6 of the 16 poses, 4 of the
  8). If ``b`` is ``a`` in pose ``T``, there are stored poses ``s, t`` with ``s(a) = t(b)``
  pixel for pixel, for every ``T`` of the group; so comparing every stored pose of ``a`` with
  every stored pose of ``b`` reaches every flip, rotation and inversion, at 6/16 of the
  embedding cost. The neighbour search compares every stored pose with every other; the
  distance is the minimum over one pose pair per relation (:func:`pose_pairs`;
  ``pose_penalty`` added where the relation is not the identity), half of them the exact
  minimum's own comparisons. It is close to, but not, the number
  :meth:`ForensicModel.distance` gives, which embeds the 16 poses of the second image.

Crop windows (``crop_poses``, :func:`crop_query_poses`): a 3 x 3 grid of crops of every item,
each ``CROP_SIDE`` (3/4) of its width and height, embedded in the fewest poses that reach every
relation against the index's poses, stored after the pose vectors: ``(N, P + C, D)``. They are
queries only, so a copy cut from a larger panel finds it; :func:`crop_min_distance` scores them.

Candidate search: an index holds the pose-0 vectors of every item (``"all"``) or every stored
pose (``"basis"``); every stored pose (and crop window) of every item is a query, so a flipped,
rotated, inverted or cut-out copy finds its original. The index is faiss ``IndexFlat`` with ``METRIC_L1`` (exact,
the model's own metric) when faiss is installed, else an exact chunked torch search; for very
large corpora an inverted-file index (``IndexIVFFlat``, L1) searches a few cells instead of
every row. Memory is ``O(N * P * D)`` for the index plus one chunk of queries; there is never
an ``N x N`` matrix. Neighbours are ranked with a hub correction (``hub_correction``: the
distance minus the neighbour's mean distance to its ``HUB_K`` nearest others). Candidates are then re-scored exactly with the pose-minimum distance of
the stored poses, in both directions.

The store is a folder of chunks written atomically (``chunk-000000.npy`` vectors +
``chunk-000000.json`` rows and the files completed by that chunk) and a ``manifest.json``
naming the model and the poses. A screen that stops can be resumed: completed files are not
read again, and a new batch of figures is screened against an existing corpus without
re-embedding it.
"""
from __future__ import annotations

import itertools
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from ..core.data import prepare_batch
from ..core.scoring import ForensicModel, pose_composition, pose_inverse, pose_stack
from .sources import ItemRef

STORE_FORMAT = "napari-siamforensic/screen-store/1"
MODES = ("all", "within", "across")
METRICS = ("l1", "l2")
POSE_COUNTS = {"none": 1, "dihedral": 8, "dihedral+invert": 16}
# Difference bases (indices into ``pose_stack``'s order): every pose T of the group is t^-1 s for
# some s, t of the basis. 6 is the fewest for the 16 poses, 4 for the 8 (found by exhaustive search).
POSE_BASES = {"none": (0,), "dihedral": (0, 1, 4, 6), "dihedral+invert": (0, 1, 2, 4, 11, 12)}
POSE_EMBEDDINGS = ("basis", "all")
INDEXES = ("auto", "flat", "ivf")
IVF_MIN_ROWS = 200_000   # index="auto" uses the inverted-file index from this many rows on


def stored_pose_ids(poses: str, pose_embedding: str = "all") -> tuple[int, ...]:
    """Which poses (indices into ``pose_stack``'s order) a screen embeds for every item."""
    if poses not in POSE_COUNTS:
        raise ValueError(f"`poses` must be one of {tuple(POSE_COUNTS)}, got {poses!r}")
    if pose_embedding not in POSE_EMBEDDINGS:
        raise ValueError(f"`pose_embedding` must be one of {POSE_EMBEDDINGS}, got {pose_embedding!r}")
    return tuple(range(POSE_COUNTS[poses])) if pose_embedding == "all" else POSE_BASES[poses]


# Crop windows (``crops=True``): a copy cut from a larger panel is found through a 3 x 3 grid of
# crops of every item, each 3/4 of its width and height, used as extra queries (never stored in
# the index). Among 10,000 generated panels recall@10 of planted copies went from 0.494 (whole
# images) to 0.772 (docs/screening.md).
CROP_SIDE = 0.75
CROP_GRID = 3
# How the windows are embedded (``crop_layout``; ``sf.screen(crops=...)``; kept in a store's
# manifest):
# * "pixels" (the default, ``crops=True``): the item resized to ``input_size / CROP_SIDE`` (171 px),
#   the windows cut out at offsets 0, 22 and 43 px and each embedded on its own.
# * "features" (``crops="features"``, nineteenth session): the item is resized once to
#   ``input_size + (CROP_GRID - 1) * CROP_STEP_CELLS * stride`` (160 px for the 128 px network,
#   stride 16), each crop pose of it goes once through the conv blocks, and every window is the
#   network's head on the 8 x 8 cells of the last pooled map it covers (``Branch.windows``):
#   windows 4/5 of the side at offsets 0, 16 and 32 px. The embedding takes a third of the time
#   on 2 CPU cores, but the windows are approximations (the convs see past a window's edge and
#   the item is standardised as a whole), and fewer cut-out copies are found (calibration corpus:
#   0.958 of the planted copies among the candidates instead of 0.988; docs/screening.md,
#   *Nineteenth session*).
CROP_LAYOUTS = ("features", "pixels")
CROP_LAYOUT = "pixels"
CROP_STEP_CELLS = 1


@lru_cache(maxsize=None)
def crop_query_poses(poses: str, pose_embedding: str = "basis") -> tuple[int, ...]:
    """The fewest poses (indices into ``pose_stack``'s order) a crop window is embedded in so that,
    against the poses the index holds, every relation of the group is reached: the index holds
    ``s(b)``; a crop ``c`` of a in pose ``p`` matches when ``s(T(c)) = p(c)`` for ``b = T(c)``.

    With the basis of ``"dihedral+invert"`` these are the four turns (0, 1, 2, 3); with
    ``pose_embedding="all"`` the index holds pose 0 only, so every pose of the group."""
    group = POSE_COUNTS[poses]
    index_ids = (0,) if pose_embedding == "all" else stored_pose_ids(poses, pose_embedding)
    if index_ids == (0,):
        return tuple(range(group))
    comp = pose_composition()
    for r in range(1, group + 1):
        for q in itertools.combinations(range(group), r):
            if len({t for t in range(group) for s in index_ids for p in q if comp[s, t] == p}) == group:
                return tuple(int(v) for v in q)
    raise AssertionError("unreachable: the whole group always covers itself")


def resolve_crops(crops) -> str | None:
    """``sf.screen``'s ``crops`` -> the crop layout (``CROP_LAYOUTS``), or None without crop
    windows: True is ``CROP_LAYOUT``, False None, a layout name itself."""
    if isinstance(crops, bool):
        return CROP_LAYOUT if crops else None
    if isinstance(crops, str):
        if crops in CROP_LAYOUTS:
            return crops
        raise ValueError(f"`crops` must be True, False or one of {CROP_LAYOUTS}, got {crops!r}")
    raise TypeError(f"`crops` must be True, False or one of {CROP_LAYOUTS}, got {crops!r}")


def crop_input_side(model: ForensicModel) -> int:
    """The side (px) an item is resized to for ``crop_layout="features"``: the network's input
    plus ``CROP_GRID - 1`` steps of ``CROP_STEP_CELLS`` cells of the last pooled map."""
    return model.input_size + (CROP_GRID - 1) * CROP_STEP_CELLS * model.net.branch.stride()


def crop_rows(crop_poses) -> int:
    """Rows of crop windows per item: ``CROP_GRID ** 2`` windows in each of ``crop_poses``."""
    return CROP_GRID * CROP_GRID * len(crop_poses)


@dataclass(frozen=True)
class PosePairs:
    """The pose pairs a pair of items is compared in: stored pose ``i`` of a against stored
    pose ``j`` of b (column indices), with ``offset`` (the pose penalty where the relation is
    not the identity); ``pose``/``of_b`` is the relation in the terms of :func:`best_poses`."""

    i: np.ndarray
    j: np.ndarray
    offset: np.ndarray
    pose: np.ndarray
    of_b: np.ndarray


def pose_pairs(pose_ids: tuple[int, ...], penalty: float = 0.0) -> PosePairs:
    """All poses stored (``0..P-1``): a as it is against every pose of b, and every pose of a
    against b as it is (the exact pose minimum).

    A basis: one comparison per relation ``T`` (``b = T(a)``) and its mirror image (the same
    two poses with a and b swapped, so the distance is symmetric). Where the basis allows, the
    comparison has one image as it is (8 of the 16 relations with ``POSE_BASES``: the very
    comparisons of the exact minimum); otherwise it compares two posed images. Not every
    stored pose against every other: the identity relation alone would then be the minimum of
    6 comparisons (``s(a)`` against ``s(b)`` for each stored ``s``) with no penalty, and
    unrelated pairs would score lower than with the exact minimum the calibration was fitted
    to (13.2 % of unrelated pairs at f <= 1 against 11.0 % exact and 11.5 % this way, on the
    screen benchmark's 10,000 panels; recall@10 of the 500 planted pairs within 2 of both,
    recall@1 5 pairs below all 36 and 1 above the exact minimum)."""
    ids = tuple(int(p) for p in pose_ids)
    comp = pose_composition()
    rows = []
    if ids == tuple(range(len(ids))):
        rows += [(0, j, ids[j], True) for j in range(len(ids))]
        rows += [(i, 0, ids[i], False) for i in range(1, len(ids))]
    else:
        inverse = pose_inverse()
        every = []
        for i, s in enumerate(ids):
            for j, t in enumerate(ids):
                # s(a) = t(b)  <=>  b = T(a) with t∘T = s
                if s == 0:
                    every.append((i, j, t, True))          # a as it is ~ pose t of b: T = t^-1
                elif t == 0:
                    every.append((i, j, s, False))         # pose s of a ~ b as it is: T = s
                else:
                    every.append((i, j, int(np.flatnonzero(comp[t] == s)[0]), False))
        best: dict[int, tuple[int, int]] = {}
        for k, (i, j, pose, of_b) in enumerate(every):
            relation = inverse[pose] if of_b else pose
            rank = 0 if (ids[i] == 0 or ids[j] == 0) else 1
            if relation not in best or rank < best[relation][0]:
                best[relation] = (rank, k)
        keep = {k for _, k in best.values()}
        at = {(i, j): k for k, (i, j, _, _) in enumerate(every)}
        keep |= {at[(every[k][1], every[k][0])] for k in keep}      # the mirror image: symmetric
        rows = [every[k] for k in sorted(keep)]
    i, j, pose, of_b = (np.array(c) for c in zip(*rows))
    identity = (pose == 0)
    offset = np.where(identity, 0.0, float(penalty)).astype(np.float32)
    return PosePairs(i.astype(np.int64), j.astype(np.int64), offset, pose.astype(np.int64), of_b.astype(bool))


def have_faiss() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def poses_of(x: torch.Tensor, pose_ids) -> torch.Tensor:
    """``pose_stack(x, "dihedral+invert")[pose_ids]`` without making the other poses."""
    out = []
    for i in pose_ids:
        inv, flip, k = int(i) // 8, (int(i) // 4) % 2, int(i) % 4
        t = torch.flip(x, dims=(-1,)) if flip else x
        t = torch.rot90(t, k, dims=(-2, -1))
        out.append(1 - t if inv else t)
    return torch.stack(out)


@torch.no_grad()
def embed_poses(model: ForensicModel, images: list[np.ndarray], poses: str,
                pose_ids: tuple[int, ...] | None = None, crop_poses: tuple[int, ...] = (),
                crop_layout: str = CROP_LAYOUT) -> np.ndarray:
    """``(B, P, D)`` float32: ``alpha * embedding`` of every pose of every image (or of the
    poses ``pose_ids`` only, indices into ``pose_stack``'s order).

    ``crop_poses``: also embed a ``CROP_GRID x CROP_GRID`` grid of crop windows of every image
    in each of these poses, appended after the P pose rows: ``(B, P + crop_rows(crop_poses), D)``,
    window-major (row ``P + w * Q + q`` is window ``w``, row-major in the grid, in pose
    ``crop_poses[q]``). ``crop_layout`` (``CROP_LAYOUTS``): ``"features"`` resizes the image once
    to :func:`crop_input_side` and takes the windows from one pass of the conv blocks over each
    pose of it (window ``w`` is then window ``w`` of the *posed* image's grid); ``"pixels"``
    resizes it to ``input_size / CROP_SIDE``, cuts the windows (each ``CROP_SIDE`` of its width
    and height) and embeds each on its own, in each pose."""
    x = prepare_batch(images, model.input_size, model.device)
    stack = pose_stack(x, poses) if pose_ids is None else poses_of(x, pose_ids)   # (P, B, 1, S, S)
    p, b = stack.shape[:2]
    alpha = model.net.alpha.float()
    e = model.embed_tensor(stack.reshape(p * b, *x.shape[1:])).reshape(p, b, -1) * alpha
    out = e.permute(1, 0, 2)
    if crop_poses and crop_layout == "features":
        side = crop_input_side(model)
        big = prepare_batch(images, side, model.device)                              # (B, 1, side, side)
        st = poses_of(big, crop_poses)                                                # (Q, B, 1, side, side)
        q = st.shape[0]
        ec = model.embed_windows_tensor(st.reshape(q * b, 1, side, side), CROP_GRID, CROP_STEP_CELLS)
        ec = ec.reshape(q, b, CROP_GRID * CROP_GRID, -1) * alpha                     # (Q, B, W, D)
        out = torch.cat([out, ec.permute(1, 2, 0, 3).reshape(b, -1, ec.shape[-1])], 1)
    elif crop_poses:
        if crop_layout != "pixels":
            raise ValueError(f"`crop_layout` must be one of {CROP_LAYOUTS}, got {crop_layout!r}")
        size = model.input_size
        side = int(round(size / CROP_SIDE))
        big = prepare_batch(images, side, model.device)                              # (B, 1, side, side)
        offs = [int(round(k * (side - size) / (CROP_GRID - 1))) for k in range(CROP_GRID)]
        win = torch.stack([big[..., oy:oy + size, ox:ox + size] for oy in offs for ox in offs], 1)
        nw = win.shape[1]
        st = poses_of(win.reshape(b * nw, 1, size, size), crop_poses)             # (Q, B * W, 1, S, S)
        q = st.shape[0]
        ec = model.embed_tensor(st.reshape(q * b * nw, 1, size, size)).reshape(q, b, nw, -1) * alpha
        out = torch.cat([out, ec.permute(1, 2, 0, 3).reshape(b, nw * q, -1)], 1)
    return out.contiguous().cpu().numpy().astype(np.float32)


# ----------------------------------------------------------------------------------- store
def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _ref_to_row(ref: ItemRef) -> dict:
    row = asdict(ref)
    row["panel"] = list(ref.panel) if ref.panel is not None else None
    return row


def _row_to_ref(row: dict) -> ItemRef:
    panel = row.get("panel")
    return ItemRef(row["source"], row.get("page"), row.get("object"),
                   tuple(panel) if panel is not None else None, row.get("document", row["source"]),
                   row.get("kind", "image"))


@dataclass
class StoredChunk:
    vectors: np.ndarray        # (B, P, D), possibly memory-mapped
    refs: list[ItemRef]
    files: dict[str, str]      # path -> stamp of the files completed with this chunk
    skipped: list[dict]


class EmbeddingStore:
    """Pose vectors of screened items, in memory (``path=None``) or in a folder of chunks.

    Parameters
    ----------
    path : folder or None
    model_id : str
        :meth:`ForensicModel.identity` of the model; a store built by another model is refused.
    poses : str
    dim : int
        Embedding dimension D.
    crop_layout : str
        How the crop windows are embedded (``CROP_LAYOUTS``). A store built with crop windows in
        another layout is refused (stores of before the nineteenth session have ``"pixels"``), so
        that every item of one store is comparable.
    """

    def __init__(self, path: str | os.PathLike | None, *, model_id: str, poses: str, dim: int,
                 pose_ids: tuple[int, ...] | None = None, crop_poses: tuple[int, ...] = (),
                 crop_layout: str = CROP_LAYOUT):
        if crop_layout not in CROP_LAYOUTS:
            raise ValueError(f"`crop_layout` must be one of {CROP_LAYOUTS}, got {crop_layout!r}")
        self.path = Path(path) if path is not None else None
        self.model_id, self.poses, self.dim = model_id, poses, int(dim)
        self.pose_ids = tuple(int(p) for p in pose_ids) if pose_ids is not None else stored_pose_ids(poses, "all")
        self.crop_poses = tuple(int(p) for p in crop_poses)
        self.crop_layout = crop_layout
        self.chunks: list[StoredChunk] = []
        if self.path is not None:
            self._open()

    def _manifest(self) -> dict:
        return {"format": STORE_FORMAT, "model": self.model_id, "poses": self.poses, "dim": self.dim,
                "pose_ids": list(self.pose_ids), "crop_poses": list(self.crop_poses), "crop_layout": self.crop_layout}

    def _open(self) -> None:
        assert self.path is not None
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"`store`: {str(self.path)!r} exists and is not a folder")
        self.path.mkdir(parents=True, exist_ok=True)
        man = self.path / "manifest.json"
        if man.is_file():
            try:
                have = json.loads(man.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise ValueError(f"`store`: {str(man)!r} is not a screen store manifest ({exc})") from None
            want = self._manifest()
            if have.get("format") != STORE_FORMAT:
                raise ValueError(f"`store`: {str(self.path)!r} is not a screen store (format {have.get('format')!r})")
            if "pose_ids" not in have and have.get("poses") in POSE_COUNTS:     # stores of before the bases
                have["pose_ids"] = list(stored_pose_ids(have["poses"], "all"))
            have.setdefault("crop_poses", [])                                     # stores of before the crops
            layout = have.get("crop_layout", "pixels")                           # stores of before the layouts
            if have["crop_poses"] and have["crop_poses"] == want["crop_poses"] and layout != self.crop_layout:
                hint = f"crops={layout!r}" if layout in CROP_LAYOUTS else "another store folder"
                raise ValueError(f"`store`: {str(self.path)!r} was built with crop windows in the {layout!r} layout, "
                                 f"this screen uses {self.crop_layout!r}; screen with {hint} or use a new "
                                 "store folder")
            for key in ("model", "poses", "dim", "pose_ids", "crop_poses"):
                if have.get(key) != want[key]:
                    if key == "crop_poses":
                        built = "with crop windows" if have[key] else "without crop windows"
                        hint = "crops=False (--no-crops)" if have[key] == [] else "crops=True"
                        raise ValueError(f"`store`: {str(self.path)!r} was built {built} (crop poses {have[key]!r}), "
                                         f"this screen uses crop poses {want[key]!r}; screen with {hint} "
                                         "or use a new store folder")
                    what = "stored poses (pose_embedding)" if key == "pose_ids" else key
                    raise ValueError(f"`store`: {str(self.path)!r} was built with {what} {have.get(key)!r}, this "
                                     f"screen uses {want[key]!r}; use a new store folder")
        else:
            _atomic_write(man, json.dumps(self._manifest(), indent=1).encode())
        for meta_path in sorted(self.path.glob("chunk-*.json")):
            vec_path = meta_path.with_suffix(".npy")
            try:
                meta = json.loads(meta_path.read_text())
                vectors = np.load(vec_path, mmap_mode="r")
            except Exception:   # a chunk cut short by a crash: ignore it, its files are re-done
                continue
            refs = [_row_to_ref(r) for r in meta["items"]]
            if vectors.shape[0] != len(refs):
                continue
            self.chunks.append(StoredChunk(vectors, refs, dict(meta.get("files", {})), list(meta.get("skipped", []))))

    # ------------------------------------------------------------------ reading
    def completed_files(self) -> set[str]:
        """Files fully stored and unchanged since (same size and modification time)."""
        out = set()
        for c in self.chunks:
            for path, stamp in c.files.items():
                if file_stamp(path) == stamp:
                    out.add(path)
        return out

    def restore(self) -> tuple[list[ItemRef], list[np.ndarray], list[dict]]:
        """Refs, vector chunks and skipped records of completed files only (in store order)."""
        done = self.completed_files()
        refs, vecs, skipped = [], [], []
        for c in self.chunks:
            keep = np.array([r.source in done for r in c.refs], dtype=bool)
            if keep.all():
                refs += c.refs
                vecs.append(c.vectors)
            elif keep.any():
                refs += [r for r, k in zip(c.refs, keep) if k]
                vecs.append(np.asarray(c.vectors)[keep])
            skipped += [s for s in c.skipped if s.get("file") in done]
        return refs, vecs, skipped

    # ------------------------------------------------------------------ writing
    def append(self, vectors: np.ndarray, refs: list[ItemRef], files: dict[str, str], skipped: list[dict]) -> None:
        """Add one chunk: ``vectors`` ``(B, P, D)`` of ``refs``; ``files`` (path -> stamp) are
        complete once this chunk is written; ``skipped`` records carry their ``file``."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if self.path is None:
            self.chunks.append(StoredChunk(vectors, list(refs), dict(files), list(skipped)))
            return
        k = len(self.chunks)
        while (self.path / f"chunk-{k:06d}.json").exists():
            k += 1
        vec_path = self.path / f"chunk-{k:06d}.npy"
        import io

        buf = io.BytesIO()
        np.save(buf, vectors)
        _atomic_write(vec_path, buf.getvalue())
        meta = {"items": [_ref_to_row(r) for r in refs], "files": dict(files), "skipped": list(skipped)}
        _atomic_write(vec_path.with_suffix(".json"), json.dumps(meta).encode())   # last: commits the chunk
        self.chunks.append(StoredChunk(np.load(vec_path, mmap_mode="r"), list(refs), dict(files), list(skipped)))


def file_stamp(path: str) -> str | None:
    """Size and modification time of a file: a changed file is read again on resume."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"{st.st_size}:{st.st_mtime_ns}"


# ----------------------------------------------------------------------------------- vectors
class Vectors:
    """Row access to a list of ``(B, P + C, D)`` chunks without concatenating them: P stored
    poses (``pose_ids``), then C rows of crop windows (``crop_poses``, :func:`embed_poses`)
    that are queries only."""

    def __init__(self, chunks: list[np.ndarray], pose_ids: tuple[int, ...] | None = None,
                 crop_poses: tuple[int, ...] = (), transform=None):
        self.transform = transform          # applied to every row read (a lazy whitening)
        self.chunks = [c for c in chunks if len(c)]
        sizes = [len(c) for c in self.chunks]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.n = int(self.offsets[-1])
        self.crop_poses = tuple(int(p) for p in crop_poses)
        self.c = crop_rows(self.crop_poses) if self.crop_poses else 0
        width = int(self.chunks[0].shape[1]) if self.chunks else None
        self.p = (width - self.c) if width is not None else (len(pose_ids) if pose_ids else 1)
        self.d = int(self.chunks[0].shape[2]) if self.chunks else 0
        self.pose_ids = tuple(int(p) for p in pose_ids) if pose_ids is not None else tuple(range(self.p))
        if len(self.pose_ids) != self.p:
            raise ValueError(f"{self.p} poses stored per item but {len(self.pose_ids)} pose ids given"
                             + (f" (and {self.c} rows of crop windows)" if self.c else ""))

    @property
    def all_poses(self) -> bool:
        """True when every pose of the group is stored (pose 0 alone is the index)."""
        return self.pose_ids == tuple(range(self.p))

    def __len__(self) -> int:
        return self.n

    def _gather(self, idx: np.ndarray, lo: int, hi: int) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        out = np.empty((len(idx), hi - lo, self.d), np.float32)
        which = np.searchsorted(self.offsets, idx, side="right") - 1
        for c in np.unique(which):
            m = which == c
            out[m] = self.chunks[c][idx[m] - self.offsets[c], lo:hi]
        return self._tf(out)

    def _tf(self, x: np.ndarray) -> np.ndarray:
        if self.transform is None:
            return x
        return self.transform(x.reshape(-1, x.shape[-1])).reshape(x.shape[:-1] + (-1,))

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """``(len(idx), P, D)`` stored poses for global row indices."""
        return self._gather(idx, 0, self.p)

    def crop_rows(self, idx: np.ndarray) -> np.ndarray:
        """``(len(idx), C, D)`` crop windows (C = 0 without them)."""
        return self._gather(idx, self.p, self.p + self.c)

    def query_rows(self, idx: np.ndarray) -> np.ndarray:
        """``(len(idx), P + C, D)``: every row that searches the index (poses, then crops)."""
        return self._gather(idx, 0, self.p + self.c)

    def pose0(self) -> np.ndarray:
        """``(N, D)`` pose-0 vectors."""
        if not self.chunks:
            return np.zeros((0, self.d), np.float32)
        return self._tf(np.concatenate([np.asarray(c[:, 0]) for c in self.chunks]))

    @property
    def index_size(self) -> int:
        """Rows of the neighbour index: N with all poses stored, N * P with a basis."""
        return self.n if self.all_poses else self.n * self.p

    def index_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """The rows the neighbour index holds and the item of each: the pose-0 vectors when all
        poses are stored, else every stored pose (``(N * P, D)``); never the crop windows."""
        if self.all_poses:
            return self.pose0(), np.arange(self.n, dtype=np.int64)
        if not self.chunks:
            return np.zeros((0, self.d), np.float32), np.zeros(0, np.int64)
        rows = np.concatenate([self._tf(np.asarray(c[:, :self.p]).reshape(-1, self.d)) for c in self.chunks])
        return rows, np.repeat(np.arange(self.n, dtype=np.int64), self.p)

    def blocks(self, size: int) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, (b, P, D))`` blocks of stored poses."""
        for start in range(0, self.n, size):
            yield start, self.rows(np.arange(start, min(self.n, start + size)))

    def query_blocks(self, size: int) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, (b, P + C, D))`` blocks of every query row."""
        for start in range(0, self.n, size):
            yield start, self.query_rows(np.arange(start, min(self.n, start + size)))

    def without_crops(self) -> "Vectors":
        """The same items, stored poses only (views of the chunks)."""
        if not self.c:
            return self
        return Vectors([c[:, :self.p] for c in self.chunks], self.pose_ids, transform=self.transform)

    def transformed(self, fn, replace: bool = False) -> "Vectors":
        """The same rows (crops included) read through ``fn`` (``(M, D) -> (M, D')``), lazily:
        no second copy of the corpus. ``replace``: ``fn`` takes the place of a transform these
        vectors already have (it must apply that one itself)."""
        if self.transform is not None and not replace:
            raise ValueError("these vectors are transformed already")
        return Vectors(self.chunks, self.pose_ids, self.crop_poses, transform=fn)


# ----------------------------------------------------------------------------------- search
def _pair_distances(va: np.ndarray, vb: np.ndarray, pp: PosePairs) -> np.ndarray:
    """``(m, K)``: f of every pose pair of ``pp`` (offsets added)."""
    return np.abs(va[:, pp.i] - vb[:, pp.j]).sum(-1) + pp.offset


def pose_min_distance(vectors: Vectors, a: np.ndarray, b: np.ndarray, chunk: int = 2048,
                      penalty: float = 0.0) -> np.ndarray:
    """Exact symmetric distance per pair, ``(M,)``: with all poses stored,
    ``min(min_p |a0 - b_p|, min_p |b0 - a_p|)``; with a pose basis, the minimum over every
    stored pose of a against every stored pose of b. ``penalty`` is added wherever the two are
    compared in different poses (``ForensicModel.pose_penalty``)."""
    pp = pose_pairs(vectors.pose_ids, penalty)
    out = np.empty(len(a), np.float32)
    for s in range(0, len(a), chunk):
        va, vb = vectors.rows(a[s:s + chunk]), vectors.rows(b[s:s + chunk])
        out[s:s + chunk] = _pair_distances(va, vb, pp).min(1)
    return out


def crop_match(vectors: Vectors, a: np.ndarray, b: np.ndarray, chunk: int = 256,
               penalty: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(distance, pose, of_b)`` of the best crop-window comparison of each pair, both ways:
    :func:`crop_min_distance` and :func:`crop_best_poses` in one pass."""
    m = len(a)
    dist, pose, of_b = np.full(m, np.nan, np.float32), np.zeros(m, np.int64), np.ones(m, bool)
    if not vectors.c or not m:
        return dist, pose, of_b
    comp = pose_composition()
    inverse = pose_inverse()
    window_pose = np.array(vectors.crop_poses * (vectors.c // len(vectors.crop_poses)))   # (C,)
    stored = np.array(vectors.pose_ids)
    offset = np.where(window_pose[:, None] == stored[None, :], 0.0, float(penalty)).astype(np.float32)  # (C, P)
    # window of x in pose q ~ pose s of y  <=>  pose q^-1 s of y ~ x as it is
    relation = np.array([[comp[inverse[int(wp)], int(sp)] for sp in stored] for wp in window_pose]).reshape(-1)
    for s in range(0, m, chunk):
        ia, ib = a[s:s + chunk], b[s:s + chunk]
        found = []
        for x, y in ((ia, ib), (ib, ia)):
            d = np.abs(vectors.crop_rows(x)[:, :, None] - vectors.rows(y)[:, None]).sum(-1) + offset   # (m, C, P)
            flat = d.reshape(len(x), -1)
            k = flat.argmin(1)
            found.append((flat[np.arange(len(x)), k], relation[k]))
        use_a = found[0][0] <= found[1][0]
        dist[s:s + chunk] = np.where(use_a, found[0][0], found[1][0])
        pose[s:s + chunk] = np.where(use_a, found[0][1], found[1][1])
        of_b[s:s + chunk] = use_a
    return dist, pose, of_b


def crop_min_distance(vectors: Vectors, a: np.ndarray, b: np.ndarray, chunk: int = 256,
                      penalty: float = 0.0) -> np.ndarray:
    """``(M,)`` f between a crop window of one image and the other image: the minimum over every
    crop row of a against every stored pose of b, and of b against a. ``penalty`` is added
    where the window's pose is not the stored pose it is compared with. NaN without crop rows.

    It is lower than the whole-image distance for a copy cut from a larger panel, and also for
    unrelated pairs (more comparisons): it finds candidates and orders the table, while the
    calibrated ``probability`` stays that of the whole-image distance."""
    return crop_match(vectors, a, b, chunk, penalty)[0]


def crop_best_poses(vectors: Vectors, a: np.ndarray, b: np.ndarray, chunk: int = 256,
                    penalty: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """:func:`best_poses` for the crop-window match of each pair (the comparison
    :func:`crop_min_distance` takes its minimum from): ``(pose, of_b)``. A window of x in pose q
    that matches pose s of y means pose ``q^-1 s`` of y matches x as it is (``of_b`` when x is a)."""
    _, pose, of_b = crop_match(vectors, a, b, chunk, penalty)
    return pose, of_b


class _TorchFlat:
    """Exact chunked search (the fallback without faiss)."""

    def __init__(self, base: np.ndarray, metric: str):
        self.base = torch.from_numpy(np.ascontiguousarray(base))
        self.p = 1 if metric == "l1" else 2

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, self.base.shape[0])
        tq = torch.from_numpy(np.ascontiguousarray(q))
        rows = max(1, (1 << 24) // max(1, self.base.shape[0]))
        ds, is_ = [], []
        for s in range(0, len(tq), rows):
            d = torch.cdist(tq[s:s + rows], self.base, p=self.p)
            v, i = d.topk(k, dim=1, largest=False)
            ds.append(v)
            is_.append(i)
        return torch.cat(ds).numpy(), torch.cat(is_).numpy()


def resolve_index(index: str, rows: int, backend: str = "auto") -> str:
    """``"flat"`` or ``"ivf"`` for an index of ``rows`` rows (``"auto"``: IVF from
    ``IVF_MIN_ROWS`` rows on, when faiss is there)."""
    if index not in INDEXES:
        raise ValueError(f"`index` must be one of {INDEXES}, got {index!r}")
    faiss_ok = backend == "faiss" or (backend == "auto" and have_faiss())
    if index == "ivf":
        if not faiss_ok:
            raise ValueError("`index='ivf'` needs faiss (pip install faiss-cpu) and backend 'auto' or 'faiss'")
        return "ivf"
    if index == "auto":
        return "ivf" if faiss_ok and rows >= IVF_MIN_ROWS else "flat"
    return "flat"


IVF_PROBE = 16        # cells searched per query
IVF_CELL_FACTOR = 16  # cells = sqrt(IVF_CELL_FACTOR * rows)


def ivf_shape(rows: int) -> tuple[int, int]:
    """``(cells, cells searched per query)`` of the inverted-file index for ``rows`` rows:
    ``sqrt(16 * rows)`` cells (which balances comparing a query with the cell centres against
    scanning the 16 cells searched). On 10,240 items of the screen benchmark (61,440 rows) this
    found every pair the exact search found (``docs/screening.md``;
    ``benchmarks/screen.py --ivf-probes`` sweeps the cells searched at this number of cells)."""
    nlist = int(np.clip(np.sqrt(max(rows, 1) * IVF_CELL_FACTOR), 16, 8192))
    return nlist, min(nlist, IVF_PROBE)


def build_index(base: np.ndarray, metric: str = "l1", backend: str = "auto", threads: int | None = None,
                index: str = "flat", seed: int = 0):
    """A flat (exact) index over ``base`` ``(N, D)``: faiss when available, else torch; or with
    ``index="ivf"`` a faiss inverted-file index (``ivf_shape`` cells, k-means on a sample)."""
    if metric not in METRICS:
        raise ValueError(f"`metric` must be one of {METRICS}, got {metric!r}")
    if backend not in ("auto", "faiss", "torch"):
        raise ValueError(f"`backend` must be 'auto', 'faiss' or 'torch', got {backend!r}")
    kind = resolve_index(index, len(base), backend)
    if backend == "faiss" or (backend == "auto" and have_faiss()):
        import faiss

        if threads:
            faiss.omp_set_num_threads(int(threads))
        fmetric = faiss.METRIC_L1 if metric == "l1" else faiss.METRIC_L2
        base = np.ascontiguousarray(base, dtype=np.float32)
        if kind == "ivf":
            nlist, nprobe = ivf_shape(len(base))
            quantizer = faiss.IndexFlat(base.shape[1], fmetric)
            ivf = faiss.IndexIVFFlat(quantizer, base.shape[1], nlist, fmetric)
            rng = np.random.default_rng(seed)
            sample = base if len(base) <= 64 * nlist else base[np.sort(rng.choice(len(base), 64 * nlist, replace=False))]
            ivf.cp.seed = int(seed)
            ivf.train(sample)
            ivf.add(base)
            ivf.nprobe = nprobe
            return ivf
        flat = faiss.IndexFlat(base.shape[1], fmetric)
        flat.add(base)
        return flat
    return _TorchFlat(base, metric)


WHITEN_EPS = 1e-5          # variance floor, as a fraction of the largest principal variance
WHITEN_MIN_ROWS = 512      # fewer index rows (about 86 items with the basis): no whitening
WHITEN_SAMPLE = 200_000    # rows the covariance is estimated from, at most


@dataclass(frozen=True)
class Whitening:
    """``x -> (x - mean) @ proj``: PCA whitening of the search space (every principal direction
    of the corpus's vectors scaled to unit variance, floored at ``WHITEN_EPS`` of the largest)."""

    mean: np.ndarray
    proj: np.ndarray

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray((np.asarray(x, np.float32) - self.mean) @ self.proj, dtype=np.float32)


def fit_whitening(rows: np.ndarray, eps: float = WHITEN_EPS, sample: int = WHITEN_SAMPLE,
                  seed: int = 0) -> Whitening | None:
    """Fit :class:`Whitening` on ``rows`` ``(M, D)`` (a seeded sample of ``sample`` rows at most);
    None for fewer than ``WHITEN_MIN_ROWS`` rows or rows without spread.

    Why: the network's embeddings of a corpus vary mostly along a handful of directions (on the
    screen benchmark's panels two principal directions carry 90 % of the variance) that same-kind
    panels share, so plain L1 ranks a copy below many merely similar panels. Whitened, the
    directions that tell one panel from another count as much: recall@10 of planted copies
    among 5,000 panels went from 0.220 to 0.572 (``docs/screening.md``)."""
    rows = np.asarray(rows)
    if len(rows) < WHITEN_MIN_ROWS:
        return None
    if len(rows) > sample:
        rows = rows[np.sort(np.random.default_rng(seed).choice(len(rows), sample, replace=False))]
    x = rows.astype(np.float64)
    mean = x.mean(0)
    w, u = np.linalg.eigh(np.cov(x - mean, rowvar=False))
    w = np.clip(w, 0.0, None)
    if not np.isfinite(w).all() or w.max() <= 0:
        return None
    return Whitening(mean.astype(np.float32), (u / np.sqrt(w + eps * w.max())).astype(np.float32))


def _fit_search_whitening(vectors: Vectors, seed: int = 0) -> Whitening | None:
    """:func:`fit_whitening` on the index rows of a seeded sample of items (``WHITEN_SAMPLE``
    rows at most), without gathering every row of a large corpus first."""
    per_item = 1 if vectors.all_poses else vectors.p
    m = min(len(vectors), -(-WHITEN_SAMPLE // per_item))
    idx = np.sort(np.random.default_rng(seed).choice(len(vectors), m, replace=False)) if m < len(vectors) \
        else np.arange(len(vectors))
    rows = vectors.rows(idx)
    rows = rows[:, 0] if vectors.all_poses else rows.reshape(-1, vectors.d)
    return fit_whitening(rows, sample=len(rows) + 1)


HUB_K = 10   # hub correction: an item's radius is its mean distance to this many nearest others


def _hub_radii(searcher, vectors: Vectors, base_item: np.ndarray, per_item: int, square: bool,
               query_chunk: int) -> np.ndarray:
    """``(N,)``: each item's mean distance from its stored poses to its ``HUB_K`` nearest other
    items, the radius the hub correction subtracts. ``square``: square the distances the index
    returns (the torch fallback's L2 is not squared, faiss's is: L2 radii are squared L2)."""
    n = len(vectors)
    kk = min(HUB_K, n - 1)
    kf = min(n * per_item, (kk + 1) * per_item)
    radius = np.zeros(n, np.float64)
    for start, block in vectors.blocks(query_chunk):
        bn, p, dim = block.shape
        dist, nbr = searcher.search(np.ascontiguousarray(block.reshape(bn * p, dim)), kf)
        dist = dist.reshape(bn, p * kf).astype(np.float64)
        nbr = nbr.reshape(bn, p * kf)
        if square:
            dist = dist ** 2
        for r in range(bn):
            cand, d = _ranked_items(dist[r], nbr[r], base_item)
            d = d[cand != start + r][:kk]
            radius[start + r] = d.mean() if len(d) else 0.0
    return radius


def _ranked_items(dist: np.ndarray, nbr: np.ndarray, base_item: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One query item's search results (its rows' index rows ``nbr`` at ``dist``, -1 for none)
    as items, nearest first, each once at its smallest distance: ``(items, distances)``."""
    o = np.argsort(dist, kind="stable")
    hit = nbr[o]
    ok = hit >= 0
    items, d = base_item[hit[ok]], dist[o][ok]
    _, first = np.unique(items, return_index=True)
    first = np.sort(first)
    return items[first], d[first]


def _with_column(rows: np.ndarray, column) -> np.ndarray:
    """``rows`` ``(M, D)`` with one more coordinate (a scalar or ``(M,)``)."""
    out = np.empty((len(rows), rows.shape[1] + 1), np.float32)
    out[:, :-1] = rows
    out[:, -1] = column
    return out


def _refill(searcher, base: np.ndarray):
    """The same index (trained cells kept) holding ``base`` instead of its rows."""
    if isinstance(searcher, _TorchFlat):
        searcher.base = torch.from_numpy(np.ascontiguousarray(base, dtype=np.float32))
    else:
        searcher.reset()
        searcher.add(np.ascontiguousarray(base, dtype=np.float32))
    return searcher


def candidate_pairs(vectors: Vectors, groups: np.ndarray, **kwargs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`iter_candidate_pairs` drained: ``(a, b, distance)``."""
    gen = iter_candidate_pairs(vectors, groups, **kwargs)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def iter_candidate_pairs(vectors: Vectors, groups: np.ndarray, *, k: int = 10, mode: str = "all",
                         metric: str = "l1", backend: str = "auto", query_chunk: int = 256,
                         threads: int | None = None, pose_penalty: float = 0.0, index: str = "auto",
                         whiten: bool = True, hub_correction: bool = True, ranks: bool = False):
    """Candidate pairs ``(a, b, distance)`` with ``a < b``, each item's ``k`` nearest others.

    Parameters
    ----------
    vectors : Vectors
        ``(N, P, D)`` pose vectors (all poses, or a pose basis: see the module's docstring).
    groups : (N,) int
        Document of each item; ``mode`` ``"within"`` keeps pairs inside one document,
        ``"across"`` pairs between documents, ``"all"`` both.
    k : int
        Candidates per item (per query direction); the union over items is returned.
    metric : "l1" (the model's metric, exact) or "l2" (a faster BLAS proxy; re-scored in L1).
    pose_penalty : float
        Added to the poses other than an item's own in the re-scoring (the model's
        ``pose_penalty``); the neighbour search itself ranks by the plain pose distance.
    index : {"auto", "flat", "ivf"}
        ``"flat"`` compares every query with every row (exact); ``"ivf"`` (faiss) only with the
        rows of the nearest cells, ``ivf_shape`` (approximate, for very large corpora);
        ``"auto"``: IVF from ``IVF_MIN_ROWS`` index rows on. ``"within"`` is always exact.
    whiten : bool
        Search in the whitened space of this corpus (:func:`fit_whitening`, from
        ``WHITEN_MIN_ROWS`` index rows on); candidates are re-scored with f either way.
    hub_correction : bool
        Rank each item's neighbours by ``d(i, j) - r_j`` instead of ``d(i, j)``, where ``r_j``
        is item j's mean distance to its ``HUB_K`` nearest others (the local scaling of
        Conneau et al., 2018, "CSLS", with their k = 10). Some panels ("hubs": plain textures
        of a common kind) are near almost everything and fill every item's list; the radius
        takes their advantage away. It costs one more search of the stored poses (not the crop
        windows), and is exact in the index: the rows carry one more coordinate,
        ``max(r) - r_j`` (its square root for L2, whose distances are squared), which the
        queries have at 0. Candidates are re-scored with f either way.
    ranks : bool
        Also return each pair's rank: its place (0 = nearest) in the neighbour list of
        whichever of its two items ranks it nearer.

    Yields ``(done, total)`` items searched; returns (``StopIteration.value``, or
    ``result = yield from ...``)
    a, b : (M,) int64 with a < b;  distance : (M,) float32, the exact symmetric pose-minimum f
    (with ``pose_penalty``); with ``ranks``, rank : (M,) int64 as well.
    """
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {MODES}, got {mode!r}")
    groups = np.asarray(groups, dtype=np.int64)
    n = len(vectors)

    def empty():
        e = np.zeros(0, np.int64)
        return (e, e.copy(), np.zeros(0, np.float32)) + ((e.copy(),) if ranks else ())

    if n < 2:
        yield n, n
        return empty()
    found_a, found_b, found_r = [], [], []
    scored = vectors                    # f is computed on these; the search may use whitened ones
    white = _fit_search_whitening(vectors) if whiten and vectors.index_size >= WHITEN_MIN_ROWS else None
    if white is not None:
        vectors = vectors.transformed(white)
    if mode == "within":
        # exact, per document (documents are small)
        order = np.argsort(groups, kind="stable")
        bounds = np.flatnonzero(np.diff(groups[order])) + 1
        done = 0
        for members in np.split(order, bounds):
            if len(members) > 1:
                va = vectors.query_rows(members)              # stored poses, then crop windows
                m, p, dim = va.shape
                base = torch.from_numpy(va[:, :1] if vectors.all_poses else va[:, :vectors.p]).reshape(-1, dim)
                q = torch.from_numpy(va)
                step = 64                                     # query items at a time: no (m, P + C, m, P) block
                hub = hub_correction and m > 2
                d_all, d_pose = [], []
                for r in range(0, m, step):
                    dq = torch.cdist(q[r:r + step].reshape(-1, dim), base, p=1 if metric == "l1" else 2) \
                        .reshape(min(step, m - r), p, m, -1)
                    d_all.append(dq.amin(dim=(1, 3)))
                    if hub:
                        d_pose.append(dq[:, :vectors.p].amin(dim=(1, 3)))
                d = torch.cat(d_all)
                d.fill_diagonal_(float("inf"))
                if hub:                                       # each member's radius in this document
                    dp = torch.cat(d_pose)
                    dp.fill_diagonal_(float("inf"))
                    radius = dp.topk(min(HUB_K, m - 1), dim=1, largest=False).values.mean(1)
                    d = d - radius[None, :]
                kk = min(k, m - 1)
                nn = d.topk(kk, dim=1, largest=False).indices.numpy()
                found_a.append(np.repeat(members, kk))
                found_b.append(members[nn.reshape(-1)])
                found_r.append(np.tile(np.arange(kk), len(members)))
            done += len(members)
            yield done, n
    else:
        base, base_item = vectors.index_rows()
        per_item = len(base) // n
        hub = hub_correction and n > 2
        if hub:                     # one more coordinate: 0 for the radii, then max(r) - r_j
            base = _with_column(base, 0.0)
            vectors = vectors.transformed(lambda x, tf=vectors.transform: _with_column(
                x if tf is None else tf(x), 0.0), replace=True)
        searcher = build_index(base, metric, backend, threads, index=index)
        if hub:
            square = metric == "l2" and isinstance(searcher, _TorchFlat)   # faiss's L2 is squared already
            radius = _hub_radii(searcher, vectors, base_item, per_item, square, query_chunk)
            offset = radius.max() - radius
            base[:, -1] = (offset if metric == "l1" else np.sqrt(offset))[base_item]
            searcher = _refill(searcher, base)
        del base
        gsize = np.bincount(groups) if mode == "across" else None
        for start, block in vectors.query_blocks(query_chunk):
            bn, p, dim = block.shape
            ids = np.arange(start, start + bn)
            extra = int(gsize[groups[ids]].max()) if gsize is not None else 1
            kf = min(n * per_item, (k + extra) * per_item)
            dist, nbr = searcher.search(np.ascontiguousarray(block.reshape(bn * p, dim)), kf)
            dist = dist.reshape(bn, p * kf)
            nbr = nbr.reshape(bn, p * kf)
            for r in range(bn):
                i = ids[r]
                cand, _ = _ranked_items(dist[r], nbr[r], base_item)
                cand = cand[groups[cand] != groups[i]] if mode == "across" else cand[cand != i]
                cand = cand[:k]
                found_a.append(np.full(len(cand), i))
                found_b.append(cand)
                found_r.append(np.arange(len(cand)))
            yield start + bn, n
    if not found_a:
        return empty()
    a = np.concatenate(found_a).astype(np.int64)
    b = np.concatenate(found_b).astype(np.int64)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    keep = lo != hi
    pairs, inverse = np.unique(np.stack([lo[keep], hi[keep]], 1), axis=0, return_inverse=True)
    if len(pairs) == 0:
        return empty()
    d = pose_min_distance(scored, pairs[:, 0], pairs[:, 1], penalty=pose_penalty)
    order = np.lexsort((pairs[:, 1], pairs[:, 0], d))
    if not ranks:
        return pairs[order, 0], pairs[order, 1], d[order]
    rank = np.full(len(pairs), np.iinfo(np.int64).max, np.int64)
    np.minimum.at(rank, inverse.reshape(-1), np.concatenate(found_r).astype(np.int64)[keep])
    return pairs[order, 0], pairs[order, 1], d[order], rank[order]


def best_poses(vectors: Vectors, a: np.ndarray, b: np.ndarray, chunk: int = 2048,
               penalty: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Which pose relates each pair best: ``(pose index (M,), True where it is a pose of b)``
    (pose ``p`` of b matches a as it is; or, False, pose ``p`` of a matches b as it is), with
    ``penalty`` added as in :func:`pose_min_distance`."""
    pp = pose_pairs(vectors.pose_ids, penalty)
    pose = np.zeros(len(a), np.int64)
    of_b = np.ones(len(a), bool)
    for s in range(0, len(a), chunk):
        va, vb = vectors.rows(a[s:s + chunk]), vectors.rows(b[s:s + chunk])
        best = _pair_distances(va, vb, pp).argmin(1)
        pose[s:s + chunk] = pp.pose[best]
        of_b[s:s + chunk] = pp.of_b[best]
    return pose, of_b


__all__ = ["EmbeddingStore", "Vectors", "embed_poses", "candidate_pairs", "pose_min_distance", "fit_whitening", "Whitening",
           "iter_candidate_pairs", "build_index", "have_faiss", "best_poses", "file_stamp", "MODES", "METRICS", "POSE_COUNTS",
           "POSE_BASES", "POSE_EMBEDDINGS", "INDEXES", "IVF_MIN_ROWS", "stored_pose_ids", "pose_composition", "pose_pairs",
           "PosePairs", "resolve_index", "ivf_shape", "poses_of", "crop_match", "crop_min_distance", "crop_best_poses", "pose_inverse", "crop_query_poses", "crop_rows",
           "CROP_SIDE", "CROP_GRID", "CROP_LAYOUTS", "CROP_LAYOUT", "resolve_crops", "crop_input_side"]
