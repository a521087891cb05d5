"""The same screen on a dask.distributed cluster.

Reading files, cutting panels and embedding (the expensive part, linear in the corpus) are
spread over the cluster's workers, a batch of files per task; each worker loads the model
file once. The vectors come back in the screening order, go into the same store, and the
candidate search, re-scoring and localisation run where ``screen_on_cluster`` is called,
exactly as :func:`~napari_siamforensic.screening.screen` does them: same items, same ids,
same pairs (embedding is deterministic on CPU; across different GPUs distances may differ in
the last digits).

>>> from napari_siamforensic.screening.cluster import screen_on_cluster   # doctest: +SKIP
>>> res = screen_on_cluster(["corpus/"], "model.safetensors", scheduler="tcp://host:8786")  # doctest: +SKIP
"""
from __future__ import annotations

import time
from functools import partial
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..core.scoring import load_model
from . import ScreenProgress, SourceOptions, _check_options, _search_and_report, first_pass_options
from .index import (CROP_LAYOUT, EmbeddingStore, crop_query_poses, crop_rows, embed_poses, file_stamp, resolve_crops,
                    stored_pose_ids)
from .report import ScreenResult
from .sources import Item, Skipped, expand_sources, iter_file

_WORKER_MODELS: dict = {}


def _worker_model(model_path, device: str):
    key = (None if model_path is None else str(model_path), device)
    if key not in _WORKER_MODELS:
        _WORKER_MODELS[key] = load_model(model_path, device=device, precision="auto")
    return _WORKER_MODELS[key]


def embed_files(paths: list[str], model_path, poses: str, options: dict, batch_size: int, device: str = "auto",
                pose_ids: tuple[int, ...] | None = None, crop_poses: tuple[int, ...] = (),
                crop_layout: str = CROP_LAYOUT):
    """One task: read, split and embed these files. Returns a list, per file, of
    ``(path, stamp, refs, vectors (n, P + C, D), skipped records)`` (C rows of crop windows)."""
    model = _worker_model(model_path, device)
    opts = SourceOptions(**options)
    out = []
    for path in paths:
        items, skipped = [], []
        for ev in iter_file(Path(path), opts):
            if isinstance(ev, Item):
                items.append(ev)
            elif isinstance(ev, Skipped):
                skipped.append({"source": ev.source, "page": ev.page, "reason": ev.reason, "file": path})
        if items:
            vecs = np.concatenate([embed_poses(model, [it.image for it in items[s:s + batch_size]], poses, pose_ids,
                                               crop_poses, crop_layout)
                                   for s in range(0, len(items), batch_size)])
        else:
            vecs = None
        out.append((path, file_stamp(path), [it.ref for it in items], vecs, skipped))
    return out


