"""Streamed pose embeddings in a resumable on-disk store, and nearest-neighbour candidates.

Vectors are ``alpha * embedding`` (so plain L1 between rows is the model's metric f), one
per pose: ``(N, P, D)`` with pose 0 the image as it is (P = 1, 8 or 16 for ``"none"``,
``"dihedral"``, ``"dihedral+invert"``).

Candidate search: an index holds the pose-0 vectors of every item; every pose of every item
is a query, so a flipped, rotated or inverted copy finds its original. The index is faiss
``IndexFlat`` with ``METRIC_L1`` (exact, the model's own metric) when faiss is installed,
else an exact chunked torch search. Memory is ``O(N * D)`` for the index plus one chunk of
queries; there is never an ``N x N`` matrix. Candidates are then re-scored exactly with the
full pose-minimum distance in both directions (what :meth:`ForensicModel.pairwise` gives).

The store is a folder of chunks written atomically (``chunk-000000.npy`` vectors +
``chunk-000000.json`` rows and the files completed by that chunk) and a ``manifest.json``
naming the model and the poses. A screen that stops can be resumed: completed files are not
read again, and a new batch of figures is screened against an existing corpus without
re-embedding it.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..core.data import prepare_batch
from ..core.scoring import ForensicModel, pose_stack
from .sources import ItemRef

STORE_FORMAT = "napari-siamforensic/screen-store/1"
MODES = ("all", "within", "across")
METRICS = ("l1", "l2")
POSE_COUNTS = {"none": 1, "dihedral": 8, "dihedral+invert": 16}


def have_faiss() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


@torch.no_grad()
def embed_poses(model: ForensicModel, images: list[np.ndarray], poses: str) -> np.ndarray:
    """``(B, P, D)`` float32: ``alpha * embedding`` of every pose of every image."""
    x = prepare_batch(images, model.input_size, model.device)
    stack = pose_stack(x, poses)                                  # (P, B, 1, S, S)
    p, b = stack.shape[:2]
    e = model.embed_tensor(stack.reshape(p * b, *x.shape[1:])).reshape(p, b, -1)
    e = e * model.net.alpha.float()
    return e.permute(1, 0, 2).contiguous().cpu().numpy().astype(np.float32)


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
    """

    def __init__(self, path: str | os.PathLike | None, *, model_id: str, poses: str, dim: int):
        self.path = Path(path) if path is not None else None
        self.model_id, self.poses, self.dim = model_id, poses, int(dim)
        self.chunks: list[StoredChunk] = []
        if self.path is not None:
            self._open()

    def _manifest(self) -> dict:
        return {"format": STORE_FORMAT, "model": self.model_id, "poses": self.poses, "dim": self.dim}

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
            for key in ("model", "poses", "dim"):
                if have.get(key) != want[key]:
                    raise ValueError(f"`store`: {str(self.path)!r} was built with {key} {have.get(key)!r}, this "
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
    """Row access to a list of ``(B, P, D)`` chunks without concatenating them."""

    def __init__(self, chunks: list[np.ndarray]):
        self.chunks = [c for c in chunks if len(c)]
        sizes = [len(c) for c in self.chunks]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.n = int(self.offsets[-1])
        self.p = int(self.chunks[0].shape[1]) if self.chunks else 1
        self.d = int(self.chunks[0].shape[2]) if self.chunks else 0

    def __len__(self) -> int:
        return self.n

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """``(len(idx), P, D)`` for global row indices."""
        idx = np.asarray(idx, dtype=np.int64)
        out = np.empty((len(idx), self.p, self.d), np.float32)
        which = np.searchsorted(self.offsets, idx, side="right") - 1
        for c in np.unique(which):
            m = which == c
            out[m] = self.chunks[c][idx[m] - self.offsets[c]]
        return out

    def pose0(self) -> np.ndarray:
        """``(N, D)`` pose-0 vectors (the index)."""
        return np.concatenate([np.asarray(c[:, 0]) for c in self.chunks]) if self.chunks else np.zeros((0, self.d), np.float32)

    def blocks(self, size: int) -> Iterator[tuple[int, np.ndarray]]:
        for start in range(0, self.n, size):
            yield start, self.rows(np.arange(start, min(self.n, start + size)))


# ----------------------------------------------------------------------------------- search
def _pose_offsets(n_poses: int, penalty: float) -> np.ndarray:
    """``(P,)``: 0 for an image's own pose (the first), ``penalty`` for the others."""
    off = np.full(n_poses, penalty, np.float32)
    off[0] = 0.0
    return off


def pose_min_distance(vectors: Vectors, a: np.ndarray, b: np.ndarray, chunk: int = 4096,
                      penalty: float = 0.0) -> np.ndarray:
    """Exact symmetric distance per pair: ``min(min_p |a0 - b_p|, min_p |b0 - a_p|)``, ``(M,)``,
    with ``penalty`` added to every pose but the own one (``ForensicModel.pose_penalty``)."""
    out = np.empty(len(a), np.float32)
    for s in range(0, len(a), chunk):
        va, vb = vectors.rows(a[s:s + chunk]), vectors.rows(b[s:s + chunk])
        off = _pose_offsets(vb.shape[1], penalty)
        d1 = (np.abs(va[:, :1] - vb).sum(-1) + off).min(1)
        d2 = (np.abs(vb[:, :1] - va).sum(-1) + off).min(1)
        out[s:s + chunk] = np.minimum(d1, d2)
    return out


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


def build_index(base: np.ndarray, metric: str = "l1", backend: str = "auto", threads: int | None = None):
    """An exact flat index over ``base`` ``(N, D)``: faiss when available, else torch."""
    if metric not in METRICS:
        raise ValueError(f"`metric` must be one of {METRICS}, got {metric!r}")
    if backend not in ("auto", "faiss", "torch"):
        raise ValueError(f"`backend` must be 'auto', 'faiss' or 'torch', got {backend!r}")
    if backend == "faiss" or (backend == "auto" and have_faiss()):
        import faiss

        if threads:
            faiss.omp_set_num_threads(int(threads))
        index = faiss.IndexFlat(base.shape[1], faiss.METRIC_L1 if metric == "l1" else faiss.METRIC_L2)
        index.add(np.ascontiguousarray(base, dtype=np.float32))
        return index
    return _TorchFlat(base, metric)


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
                         threads: int | None = None, pose_penalty: float = 0.0):
    """Candidate pairs ``(a, b, distance)`` with ``a < b``, each item's ``k`` nearest others.

    Parameters
    ----------
    vectors : Vectors
        ``(N, P, D)`` pose vectors.
    groups : (N,) int
        Document of each item; ``mode`` ``"within"`` keeps pairs inside one document,
        ``"across"`` pairs between documents, ``"all"`` both.
    k : int
        Candidates per item (per query direction); the union over items is returned.
    metric : "l1" (the model's metric, exact) or "l2" (a faster BLAS proxy; re-scored in L1).
    pose_penalty : float
        Added to the poses other than an item's own in the re-scoring (the model's
        ``pose_penalty``); the neighbour search itself ranks by the plain pose distance.

    Yields ``(done, total)`` items searched; returns (``StopIteration.value``, or
    ``result = yield from ...``)
    a, b : (M,) int64 with a < b;  distance : (M,) float32, the exact symmetric pose-minimum f
    (with ``pose_penalty``).
    """
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {MODES}, got {mode!r}")
    groups = np.asarray(groups, dtype=np.int64)
    n = len(vectors)
    if n < 2:
        e = np.zeros(0, np.int64)
        yield n, n
        return e, e.copy(), np.zeros(0, np.float32)
    found_a, found_b = [], []
    if mode == "within":
        # exact, per document (documents are small)
        order = np.argsort(groups, kind="stable")
        bounds = np.flatnonzero(np.diff(groups[order])) + 1
        done = 0
        for members in np.split(order, bounds):
            if len(members) > 1:
                va = vectors.rows(members)
                base = torch.from_numpy(va[:, 0])
                q = torch.from_numpy(va).reshape(-1, va.shape[-1])
                d = torch.cdist(q, base, p=1 if metric == "l1" else 2).reshape(len(members), va.shape[1], -1).amin(1)
                d.fill_diagonal_(float("inf"))
                kk = min(k, len(members) - 1)
                nn = d.topk(kk, dim=1, largest=False).indices.numpy()
                found_a.append(np.repeat(members, kk))
                found_b.append(members[nn.reshape(-1)])
            done += len(members)
            yield done, n
    else:
        index = build_index(vectors.pose0(), metric, backend, threads)
        gsize = np.bincount(groups) if mode == "across" else None
        for start, block in vectors.blocks(query_chunk):
            bn, p, dim = block.shape
            ids = np.arange(start, start + bn)
            extra = int(gsize[groups[ids]].max()) if gsize is not None else 1
            kf = min(n, k + extra)
            dist, nbr = index.search(np.ascontiguousarray(block.reshape(bn * p, dim)), kf)
            dist = dist.reshape(bn, p * kf)
            nbr = nbr.reshape(bn, p * kf)
            for r in range(bn):
                i = ids[r]
                o = np.argsort(dist[r], kind="stable")
                cand = nbr[r, o]
                cand = cand[cand >= 0]
                if mode == "across":
                    cand = cand[groups[cand] != groups[i]]
                else:
                    cand = cand[cand != i]
                _, first = np.unique(cand, return_index=True)
                cand = cand[np.sort(first)][:k]
                found_a.append(np.full(len(cand), i))
                found_b.append(cand)
            yield start + bn, n
    if not found_a:
        e = np.zeros(0, np.int64)
        return e, e.copy(), np.zeros(0, np.float32)
    a = np.concatenate(found_a).astype(np.int64)
    b = np.concatenate(found_b).astype(np.int64)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    keep = lo != hi
    pairs = np.unique(np.stack([lo[keep], hi[keep]], 1), axis=0)
    if len(pairs) == 0:
        e = np.zeros(0, np.int64)
        return e, e.copy(), np.zeros(0, np.float32)
    d = pose_min_distance(vectors, pairs[:, 0], pairs[:, 1], penalty=pose_penalty)
    order = np.lexsort((pairs[:, 1], pairs[:, 0], d))
    return pairs[order, 0], pairs[order, 1], d[order]


