"""Screen a corpus: figures, PDFs and folders in; ranked duplicate pairs with the matching regions out.

GUI-free (never imports napari, qtpy or magicgui).

>>> import napari_siamforensic as sf                                 # doctest: +SKIP
>>> result = sf.screen(["figures/", "paper.pdf"], store="screen-store")  # doctest: +SKIP
>>> result.pairs.head()                                              # doctest: +SKIP
>>> result.to_html("report.html")                                    # doctest: +SKIP

The pipeline: sources are streamed (:mod:`.sources`, multi-panel figures cut by
:mod:`.panels`), embedded in batches in every pose on the model's device, written chunk by
chunk to a store (:mod:`.index`; resumable), candidate pairs found by exact nearest-neighbour
search on ``alpha * embedding`` (faiss ``IndexFlat`` L1, or torch), re-scored with the full
pose-minimum distance, and the best pairs localised (:mod:`.localize`) and reported
(:mod:`.report`).
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .._validation import check_positive_int
from ..core.scoring import POSES, ForensicModel, load_model
from .index import (CROP_LAYOUT, INDEXES, METRICS, MODES, POSE_EMBEDDINGS, WHITEN_MIN_ROWS, EmbeddingStore, Vectors,
                    best_poses, crop_match, crop_query_poses, crop_rows, embed_poses, file_stamp, have_faiss,
                    iter_candidate_pairs, pose_min_distance, resolve_crops, resolve_index, stored_pose_ids)
from .localize import Localizer, Match, localize, pose_match
from .verify import (FIRST_PASS_THRESHOLD, GATED_MATCH, MATCH_THRESHOLD, PixelChecker, PixelMatch, add_words,
                     match_transform)
from .texture import TEXTURE_DIM, texture_descriptors, texture_pairs
from .report import ITEM_COLUMNS, PAIR_COLUMNS, SKIPPED_COLUMNS, ScreenResult, empty_frame, thumbnail
from .sources import (FileDone, Item, ItemRef, Skipped, SourceOptions, contains_the_other, iter_sources,
                      load_item_image)

__all__ = ["screen", "iter_screen", "ScreenProgress", "ScreenResult", "SourceOptions", "localize",
           "Match", "resolve_model"]

STAGES = ("embed", "search", "verify", "localize", "done")
#: ``wider`` when it is not given: each item's next 90 neighbours go through the pixel check's
#: first pass (with ``verify``; without it, none). Chosen in the seventeenth session, once the
#: first pass had become about 3.5x cheaper in a screen (docs/screening.md, *Seventeenth session*).
DEFAULT_WIDER = 90
#: ``texture`` when it is not given: each item's 30 nearest by texture orientation
#: (:mod:`.texture`) go through the first pass too (with ``verify``; without it, none). Chosen
#: in the eighteenth session on the calibration corpus (docs/screening.md, *Eighteenth session*).
DEFAULT_TEXTURE = 30
#: The first pass keeps the templates of this many items at most (float16, 10 KB each: 2 GB), and
#: of every item in smaller corpora. Its jobs are sorted by image item, so their template items
#: come in no order: with templates for a sixth of the items a pair cost 0.50 ms instead of 0.28
#: (*Seventeenth session*), and 100,000 items would have about ten million pairs.
FIRST_PASS_CACHE_ITEMS = 200_000


@dataclass(frozen=True)
class ScreenProgress:
    """One step of a screen. ``stage``: ``"embed"`` (``done`` items embedded; ``total`` -1:
    unknown while sources stream), ``"search"`` (items searched of ``total``), ``"verify"``
    (candidate pairs pixel-checked of ``total``), ``"localize"`` (pairs localised of
    ``total``), ``"done"`` (``result`` set)."""

    stage: str
    done: int
    total: int
    seconds: float
    message: str = ""
    result: ScreenResult | None = None

    @property
    def finished(self) -> bool:
        return self.stage == "done"


def resolve_model(model) -> ForensicModel:
    """None -> the bundled default model; a path -> that model file; a ForensicModel as is."""
    if model is None:
        return load_model(precision="auto")
    if isinstance(model, (str, os.PathLike)):
        return load_model(model, precision="auto")
    if isinstance(model, ForensicModel):
        return model
    raise TypeError(f"`model` must be a ForensicModel, a model file path or None (the default model), "
                    f"got {type(model).__name__}")


def first_pass_options(wider, texture, verify: bool) -> dict[str, int]:
    """``wider`` and ``texture`` as a screen uses them (both feed the pixel check's first pass):
    None (not given) is :data:`DEFAULT_WIDER` / :data:`DEFAULT_TEXTURE` with the pixel check and
    0 without it; a number is taken as given (:func:`_check_options` has checked it)."""
    given = {"wider": (wider, DEFAULT_WIDER), "texture": (texture, DEFAULT_TEXTURE)}
    return {name: (default if verify else 0) if value is None else int(value)
            for name, (value, default) in given.items()}


def _check_options(candidates, poses, mode, threshold, batch_size, localize_top, metric,
                   pose_embedding="all", index="auto", wider=None, texture=None, **switches):
    """Checks the options every screen shares; ``switches`` (``whiten=...``, ``verify=...``)
    must be True or False, ``crops`` True, False or a crop layout."""
    for name, value in switches.items():
        if name == "crops":
            resolve_crops(value)
        elif not isinstance(value, bool):
            raise TypeError(f"`{name}` must be True or False, got {value!r}")
    check_positive_int(candidates, "candidates")
    for name, value, whose in (("wider", wider, "the wider search's"), ("texture", texture, "the texture neighbours'")):
        if value is not None:
            check_positive_int(value, name, minimum=0)
        if value and not switches.get("verify", True):
            raise ValueError(f"`{name}={value}` needs the pixel check (verify=True): its first pass decides which "
                             f"of {whose} pairs are kept; pass {name}=0 with verify=False")
    if switches.get("gate_nearest") and not switches.get("verify", True):
        raise ValueError("`gate_nearest=True` needs the pixel check (verify=True): the gate is its first pass; "
                         "pass gate_nearest=False with verify=False")
    check_positive_int(batch_size, "batch_size")
    check_positive_int(localize_top, "localize", minimum=0)
    if poses not in POSES:
        raise ValueError(f"`poses` must be one of {POSES}, got {poses!r}")
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {MODES}, got {mode!r}")
    if metric not in METRICS:
        raise ValueError(f"`metric` must be one of {METRICS}, got {metric!r}")
    if pose_embedding not in POSE_EMBEDDINGS:
        raise ValueError(f"`pose_embedding` must be one of {POSE_EMBEDDINGS}, got {pose_embedding!r}")
    if index not in INDEXES:
        raise ValueError(f"`index` must be one of {INDEXES}, got {index!r}")
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating, np.integer)):
            raise TypeError(f"`threshold` must be a number or None, got {threshold!r}")
        if not threshold > 0:
            raise ValueError(f"`threshold` must be > 0 (a distance f), got {threshold}")


def _items_frame(refs: list[ItemRef]) -> pd.DataFrame:
    if not refs:
        return empty_frame(ITEM_COLUMNS)
    return pd.DataFrame({
        "id": np.arange(len(refs), dtype=np.int64),
        "source": [r.source for r in refs],
        "page": pd.array([r.page for r in refs], dtype="Int64"),
        "panel": pd.Series([r.panel for r in refs], dtype=object),
        "object": pd.array([r.object for r in refs], dtype="Int64"),
        "kind": [r.kind for r in refs],
        "document": [r.document for r in refs],
    })


def _skipped_frame(records: list[dict]) -> pd.DataFrame:
    if not records:
        return empty_frame(SKIPPED_COLUMNS)
    return pd.DataFrame({"source": [r["source"] for r in records],
                         "page": pd.array([r.get("page") for r in records], dtype="Int64"),
                         "reason": [r["reason"] for r in records]})


def iter_screen(sources, model=None, *, candidates: int = 10, poses: str = "dihedral+invert",
                mode: str = "all", threshold: float | None = None, batch_size: int = 64,
                store: str | os.PathLike | None = None, localize: int = 50, metric: str = "l1",
                backend: str = "auto", options: SourceOptions | None = None,
                threads: int | None = None, pose_embedding: str = "basis",
                index: str = "auto", compile: bool = False, whiten: bool = True,
                crops: bool | str = True, verify: bool = True, hub_correction: bool = True,
                overlap: bool = False, wider: int | None = None,
                texture: int | None = None, gate_nearest: bool = False) -> Iterator[ScreenProgress]:
    """Screen ``sources`` for duplicated images, yielding :class:`ScreenProgress` reports; the
    last one (``stage == "done"``) carries the :class:`ScreenResult`.

    Parameters
    ----------
    sources : path, array or a sequence of them
        Image files (PNG, JPEG, TIFF incl. multi-page/16-bit, ...), PDFs, folders (recursive),
        arrays. Multi-panel figures are cut into panels (see ``options``).
    model : ForensicModel, model file path, or None (the bundled default model)
    candidates : int
        Nearest neighbours kept per item (the union over items is re-scored).
    wider : int or None
        Search this many neighbours more per item (after the first ``candidates``), and keep
        those pairs only where the pixel check's first pass, its coarse 32 px stage alone
        (:meth:`~napari_siamforensic.core.pixels.PixelChecker.first_pass`: about 0.25 ms per
        pair in a 10,000-panel screen on 2 CPU cores, under a sixth of the full check's time),
        reaches ``FIRST_PASS_THRESHOLD`` (0.5); the kept ones get the full check like the rest.
        For copies the embedding ranks too far away; needs ``verify``. None (the default):
        :data:`DEFAULT_WIDER` (90) with ``verify``, 0 without; 0: no wider search. On the
        benchmark's 10,000 panels with 500 planted copies (``texture=0``), recall@10 of the
        copies in the screen's order was 0.962 with ``candidates`` and ``wider`` at their
        defaults (10 + 90; 1,214 s on 2 CPU cores) against 0.838 with ``wider=0`` (882 s),
        and 0.976 with ``candidates=30, wider=170`` (1,688 s) (docs/screening.md,
        *Seventeenth session*).
    texture : int or None
        Also pair each item with this many nearest others by texture orientation and its
        strength (:mod:`~napari_siamforensic.screening.texture`: the structure tensor at 1, 2
        and 4 px, invariant to flips and quarter turns), and keep those pairs, like the wider
        search's, only where the first pass finds them alike. For copies of oriented textures
        (fibres), which the network ranks among many panels of their kind. Reads every item's
        image (the pixel check's thumbnails are made from the same read). None (the default):
        :data:`DEFAULT_TEXTURE` (30) with ``verify``, 0 without; 0: none. Needs ``verify``.
        On the benchmark's 10,000 panels the defaults put 0.992 of the planted copies among
        each item's 10 best (1,323 s on 2 CPU cores) against 0.962 with ``texture=0``
        (1,258 s) (docs/screening.md, *Eighteenth session*).
    gate_nearest : bool
        Put each item's first ``candidates`` pairs through the first pass too, and give the
        full pixel check only those it finds alike (``FIRST_PASS_THRESHOLD``). A nearest pair
        the gate stops stays in the table, unchecked (``match`` NaN), and its ``distance`` fuses
        ``GATED_MATCH`` (0.2) in place of the check's match: what the check gives such pairs
        typically (their median on a calibration corpus; the first pass's own score hardly
        predicts it). It saves the full check (about 1.8 ms per pair against 0.25 ms for the
        first pass, 2 CPU cores) of the nearest pairs that are not alike, most of them in a large
        corpus. Needs ``verify``. ``info`` counts the pairs it stopped (``nearest_pairs_gated``).
        Measured on calibration corpora of 3,000 and 10,000 panels: docs/screening.md,
        *Twenty-third session*. Off by default.
    poses : {"none", "dihedral", "dihedral+invert"}
        The poses a copy may be in: a mirrored, rotated or inverted copy is found through
        them, and the reported distance is the minimum over them (both directions).
    pose_embedding : {"basis", "all"}
        ``"basis"`` embeds 6 of the 16 poses (4 of the 8 for ``"dihedral"``), a difference
        basis through which every flip, rotation and inversion is still reached (stored pose
        pairs ``s(a) = t(b)``); 2.2x the items per second, measured on 2 CPU cores. ``"all"``
        embeds every pose and scores pairs exactly as :meth:`ForensicModel.pairwise` does. See
        :mod:`napari_siamforensic.screening.index`.
    mode : {"all", "within", "across"}
        Pairs inside one document only, between documents only, or both.
    threshold : float, optional
        Keep only pairs with distance <= threshold, or crop_distance <= threshold with
        ``crops`` (``1.0`` is the paper's decision). None keeps every candidate pair.
    batch_size : int
        Images embedded per batch (each in every pose).
    store : folder, optional
        Write embeddings there chunk by chunk; a later screen with the same store (and
        model, poses) resumes: stored files are not read again, and new sources are screened
        against everything stored.
    localize : int
        Localise the best this many pairs (boxes, transform from keypoints; others get the
        transform of the best pose and no boxes). Pairs whose keypoints were verified
        (``method == "orb-ransac"``) are moved to the top of the table.
    metric : {"l1", "l2"}
        Candidate search metric, in the corpus's whitened space (``whiten``). ``"l1"`` (the
        default) is the model's own metric (exact with ``whiten=False``). ``"l2"`` is computed by
        faiss with matrix products: on 10,000 generated panels the search took 94 s instead of
        296 s on 2 CPU cores, but recall@10 of the planted copies was 0.978 instead of 0.992 on
        the benchmark's corpus, while a calibration corpus found 3 copies more with it
        (``docs/screening.md``, *Nineteenth session*). The pairs found are scored with f either
        way.
    backend : {"auto", "faiss", "torch"}
    index : {"auto", "flat", "ivf"}
        Neighbour index: ``"flat"`` is exact, ``"ivf"`` (faiss) searches the nearest cells only
        (approximate, for very large corpora); ``"auto"`` uses IVF from 200,000 index rows on
        (about 33,000 items with the pose basis).
    whiten : bool
        Search for neighbours in the corpus's whitened embedding space (PCA whitening fitted on
        the stored vectors, from 512 of them on; see
        :func:`~napari_siamforensic.screening.index.fit_whitening`). The reported distance is
        the model's f either way. Among 10,000 generated panels it raised recall@10 of planted
        copies from 0.150 to 0.494 (``benchmarks/screen.py``); False: plain f search.
    hub_correction : bool
        Rank each item's neighbours by their distance minus the neighbour's own mean distance
        to its 10 nearest others (CSLS local scaling; see
        :func:`~napari_siamforensic.screening.index.iter_candidate_pairs`), so that panels
        that are near almost everything ("hubs") do not fill every item's candidates. One more
        search of the stored poses. Among 10,000 generated panels it raised the share of
        planted copies among each item's 10 nearest from 0.772 to 0.838 (among 30: 0.862 to
        0.906; ``docs/screening.md``, *Eleventh session*). The reported distances do not
        change.
    crops : bool or {"pixels", "features"}
        Also search with a 3 x 3 grid of crop windows of every item (each 3/4 of its width and
        height, in the poses :func:`~napari_siamforensic.screening.index.crop_query_poses`
        names: the four turns with the default basis), so that a copy cut from a larger panel
        finds it. The windows are queries only (the index still holds whole images); pairs get a
        ``crop_distance`` (f between a window of one and the other) and are ordered (after the
        keypoint-verified pairs) by the smaller of the two distances. Costs 36 more forward passes per item with the default
        basis: on 2 CPU cores the screen of 10,000 generated panels took 1,077 s instead of
        ~190 s, and recall@10 of the planted copies rose from 0.494 to 0.772 (recall@1 0.342 ->
        0.584; ``benchmarks/screen.py``, seventh session; with the hub correction 0.524 ->
        0.838). ``False`` for the fastest screen of very large corpora. ``"features"`` (nineteenth
        session): the windows (4/5 of the side) come from one pass of the conv blocks over each
        pose of the item, a third of the embedding time, but they are approximations and find
        fewer cut-out copies (calibration corpus, with the texture neighbours: 0.958 of the
        planted copies among the candidates instead of 0.988; ``docs/screening.md``,
        *Nineteenth session*). ``True`` is ``"pixels"``, each window cut out and embedded on
        its own. A store keeps the layout it was built with: another is refused.
    options : SourceOptions, optional
        Panel splitting, PDF page rendering, limits.
    threads : int, optional
        Threads for faiss.
    compile : bool
        Embed with a ``torch.compile``'d network (:meth:`ForensicModel.compile`; about 1.35x
        faster on a 2-core CPU after ~30 s of compiling; worth it from a few thousand items).
        The model passed in is not changed. Falls back to eager, with a warning, when
        compiling fails.
    verify : bool
        Check every candidate pair's pixels (:mod:`~napari_siamforensic.core.pixels`):
        the normalised cross-correlation of band-passed 64 px thumbnails, over the 8 flips and
        quarter turns, both directions and the relative sizes 1 to 1/2, gives each pair a
        ``match`` (0-1) and its region and transform. Pairs from ``MATCH_THRESHOLD`` (0.6) on
        are verified: they lead the table, best match first, with ``method == "pixels"``
        (``"orb-ransac"`` where keypoints then confirm them). The embedding ranks different
        panels of one kind close to real copies; the pixels tell them apart: among 10,000
        generated panels (30 candidates per item) R-precision rose from 0.010 to 0.856; 0 of
        269,442 unrelated candidate pairs and 423 of 431 planted copies reached 0.6
        (docs/screening.md, *Ninth session*).
        Costs about 1.8-2.6 ms per candidate pair on 2 CPU cores (with the small-rotation
        stage), and reads each item's image once more. With ``threshold``, a verified pair is
        kept whatever its distance. Where the model has a ``pixel_check`` (the bundled model
        does), the table's ``distance`` is f with ``match`` fused in as :meth:`ForensicModel.distance <napari_siamforensic.core.scoring.ForensicModel.distance>`
        does, and ``f`` holds the whole images' f. ``False``: no check, ``match`` is NaN and
        ``distance`` is f.
    overlap : bool
        Add the pixel check's overlap stage (thirteenth session; off by default): two panels
        that share a region, neither holding the other (overlapping fields of view), are
        compared over the shared region, at one pixel scale; ``transform`` then ends in "shared
        region" and the boxes are that region in each. Off by default because repeated
        structure (a gel's or a blot's lanes) can match another region of the same picture
        (8 of 240 calibration hard negatives did, before a uniqueness rule that is fitted on
        those 8). The check takes about 1.3-1.4x as long with it (docs/screening.md,
        *Thirteenth session*). The table's
        distance fuses that match too, unlike :meth:`ForensicModel.distance
        <napari_siamforensic.core.scoring.ForensicModel.distance>`, which never runs the stage.
    """
    _check_options(candidates, poses, mode, threshold, batch_size, localize, metric, pose_embedding, index, wider,
                   texture, whiten=whiten, crops=crops, verify=verify, compile=compile, hub_correction=hub_correction,
                   overlap=overlap, gate_nearest=gate_nearest)
    options = options or SourceOptions()
    t0 = time.perf_counter()
    model = resolve_model(model)
    if compile:
        import copy

        model = copy.copy(model).compile()      # the caller's model stays eager
    dim = model.config.embedding_dim
    pose_ids = stored_pose_ids(poses, pose_embedding)
    layout = resolve_crops(crops)
    crop_poses = crop_query_poses(poses, pose_embedding) if layout else ()
    st = EmbeddingStore(store, model_id=model.identity(), poses=poses, dim=dim, pose_ids=pose_ids,
                        crop_poses=crop_poses, crop_layout=layout or CROP_LAYOUT)
    refs, chunks, skipped_records = st.restore()
    completed = st.completed_files()
    n_restored = len(refs)

    arrays: dict[str, np.ndarray] = {}
    src_list = sources if isinstance(sources, (list, tuple)) else [sources]
    for i, s in enumerate(src_list):
        if not isinstance(s, (str, os.PathLike)):
            arrays[f"array[{i}]"] = s

    buf_items: list[Item] = []
    pending_files: dict[str, str] = {}
    pending_skipped: list[dict] = []
    new_skipped: list[dict] = []
    chunk_items = batch_size * 4

    def flush():
        nonlocal buf_items, pending_files, pending_skipped
        if buf_items:
            vecs = np.concatenate([embed_poses(model, [it.image for it in buf_items[s:s + batch_size]], poses, pose_ids,
                                               crop_poses, st.crop_layout)
                                   for s in range(0, len(buf_items), batch_size)])
        else:
            vecs = np.zeros((0, len(pose_ids) + crop_rows(crop_poses), dim), np.float32)
        brefs = [it.ref for it in buf_items]
        st.append(vecs, brefs, pending_files, pending_skipped)
        refs.extend(brefs)
        chunks.append(st.chunks[-1].vectors)
        buf_items, pending_files, pending_skipped = [], {}, []

    for ev in iter_sources(sources, options, skip_files=completed, markers=True):
        if isinstance(ev, Item):
            buf_items.append(ev)
            if len(buf_items) >= chunk_items:
                flush()
                yield ScreenProgress("embed", len(refs) - n_restored, -1, time.perf_counter() - t0,
                                     f"{len(refs) - n_restored} items embedded")
        elif isinstance(ev, Skipped):
            rec = {"source": ev.source, "page": ev.page, "reason": ev.reason, "file": None}
            new_skipped.append(rec)
            if os.path.isfile(ev.source):
                rec["file"] = ev.source
                pending_skipped.append(rec)
        elif isinstance(ev, FileDone):
            stamp = file_stamp(ev.source)
            if stamp is not None:
                pending_files[ev.source] = stamp
    if buf_items or pending_files or pending_skipped:
        flush()
    t_embed = time.perf_counter() - t0
    yield ScreenProgress("embed", len(refs) - n_restored, len(refs) - n_restored, t_embed,
                         f"{len(refs) - n_restored} items embedded ({n_restored} restored from the store)")

    yield from _search_and_report(model, refs, chunks, skipped_records + new_skipped, dict(
        candidates=candidates, poses=poses, mode=mode, threshold=threshold, localize=localize,
        metric=metric, backend=backend, threads=threads, store=store, pose_ids=pose_ids,
        pose_embedding=pose_embedding, index=index, whiten=whiten, crop_poses=crop_poses,
        crop_layout=st.crop_layout if crop_poses else None, verify=verify, hub_correction=hub_correction,
        overlap=overlap, gate_nearest=gate_nearest, **first_pass_options(wider, texture, verify)), arrays, options,
        t0, t_embed,
        n_restored)


def _load_or_none(ref, arrays, options):
    try:
        return load_item_image(ref, arrays, pdf_dpi=options.pdf_dpi)
    except ValueError:
        return None


def _search_and_report(model, refs, chunks, skipped_all, params, arrays, options, t0, t_embed, n_restored):
    """Stages after embedding (shared by the local and the dask screen): candidate search,
    re-scoring, localisation, the result."""
    candidates, poses, mode, threshold = params["candidates"], params["poses"], params["mode"], params["threshold"]
    localize, metric, backend, threads, store = (params["localize"], params["metric"], params["backend"],
                                                 params["threads"], params["store"])
    vectors = Vectors(chunks, params["pose_ids"], params["crop_poses"])
    assert len(vectors) == len(refs)
    groups = pd.factorize(pd.Series([r.document for r in refs], dtype=object))[0] if refs else np.zeros(0, int)
    wider = int(params.get("wider", 0))          # _check_options refused it without verify
    search = iter_candidate_pairs(vectors, groups, k=candidates + wider, mode=mode, metric=metric, backend=backend,
                                  threads=threads, pose_penalty=model.pose_penalty, index=params["index"],
                                  whiten=params["whiten"], hub_correction=params.get("hub_correction", True),
                                  ranks=True)
    while True:
        try:
            done, total = next(search)
        except StopIteration as stop:
            a, b, d, rank = stop.value
            break
        yield ScreenProgress("search", done, total, time.perf_counter() - t0, f"{done} of {total} items searched")
    # one checker for the first pass and the full check: each item's image is read once
    checker = PixelChecker(lambda i: _load_or_none(refs[i], arrays, options), overlap=params.get("overlap", False),
                           first_pass_cache=max(1, min(len(refs), FIRST_PASS_CACHE_ITEMS))
                           ) if params.get("verify") else None
    n_wider = n_first_pass = n_texture = n_texture_kept = n_gated = 0
    gate = bool(params.get("gate_nearest")) and checker is not None
    t_first = time.perf_counter()
    t_texture = 0.0
    texture = int(params.get("texture", 0)) if checker is not None else 0
    if texture and len(refs) > 1:
        # a second way to candidates: the nearest by texture orientation, for the oriented
        # textures the network ranks among many panels of their kind; the pairs the embedding
        # search has not found join the wider search's in the first pass
        def read(i):
            img = _load_or_none(refs[i], arrays, options)
            if img is not None:
                checker.thumb(i, img)         # the check's thumbnails from the same read: no second one
            return img

        desc = np.full((len(refs), TEXTURE_DIM), np.nan, np.float32)
        step = 512
        for s0 in range(0, len(refs), step):
            done = min(s0 + step, len(refs))
            desc[s0:done] = texture_descriptors(lambda j: read(s0 + j), done - s0)
            yield ScreenProgress("search", done, len(refs), time.perf_counter() - t0,
                                 f"texture: {done} of {len(refs)} items read")
        ta, tb = texture_pairs(desc, groups, k=texture, mode=mode)
        del desc
        new = ~np.isin(ta * len(refs) + tb, a.astype(np.int64) * len(refs) + b)
        ta, tb = ta[new], tb[new]
        n_texture = len(ta)
        if n_texture:
            a = np.concatenate([a, ta.astype(a.dtype)])
            b = np.concatenate([b, tb.astype(b.dtype)])
            d = np.concatenate([d, pose_min_distance(vectors, ta, tb, penalty=model.pose_penalty).astype(d.dtype)])
            rank = np.concatenate([rank, np.full(n_texture, candidates + wider, rank.dtype)])
        t_texture = time.perf_counter() - t_first
    # gate_nearest: a nearest pair the first pass does not find alike keeps its place in the table
    # without the full check (match NaN); its distance fuses GATED_MATCH (below)
    gated = np.zeros(len(a), bool)
    if (wider or n_texture or gate) and len(a):
        # the pairs beyond each item's first `candidates` neighbours (and the texture pairs) stay only
        # where the pixel check's coarse stage alone (under a sixth of the full check's time per pair)
        # finds them alike
        far = np.flatnonzero(rank >= candidates)
        n_wider = len(far) - n_texture
        # all at once: the first pass sorts the pairs' two directions by item, and the more
        # often an item recurs in what it is given, the less a pair costs
        run_on = np.arange(len(a)) if gate else far
        what = ("candidate pairs" if gate else
                f"pairs beyond the first {candidates} neighbours" + (" or by texture" if n_texture else "")
                if wider else "pairs by texture")
        run = checker.iter_first_pass(a[run_on], b[run_on])
        while True:
            try:
                done, jobs = next(run)
            except StopIteration as stop:
                first = stop.value
                break
            pairs = len(run_on) * done // jobs          # jobs: two per pair whose items could be read
            yield ScreenProgress("verify", pairs, len(run_on), time.perf_counter() - t0,
                                 f"first pass: {pairs} of {len(run_on)} {what}")
        yield ScreenProgress("verify", len(run_on), len(run_on), time.perf_counter() - t0,
                             f"first pass: {len(run_on)} of {len(run_on)} {what}")
        if gate:                    # run_on is every pair: the far ones' scores, in far's order
            gated = ~(first >= FIRST_PASS_THRESHOLD) & (rank < candidates)
            n_gated = int(gated.sum())
            first = first[far]
        passed = first >= FIRST_PASS_THRESHOLD            # NaN compares False
        n_texture_kept = int(passed[len(far) - n_texture:].sum())     # the texture pairs come last
        n_first_pass = int(passed.sum()) - n_texture_kept
        keep = np.ones(len(a), bool)
        keep[far[~passed]] = False
        a, b, d, gated = a[keep], b[keep], d[keep], gated[keep]
    t_first = time.perf_counter() - t_first - t_texture
    # a copy cut from a larger panel: f between a crop window of one and the other, and the pose
    # of that window's match (one pass for both); the table is ordered (and thresholded) by the
    # smaller of the two distances
    dc, crop_pose, crop_of_b = crop_match(vectors, a, b, penalty=model.pose_penalty)
    t_search = time.perf_counter() - t0 - t_embed - t_first - t_texture

    # the pixel check of every candidate pair (before the threshold: a pair the check verifies
    # is evidence whatever its distance), but those the gate kept from it; row k's check is
    # pix's row pix_row[k]
    match = np.full(len(a), np.nan, np.float32)
    pix = None
    todo = np.flatnonzero(~gated)
    pix_row = np.full(len(a), -1, np.int64)
    pix_row[todo] = np.arange(len(todo))
    if checker is not None and len(todo):
        parts = []
        step = 4096                  # pairs per progress report
        for s0 in range(0, len(todo), step):
            rows = todo[s0:s0 + step]
            parts.append(checker(a[rows], b[rows]))
            done = min(s0 + step, len(todo))
            yield ScreenProgress("verify", done, len(todo), time.perf_counter() - t0,
                                 f"{done} of {len(todo)} pairs checked")
        pix = PixelMatch.concat(parts)
        match[todo] = pix.score
        del parts
    del checker
    t_verify = time.perf_counter() - t0 - t_embed - t_search - t_first - t_texture
    matched = match >= MATCH_THRESHOLD                 # NaN compares False
    # the table's distance is ForensicModel.distance's: f with the pixel check fused in (where
    # the model has a pixel_check and the pair was checked); the evidence that orders and
    # thresholds the table is the same with the smaller of f and crop f
    # a pair the gate stopped: fused as if the check had given it what it typically gives such
    # pairs (GATED_MATCH); with its f alone, or the first pass's score (which runs higher than the
    # check's), stopped unrelated pairs came out nearer than checked ones and passed a copy the
    # check had not verified (docs/screening.md, *Twenty-third session*)
    fuse_with = np.where(gated, GATED_MATCH, match)
    fused = model.fuse(d, fuse_with)
    evidence = model.fuse(np.fmin(d, dc), fuse_with)
    # evidence order: pixel-verified pairs by match, then the rest by that distance
    keep = np.lexsort((b, a, evidence, np.where(matched, -match, 0.0), ~matched))
    if threshold is not None:
        keep = keep[(evidence[keep] <= threshold) | matched[keep]]
    # a rendered PDF page contains its own embedded images: such a pair is not evidence
    contained = np.array([contains_the_other(refs[i], refs[j]) for i, j in zip(a[keep].tolist(), b[keep].tolist())],
                         bool)
    n_contained = int(contained.sum())
    keep = keep[~contained] if n_contained else keep
    a, b, d, dc, fused, crop_pose, crop_of_b, match, matched = (
        x[keep] for x in (a, b, d, dc, fused, crop_pose, crop_of_b, match, matched))

    # transforms of the best pose for every pair (the crop window's where it matched better, the
    # pixel check's where it verified the pair); keypoint localisation for the best ones
    pose, of_b = best_poses(vectors, a, b, penalty=model.pose_penalty)
    by_crop = dc < d                         # NaN (no crop windows) compares False
    pose[by_crop], of_b[by_crop] = crop_pose[by_crop], crop_of_b[by_crop]
    words = {}
    transform = []
    for p, ob in zip(pose.tolist(), of_b.tolist()):
        key = (p, ob)
        if key not in words:
            words[key] = pose_match((1, 1), (1, 1), p, ob).transform
        transform.append(words[key])
    box_a: list = [None] * len(a)
    box_b: list = [None] * len(a)
    inliers = np.zeros(len(a), np.int64)
    method = ["pose"] * len(a)
    for r in np.flatnonzero(matched):
        k = int(pix_row[keep[r]])              # matched: fully checked, so it has a row in pix
        pose[r], of_b[r] = pix.pose[k], pix.of_b[k]
        transform[r] = match_transform(pix, k)
        box_a[r], box_b[r], method[r] = pix.box_a[k], pix.box_b[k], "pixels"
    thumbs: dict[int, tuple[np.ndarray, float]] = {}
    n_loc = min(localize, len(a))
    cache: dict[int, np.ndarray | None] = {}
    localizer = Localizer()

    def image_of(i: int):
        if i not in cache:
            cache[i] = _load_or_none(refs[i], arrays, options)
        return cache[i]

    for r in range(n_loc):
        ia, ib = int(a[r]), int(b[r])
        img_a, img_b = image_of(ia), image_of(ib)
        if img_a is None or img_b is None:
            method[r] = "unreadable"
        else:
            m = localizer(img_a, img_b, key_a=ia, key_b=ib, pose_hint=int(pose[r]), pose_of_b=bool(of_b[r]))
            if m.method == "orb-ransac" or method[r] != "pixels":     # keypoints, or nothing better
                shared = method[r] == "pixels" and bool(pix.overlap[int(pix_row[keep[r]])])
                box_a[r], box_b[r], transform[r] = m.box_a, m.box_b, m.transform
                inliers[r], method[r] = m.inliers, m.method
                if shared and m.method == "orb-ransac":   # the keypoints' boxes are the shared region
                    transform[r] = add_words(transform[r], "shared region")
            for i, img in ((ia, img_a), (ib, img_b)):
                if i not in thumbs:
                    thumbs[i] = thumbnail(img)
        if r % 10 == 9 or r == n_loc - 1:
            yield ScreenProgress("localize", r + 1, n_loc, time.perf_counter() - t0, f"{r + 1} of {n_loc} pairs localised")
        if len(cache) > 256:
            cache.clear()
    t_localize = time.perf_counter() - t0 - t_embed - t_search - t_first - t_texture - t_verify
    # verified pairs are the strongest evidence there is: by pixels (in match order, already
    # first) or by keypoints (a similarity transform with enough RANSAC inliers; on generated
    # panels 0 of 200 unrelated pairs were verified and 15 of 15 planted copies), then the rest
    verified = np.array([m in ("orb-ransac", "pixels") for m in method], bool) | matched
    if verified.any():
        order = np.argsort(~verified, kind="stable")
        a, b, d, dc, fused, inliers, match = (x[order] for x in (a, b, d, dc, fused, inliers, match))
        transform, box_a, box_b, method = ([seq[i] for i in order] for seq in (transform, box_a, box_b, method))

    pairs = pd.DataFrame({
        "a": a.astype(np.int64), "b": b.astype(np.int64), "distance": fused.astype(np.float64),
        "f": d.astype(np.float64), "crop_distance": dc.astype(np.float64), "match": match.astype(np.float64),
        "probability": model.probability_from_distance(fused).astype(np.float64),
        "transform": pd.Series(transform, dtype=object),
        "box_a": pd.Series(box_a, dtype=object), "box_b": pd.Series(box_b, dtype=object),
        "inliers": inliers, "method": pd.Series(method, dtype=object),
    }, columns=PAIR_COLUMNS) if len(a) else empty_frame(PAIR_COLUMNS)
    faiss_used = (backend == "faiss" or (backend == "auto" and have_faiss())) and mode != "within"
    index_kind = resolve_index(params["index"], vectors.index_size, backend)
    info = {"model": model.identity(), "poses": poses, "pose_embedding": params["pose_embedding"],
            "stored_poses": len(params["pose_ids"]), "compiled": model.is_compiled, "mode": mode,
            "candidates": candidates, "wider": wider, "wider_pairs": n_wider, "wider_pairs_kept": n_first_pass,
            "texture": texture, "texture_pairs": n_texture, "texture_pairs_kept": n_texture_kept,
            "gate_nearest": gate, "nearest_pairs_gated": n_gated,
            "first_pass_threshold": FIRST_PASS_THRESHOLD if (wider or texture or gate) else None,
            "whitened": bool(params["whiten"] and vectors.index_size >= WHITEN_MIN_ROWS),
            "hub_correction": bool(params.get("hub_correction", True)),
            "overlap": bool(params.get("verify") and params.get("overlap", False)),
            "crop_poses": list(params["crop_poses"]), "crop_rows": vectors.c, "crop_layout": params.get("crop_layout"),
            "metric": metric, "index": ("faiss-ivf" if index_kind == "ivf" else "faiss") if faiss_used else "torch",
            "items": len(refs), "restored": n_restored, "dropped_page_self_pairs": n_contained, "seconds_embed": round(t_embed, 2),
            "seconds_search": round(t_search, 2), "seconds_texture": round(t_texture, 2), "seconds_first_pass": round(t_first, 2), "seconds_verify": round(t_verify, 2), "seconds_localize": round(t_localize, 2),
            "verified_by_pixels": int(np.sum(matched)), "match_threshold": MATCH_THRESHOLD if params.get("verify") else None,
            "store": str(store) if store is not None else None}
    result = ScreenResult(_items_frame(refs), pairs, _skipped_frame(skipped_all), info, thumbs)
    yield ScreenProgress("done", len(refs), len(refs), time.perf_counter() - t0,
                         f"{len(refs)} items, {len(pairs)} candidate pairs", result)


def screen(sources, model=None, *, progress: Callable[[ScreenProgress], object] | None = None,
           **kwargs) -> ScreenResult:
    """Screen ``sources`` for duplicated images and return a :class:`ScreenResult`.

    Same arguments as :func:`iter_screen`; ``progress(report)`` is called with every report.

    Examples
    --------
    >>> import napari_siamforensic as sf                       # doctest: +SKIP
    >>> res = sf.screen(["figures/", "paper.pdf"])              # doctest: +SKIP
    >>> res.pairs[["a", "b", "distance", "transform"]].head()  # doctest: +SKIP
    >>> res.to_html("report.html")                              # doctest: +SKIP
    """
    if progress is not None and not callable(progress):
        raise TypeError(f"`progress` must be callable or None, got {type(progress).__name__}")
    result = None
    for report in iter_screen(sources, model, **kwargs):
        if progress is not None:
            progress(report)
        if report.finished:
            result = report.result
    assert result is not None
    return result