def iter_screen_on_cluster(sources, model_path=None, *, scheduler=None, client=None, files_per_task: int = 16,
                           device: str = "auto", candidates: int = 10, poses: str = "dihedral+invert",
                           mode: str = "all", threshold: float | None = None, batch_size: int = 64,
                           store=None, localize: int = 50, metric: str = "l1", backend: str = "auto",
                           options: SourceOptions | None = None, threads: int | None = None,
                           pose_embedding: str = "basis", index: str = "auto",
                           whiten: bool = True, crops: bool | str = True,
                           verify: bool = True, hub_correction: bool = True,
                           overlap: bool = False, wider: int | None = None,
                           texture: int | None = None, gate_nearest: bool = False) -> Iterator[ScreenProgress]:
    """:func:`~napari_siamforensic.screening.iter_screen` with the embedding on a dask cluster.

    Parameters
    ----------
    sources : paths of files and folders (arrays are not sent to a cluster)
    model_path : model file every worker can read, or None for the bundled default model
    scheduler : address of a running scheduler (``"tcp://host:8786"``), or
    client : a ``distributed.Client`` (for example of a ``LocalCluster``)
    files_per_task : files read and embedded per task
    device : where workers embed (``"auto"``: their GPU if they have one)

    The other arguments are those of ``iter_screen``.
    """
    from distributed import Client

    _check_options(candidates, poses, mode, threshold, batch_size, localize, metric, pose_embedding, index, wider,
                   texture, whiten=whiten, crops=crops, verify=verify, hub_correction=hub_correction, overlap=overlap,
                   gate_nearest=gate_nearest)
    pose_ids = stored_pose_ids(poses, pose_embedding)
    layout = resolve_crops(crops)
    crop_poses = crop_query_poses(poses, pose_embedding) if layout else ()
    options = options or SourceOptions()
    if client is None and scheduler is None:
        raise ValueError("pass `scheduler` (an address such as 'tcp://host:8786') or `client`")
    t0 = time.perf_counter()
    model = _worker_model(model_path, "cpu")    # the search and re-scoring side
    own_client = client is None
    client = client or Client(scheduler)
    try:
        st = EmbeddingStore(store, model_id=model.identity(), poses=poses, dim=model.config.embedding_dim,
                            pose_ids=pose_ids, crop_poses=crop_poses, crop_layout=layout or CROP_LAYOUT)
        refs, chunks, skipped = st.restore()
        n_restored = len(refs)
        completed = st.completed_files()
        files, new_skipped = [], []
        for entry in expand_sources(sources):
            if isinstance(entry, Skipped):
                new_skipped.append({"source": entry.source, "page": entry.page, "reason": entry.reason, "file": None})
            elif isinstance(entry, Path):
                if str(entry) not in completed:
                    files.append(str(entry))
            else:
                raise ValueError("a cluster screen takes files and folders, not arrays "
                                 f"(source {entry[0]} is an array); use screen() for arrays")
        opts = {k: getattr(options, k) for k in ("split_panels", "pdf_pages", "pdf_dpi", "max_pages", "min_panel_side")}
        batches = [files[i:i + files_per_task] for i in range(0, len(files), files_per_task)]
        # (Client.map has a batch_size of its own: ours goes in through partial)
        task = partial(embed_files, model_path=model_path, poses=poses, options=opts,
                       batch_size=batch_size, device=device, pose_ids=pose_ids, crop_poses=crop_poses,
                       crop_layout=st.crop_layout)
        futures = client.map(task, batches, pure=False)
        done = 0
        for fut in futures:      # in order, so ids are those of the single-process screen
            for path, stamp, frefs, vecs, fskipped in fut.result():
                if vecs is None:
                    vecs = np.zeros((0, len(pose_ids) + crop_rows(crop_poses), model.config.embedding_dim), np.float32)
                st.append(vecs, frefs, {path: stamp} if stamp else {}, fskipped)
                refs.extend(frefs)
                chunks.append(st.chunks[-1].vectors)
                new_skipped.extend(fskipped)
                done += len(frefs)
            yield ScreenProgress("embed", done, -1, time.perf_counter() - t0, f"{done} items embedded on the cluster")
            fut.release()
    finally:
        if own_client:
            client.close()
    t_embed = time.perf_counter() - t0
    yield from _search_and_report(model, refs, chunks, skipped + new_skipped, dict(
        candidates=candidates, poses=poses, mode=mode, threshold=threshold, localize=localize,
        metric=metric, backend=backend, threads=threads, store=store, pose_ids=pose_ids,
        pose_embedding=pose_embedding, index=index, whiten=whiten, crop_poses=crop_poses,
        crop_layout=st.crop_layout if crop_poses else None, verify=verify, hub_correction=hub_correction,
        overlap=overlap, gate_nearest=gate_nearest, **first_pass_options(wider, texture, verify)), {}, options,
        t0, t_embed,
        n_restored)


def screen_on_cluster(sources, model_path=None, **kwargs) -> ScreenResult:
    """Drain :func:`iter_screen_on_cluster` and return the :class:`ScreenResult`."""
    progress = kwargs.pop("progress", None)
    result = None
    for report in iter_screen_on_cluster(sources, model_path, **kwargs):
        if progress is not None:
            progress(report)
        if report.finished:
            result = report.result
    assert result is not None
    return result


__all__ = ["screen_on_cluster", "iter_screen_on_cluster", "embed_files"]