def best_poses(vectors: Vectors, a: np.ndarray, b: np.ndarray, chunk: int = 4096,
               penalty: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Which pose relates each pair best: ``(pose index (M,), True where it is a pose of b)``,
    with ``penalty`` added to every pose but the own one, as in :func:`pose_min_distance`."""
    pose = np.zeros(len(a), np.int64)
    of_b = np.ones(len(a), bool)
    for s in range(0, len(a), chunk):
        va, vb = vectors.rows(a[s:s + chunk]), vectors.rows(b[s:s + chunk])
        off = _pose_offsets(vb.shape[1], penalty)
        d_b = np.abs(va[:, :1] - vb).sum(-1) + off     # poses of b against a, (m, P)
        d_a = np.abs(vb[:, :1] - va).sum(-1) + off     # poses of a against b
        use_b = d_b.min(1) <= d_a.min(1)
        pose[s:s + chunk] = np.where(use_b, d_b.argmin(1), d_a.argmin(1))
        of_b[s:s + chunk] = use_b
    return pose, of_b


__all__ = ["EmbeddingStore", "Vectors", "embed_poses", "candidate_pairs", "pose_min_distance",
           "iter_candidate_pairs", "build_index", "have_faiss", "best_poses", "file_stamp", "MODES", "METRICS", "POSE_COUNTS"]
