"""Screening benchmark: generated figure panels with planted duplicates.

Prints (markdown) for each corpus size N:

* wall time and peak memory (RSS above the start) of ``screen`` (files on disk -> store ->
  candidates -> re-scored pairs; localisation of the best pairs excluded, timed separately);
* recall of the planted pairs among the candidates at 1 and 10 candidates per item, against
  an exhaustive all-pairs comparison (exact symmetric pose-minimum distance between every two
  items, in blocks: no N x N matrix either) on the same embeddings in the same run;
* R-precision: the share of planted pairs among the best (number of planted pairs) pairs;
* localisation: IoU of the region reported in the original against the planted crop, for
  keypoints (ORB + RANSAC) and for the pose-only fallback (whole frame);
* panel splitting: precision and recall of panel boxes (IoU >= 0.9) on generated figures,
  and how many single images were wrongly split.

Usage::

    python benchmarks/screen.py --model runs/default/checkpoint.safetensors --n 1000 10000
    python benchmarks/screen.py --n 1000 --poses dihedral+invert --threads 2
    python benchmarks/screen.py --n 1000 --overlap-views --overlap --without-overlap --search-k 30 --no-panels --no-exhaustive

``--overlap-views`` plants overlapping views of one picture instead of cropped copies (the
pixel check's overlap stage, thirteenth session).

A run longer than a session (N = 100,000: about two hours on 2 CPU cores) keeps its corpus and
store and prints each stage as it ends; run the same command again to go on from the store::

    python benchmarks/screen.py --n 100000 --threads 2 --no-panels --no-exhaustive --no-index-recall --keep runs/bench100k --progress

Everything is generated from fixed seeds (no downloads, nothing from reserved data sets).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

from _common import PeakRSS, check_switch, machine_line

# ----------------------------------------------------------------------------- generation


def _power_noise(rng, shape, beta):
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = 1.0
    spec = (rng.standard_normal(f.shape) + 1j * rng.standard_normal(f.shape)) / f ** (beta / 2)
    out = np.fft.irfft2(spec, s=shape)
    return (out - out.mean()) / (out.std() + 1e-9)


def make_panel(seed: int, shape) -> np.ndarray:
    """A microscopy-like gray panel in [0, 1] (blobs, cells, fibres or textures)."""
    return panel_and_kind(seed, shape)[0]


def panel_and_kind(seed: int, shape) -> tuple[np.ndarray, int]:
    """:func:`make_panel`'s panel and its kind (an index into ``PANEL_KINDS``)."""
    rng = np.random.default_rng(seed)
    kind = int(rng.integers(4))
    h, w = shape
    if kind == 0:      # fluorescent blobs
        pts = np.zeros(shape)
        n = rng.integers(20, 120)
        pts[rng.integers(0, h, n), rng.integers(0, w, n)] = rng.uniform(0.5, 1, n)
        blobs = ndi.gaussian_filter(pts, rng.uniform(2, 6))
        img = blobs / (blobs.max() + 1e-12) + 0.02 * _power_noise(rng, shape, 2.5)
    elif kind == 1:    # cells: thresholded smooth noise with edges
        s = _power_noise(rng, shape, rng.uniform(3, 4))
        cells = (s > rng.uniform(-0.3, 0.5)).astype(float)
        img = ndi.gaussian_filter(cells, 1.0) + 0.4 * ndi.gaussian_laplace(cells, 1.5) + 0.1 * _power_noise(rng, shape, 1)
    elif kind == 2:    # fibres: oriented noise
        white = rng.standard_normal(shape)
        img = ndi.gaussian_filter(white, (rng.uniform(0.8, 2), rng.uniform(6, 14)))
        img = ndi.rotate(img, rng.uniform(0, 180), reshape=False, mode="reflect")
    else:              # tissue-like texture
        img = _power_noise(rng, shape, rng.uniform(1.5, 3.5))
    img = img + 0.03 * rng.standard_normal(shape)
    lo, hi = np.percentile(img, [0.5, 99.5])
    img = np.clip((img - lo) / (hi - lo + 1e-9), 0, 1)
    if rng.random() < 0.5:
        img = 1 - img
    return img ** rng.uniform(0.7, 1.4), kind


def plant_copy(img: np.ndarray, rng):
    """A manipulated copy: crop (60-100 % per side), dihedral pose, rescale, gamma.

    Returns the copy, the crop box in the original (x0, y0, x1, y1) and the pose."""
    h, w = img.shape
    ch, cw = int(h * rng.uniform(0.6, 1.0)), int(w * rng.uniform(0.6, 1.0))
    y0, x0 = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    out = img[y0:y0 + ch, x0:x0 + cw]
    mirror, turns = bool(rng.random() < 0.5), int(rng.integers(4))
    if mirror:
        out = out[:, ::-1]
    out = np.rot90(out, turns)
    s = rng.uniform(0.7, 1.4)
    im = Image.fromarray((np.clip(out, 0, 1) * 255).astype(np.uint8))
    im = im.resize((max(16, round(im.width * s)), max(16, round(im.height * s))), Image.Resampling.BILINEAR)
    out = (np.asarray(im) / 255.0) ** rng.uniform(0.7, 1.4)
    return out, (int(x0), int(y0), int(x0 + cw), int(y0 + ch)), (mirror, turns)


def write_corpus(folder: Path, n: int, dup_fraction: float, seed: int):
    """N panel files; ``dup_fraction * N`` of them are planted copies (JPEG) of others (PNG).

    Returns ``(file names, planted: list of (original name, copy name, box in original))``."""
    rng = np.random.default_rng(seed)
    n_dup = int(round(n * dup_fraction))
    n_orig = n - n_dup
    names, planted = [], []
    originals = rng.choice(n_orig, n_dup, replace=False)
    dup_of = {int(o): k for k, o in enumerate(originals)}
    for i in range(n_orig):
        shape = (int(rng.integers(128, 257)), int(rng.integers(128, 257)))
        img = make_panel(seed * 1_000_003 + i, shape)
        name = f"p{i:06d}.png"
        Image.fromarray((img * 255).astype(np.uint8)).save(folder / name)
        names.append(name)
        if i in dup_of:
            copy, box, pose = plant_copy(img, np.random.default_rng([seed, i]))
            cname = f"c{i:06d}.jpg"
            Image.fromarray((np.clip(copy, 0, 1) * 255).astype(np.uint8)).save(
                folder / cname, quality=int(rng.integers(50, 95)))
            names.append(cname)
            planted.append((name, cname, box, pose))
    return names, planted


def write_overlap_corpus(folder: Path, n: int, dup_fraction: float, seed: int):
    """:func:`write_corpus`, but each planted pair is two *overlapping views* of one picture
    (thirteenth session): the first (PNG) and a second (JPEG) that shares 40-80 % of its rows
    and 40-80 % of its columns with it (16-64 % of its area), neither holding the other, in a
    random pose and gamma. Returns ``(file names, planted: list of (first name, second name,
    the shared region in the first (x0, y0, x1, y1), pose))``."""
    rng = np.random.default_rng(seed)
    n_dup = int(round(n * dup_fraction))
    n_orig = n - n_dup
    names, planted = [], []
    originals = set(rng.choice(n_orig, n_dup, replace=False).tolist())
    for i in range(n_orig):
        h, w = int(rng.integers(128, 257)), int(rng.integers(128, 257))
        if i not in originals:
            img = make_panel(seed * 1_000_003 + i, (h, w))
            Image.fromarray((img * 255).astype(np.uint8)).save(folder / f"p{i:06d}.png")
            names.append(f"p{i:06d}.png")
            continue
        r = np.random.default_rng([seed, i])
        fy, fx = r.uniform(0.4, 0.8, 2)
        dy, dx = round(h * (1 - fy)), round(w * (1 - fx))
        big = make_panel(seed * 1_000_003 + i, (h + dy, w + dx))
        if r.random() < 0.5:                     # the second view below-right or above-left
            first, second, box = big[:h, :w], big[dy:, dx:], (dx, dy, w, h)
        else:
            first, second, box = big[dy:, dx:], big[:h, :w], (0, 0, w - dx, h - dy)
        mirror, turns = bool(r.random() < 0.5), int(r.integers(4))
        second = np.rot90(second[:, ::-1] if mirror else second, turns) ** r.uniform(0.7, 1.4)
        name, cname = f"p{i:06d}.png", f"c{i:06d}.jpg"
        Image.fromarray((first * 255).astype(np.uint8)).save(folder / name)
        Image.fromarray((np.clip(second, 0, 1) * 255).astype(np.uint8)).save(folder / cname,
                                                                             quality=int(rng.integers(50, 95)))
        names += [name, cname]
        planted.append((name, cname, box, (mirror, turns)))
    return names, planted


def make_figure(rng):
    """A figure of rows x cols panels with uneven sizes, gutters, background, labels, JPEG."""
    rows, cols = int(rng.integers(1, 4)), int(rng.integers(1, 5))
    gut, margin = int(rng.integers(3, 16)), int(rng.integers(0, 20))
    bg = 255 if rng.random() < 0.7 else 0
    heights = rng.integers(64, 200, rows)
    widths = rng.integers(64, 200, cols)
    H = 2 * margin + heights.sum() + gut * (rows - 1)
    W = 2 * margin + widths.sum() + gut * (cols - 1)
    fig = np.full((H, W), bg, np.uint8)
    boxes = []
    y = margin
    for r in range(rows):
        x = margin
        for c in range(cols):
            ph, pw = int(heights[r]), int(widths[c])
            if rng.random() < 0.15:         # a narrower panel within its cell
                pw = max(48, pw - int(rng.integers(0, pw // 2)))
            panel = (make_panel(int(rng.integers(1 << 30)), (ph, pw)) * 255).astype(np.uint8)
            fig[y:y + ph, x:x + pw] = panel
            boxes.append((x, y, x + pw, y + ph))
            if rng.random() < 0.5 and gut >= 8 and y >= 8:     # a letter above the corner
                fig[y - 7:y - 3, x:x + 4] = 255 - bg
            x += int(widths[c]) + gut
        y += int(heights[r]) + gut
    if rng.random() < 0.5:     # JPEG round trip (figures are often JPEG)
        import io

        buf = io.BytesIO()
        Image.fromarray(fig).save(buf, "JPEG", quality=int(rng.integers(75, 96)))
        fig = np.asarray(Image.open(buf))
    return fig, boxes


# ----------------------------------------------------------------------------- measuring


def _add_nearest(found, dist, start, kmax):
    """Add each row's k nearest others (rows ``start...`` of an ``(rows, N)`` distance block;
    the item itself excluded) to ``found[k]`` as ``(a, b)`` pairs with a < b."""
    import torch

    bn = dist.shape[0]
    dist[torch.arange(bn), torch.arange(start, start + bn)] = float("inf")
    nn = dist.topk(kmax, dim=1, largest=False).indices.numpy()
    for r in range(bn):
        i = start + r
        for k in found:
            for j in nn[r, :k].tolist():
                found[k].add((min(i, j), max(i, j)))


def exhaustive_topk(vectors, k_values, block=256):
    """Exact symmetric pose-min distance of every item to every other, in blocks of rows:
    ``{k: set of (a, b) pairs, a < b}`` of every item's k nearest, and the seconds taken.
    (With a pose basis stored: the minimum over every stored pose pair.)"""
    import torch

    if not vectors.all_poses:
        return _exhaustive_basis(vectors, k_values, block)
    t0 = time.perf_counter()
    base0 = torch.from_numpy(vectors.pose0())                       # (N, D)
    n = len(vectors)
    kmax = max(k_values)
    found = {k: set() for k in k_values}
    allv = None
    for start, blk in vectors.blocks(block):
        b = torch.from_numpy(np.ascontiguousarray(blk))             # (B, P, D)
        bn, p, d = b.shape
        d1 = torch.cdist(b.reshape(bn * p, d), base0, p=1).reshape(bn, p, n).amin(1)   # poses of i vs j
        if allv is None:
            allv = [torch.from_numpy(np.ascontiguousarray(vectors.rows(np.arange(s, min(n, s + 2048)))))
                    for s in range(0, n, 2048)]
        d2 = torch.cat([torch.cdist(b[:, 0], c.reshape(-1, d), p=1).reshape(bn, len(c), p).amin(2)
                        for c in allv], 1)                                              # i vs poses of j
        dist = torch.minimum(d1, d2)
        _add_nearest(found, dist, start, kmax)
    return found, time.perf_counter() - t0


def _exhaustive_basis(vectors, k_values, block=256):
    import torch

    t0 = time.perf_counter()
    n = len(vectors)
    allv = torch.from_numpy(np.ascontiguousarray(vectors.rows(np.arange(n))))      # (N, P, D)
    kmax = max(k_values)
    found = {k: set() for k in k_values}
    for start in range(0, n, block):
        b = allv[start:start + block]
        bn, p, d = b.shape
        dist = torch.cdist(b.reshape(bn * p, d), allv.reshape(n * p, d), p=1).reshape(bn, p, n, p).amin(dim=(1, 3))
        _add_nearest(found, dist, start, kmax)
    return found, time.perf_counter() - t0


def panel_benchmark(n_figures=200, n_singles=300, seed=7):
    from napari_siamforensic.screening.localize import box_iou
    from napari_siamforensic.screening.panels import split_panels

    rng = np.random.default_rng(seed)
    tp = fp = fn = 0
    t0 = time.perf_counter()
    for _ in range(n_figures):
        fig, truth = make_figure(rng)
        got = [b for b in split_panels(fig) if min(b[2] - b[0], b[3] - b[1]) >= 32]
        if len(truth) == 1 and not got:
            got = [(0, 0, fig.shape[1], fig.shape[0])]   # "not split" = the whole figure is the panel
        matched = set()
        for g in got:
            best = max(range(len(truth)), key=lambda j: box_iou(g, truth[j]))
            if box_iou(g, truth[best]) >= 0.9 and best not in matched:
                matched.add(best)
                tp += 1
            else:
                fp += 1
        fn += len(truth) - len(matched)
    t_fig = time.perf_counter() - t0
    wrong = 0
    for i in range(n_singles):
        shape = (int(rng.integers(128, 400)), int(rng.integers(128, 400)))
        img = (make_panel(90_000_000 + i, shape) * 255).astype(np.uint8)
        if len(split_panels(img)) > 1:
            wrong += 1
    return {"figures": n_figures, "true panels": tp + fn, "precision": tp / max(1, tp + fp),
            "recall": tp / max(1, tp + fn), "single images split": f"{wrong} / {n_singles}",
            "ms per figure": 1000 * t_fig / n_figures}


def run_corpus(n, args, model):
    """``{pose embedding: rows}``: one generated corpus, screened once per ``--pose-embedding``."""
    out = {}
    seed = n if args.corpus_seed is None else args.corpus_seed
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        base = Path(args.keep) if args.keep else Path(tmp)
        kind = "overlap" if args.overlap_views else "copies"
        folder = base / (f"corpus-{n}-{seed}-{kind}-{args.dup_fraction:g}" if args.keep else "corpus")
        done_marker = folder / "planted.json"
        t = time.perf_counter()
        if args.keep and done_marker.exists():
            # generated by an earlier run (the marker is written last): reused, not timed again
            planted = [(o, c, tuple(box), tuple(pose)) for o, c, box, pose in json.loads(done_marker.read_text())]
            generate_s = None
            print(f"N={n}: corpus reused from {folder}", flush=True)
        else:
            if folder.exists():
                shutil.rmtree(folder)       # an interrupted generation: start it again
            folder.mkdir(parents=True)
            write = write_overlap_corpus if args.overlap_views else write_corpus
            names, planted = write(folder, n, args.dup_fraction, seed=seed)
            generate_s = time.perf_counter() - t
            if args.keep:
                done_marker.write_text(json.dumps(planted))
            print(f"N={n}: corpus generated in {generate_s:.0f} s", flush=True)
        gates = {"off": (False,), "on": (True,), "both": (False, True)}[args.gate_nearest]
        for emb in args.pose_embedding:
            crops = "none" if args.no_crops else args.crops
            # one store per corpus, model and embedding options (a store refuses any other)
            store = base / (f"store-{n}-{seed}-{kind}-{model.identity()}-{args.poses}-{emb}-{crops}"
                            if args.keep else f"store-{emb}")
            for gate in gates:
                # --gate-nearest both: the second screen restores the first's store (no embedding)
                rows = {"corpus seed": seed, "generate s": "reused" if generate_s is None else generate_s}
                _screen_corpus(rows, folder, store, planted, emb, args, model, gate)
                name = emb + (", gate on the nearest" if gate else "")
                out[name] = rows
                print(f"N={n} {name} done, load average {os.getloadavg()}", flush=True)
    return out


class ProgressLog:
    """``--progress``: one line per stage of the screen (and one every ``every`` seconds within
    it), with the seconds since the screen began and the load average, flushed at once: a run
    stopped before its end still says how long each stage it finished took."""

    def __init__(self, every: float = 300.0):
        self.every, self.key, self.last = every, None, -1e9

    def __call__(self, report) -> None:
        key = (report.stage, report.message.split(":", 1)[0] if ":" in report.message else "")
        if key != self.key or report.seconds - self.last >= self.every or report.finished:
            self.key, self.last = key, report.seconds
            print(f"  [{report.seconds:8.1f} s] {report.stage}: {report.message} "
                  f"(load {' '.join(f'{x:.2f}' for x in os.getloadavg())})", flush=True)


def _screen_corpus(rows, folder, store, planted, emb, args, model, gate_nearest=False):
    from napari_siamforensic.screening import index as index_module
    from napari_siamforensic.screening import screen
    from napari_siamforensic.screening.index import (EmbeddingStore, Vectors, _fit_search_whitening, candidate_pairs,
                                                     crop_min_distance, stored_pose_ids)
    from napari_siamforensic.screening.localize import Localizer, box_iou
    from napari_siamforensic.screening.sources import load_item_image

    with PeakRSS() as mem:
        t = time.perf_counter()
        res = screen([str(folder)], model, candidates=max(max(args.k), args.search_k), poses=args.poses,
                     localize=0, store=store, batch_size=args.batch_size, threads=args.threads,
                     pose_embedding=emb, index=args.index, compile=args.compile, whiten=not args.no_whiten,
                     crops=False if args.no_crops else args.crops, verify=not args.no_verify,
                     hub_correction=not args.no_hub_correction, overlap=args.overlap, wider=args.wider,
                     texture=args.texture, metric=args.metric, gate_nearest=gate_nearest,
                     progress=ProgressLog() if args.progress else None)
        wall = time.perf_counter() - t
    rows["items restored from the store (not embedded in this run)"] = res.info["restored"]
    rows["items"] = len(res.items)
    rows["stored poses"] = res.info["stored_poses"]
    rows["compiled"] = res.info["compiled"]
    rows["index"] = res.info["index"]
    rows["whitened search"] = res.info["whitened"]
    rows["hub correction"] = res.info["hub_correction"]
    rows["crop rows per item"] = res.info["crop_rows"]
    rows["crop windows"] = res.info["crop_layout"]
    rows["search metric"] = res.info["metric"]
    rows["screen wall s"] = wall
    rows["embed s"] = res.info["seconds_embed"]
    rows["search s"] = res.info["seconds_search"]
    rows["pixel check s"] = res.info.get("seconds_verify", 0.0)
    rows["wider"] = res.info["wider"]
    if res.info["wider"]:
        rows["first pass s"] = res.info["seconds_first_pass"]
        rows[f"pairs beyond the first {max(max(args.k), args.search_k)} / kept by the first pass"] = (
            f"{res.info['wider_pairs']} / {res.info['wider_pairs_kept']}")
    rows["texture"] = res.info["texture"]
    rows["gate on the nearest pairs"] = res.info["gate_nearest"]
    if res.info["gate_nearest"]:
        rows["first pass s"] = res.info["seconds_first_pass"]
        rows["nearest pairs the gate kept from the full check"] = res.info["nearest_pairs_gated"]
    if res.info["texture"]:
        rows["texture s (reading every item, descriptors, check thumbnails, pairs)"] = res.info["seconds_texture"]
        rows["texture pairs the search had not found / kept by the first pass"] = (
            f"{res.info['texture_pairs']} / {res.info['texture_pairs_kept']}")
    rows["candidate pairs"] = len(res.pairs)
    rows["items/s"] = len(res.items) / wall
    rows["peak RSS above start MiB"] = (mem.peak - mem.start) / 2 ** 20
    src = {os.path.basename(s): i for i, s in zip(res.items["id"], res.items["source"])}
    truth = {(min(src[o], src[c]), max(src[o], src[c])) for o, c, _, _ in planted}
    _screen_order_rows(rows, res, truth, planted, src, args)
    if not args.overlap_views:
        _candidate_recall_by_kind(rows, res, planted, src, folder, rows["corpus seed"])
    checked = len(res.pairs) and np.isfinite(res.pairs["match"].to_numpy(float)).any()
    if args.without_rotations and checked:
        _check_without_stage(rows, res, truth, "rotations")
    if args.without_overlap and checked:
        _check_without_stage(rows, res, truth, "overlap")
    if args.without_line_rule and checked:
        _check_without_stage(rows, res, truth, "structure")
    if args.without_discount and checked:
        _check_without_stage(rows, res, truth, "discount")
    # the same store, searched again at each k, and exhaustively
    ids = stored_pose_ids(args.poses, emb)
    crop_poses = tuple(res.info["crop_poses"])
    st = EmbeddingStore(store, model_id=model.identity(), poses=args.poses, dim=model.config.embedding_dim,
                        pose_ids=ids, crop_poses=crop_poses, crop_layout=res.info["crop_layout"] or "pixels")
    refs, chunks, _ = st.restore()
    vectors = Vectors(chunks, ids, crop_poses)
    assert len(vectors) == len(res.items)
    groups = np.arange(len(vectors))
    for k in (args.k if args.index_recall else ()):
        t = time.perf_counter()
        a, b, d = candidate_pairs(vectors, groups, k=k, threads=args.threads, index=args.index,
                                  pose_penalty=model.pose_penalty, whiten=not args.no_whiten,
                                  hub_correction=not args.no_hub_correction, metric=args.metric)
        dt = time.perf_counter() - t
        got = set(zip(a.tolist(), b.tolist()))
        rows[f"recall@{k} (index)"] = len(truth & got) / len(truth)
        rows[f"search s @{k}"] = dt
        if vectors.c:                 # the same search with whole images only, for the ratio
            t = time.perf_counter()
            ap, bp, _ = candidate_pairs(vectors.without_crops(), groups, k=k, threads=args.threads, index=args.index,
                                        pose_penalty=model.pose_penalty, whiten=not args.no_whiten,
                                        hub_correction=not args.no_hub_correction, metric=args.metric)
            rows[f"search s @{k} (whole images only)"] = time.perf_counter() - t
            rows[f"recall@{k} (index, whole images only)"] = len(truth & set(zip(ap.tolist(), bp.tolist()))) / len(truth)
        if res.info["whitened"]:      # the same search without whitening, for the ratio
            ap, bp, _ = candidate_pairs(vectors, groups, k=k, threads=args.threads, index=args.index,
                                        pose_penalty=model.pose_penalty, whiten=False, hub_correction=not args.no_hub_correction)
            rows[f"recall@{k} (index, not whitened)"] = len(truth & set(zip(ap.tolist(), bp.tolist()))) / len(truth)
        if res.info["hub_correction"]:   # the same search without the hub correction, for the ratio
            t = time.perf_counter()
            ap, bp, _ = candidate_pairs(vectors, groups, k=k, threads=args.threads, index=args.index,
                                        pose_penalty=model.pose_penalty, whiten=not args.no_whiten,
                                        hub_correction=False)
            rows[f"search s @{k} (without hub correction)"] = time.perf_counter() - t
            rows[f"recall@{k} (index, without hub correction)"] = (
                len(truth & set(zip(ap.tolist(), bp.tolist()))) / len(truth))
        if args.ivf_check:
            t = time.perf_counter()
            ai, bi, _ = candidate_pairs(vectors, groups, k=k, threads=args.threads, index="ivf",
                                        whiten=not args.no_whiten, hub_correction=not args.no_hub_correction)
            rows[f"recall@{k} (IVF index)"] = len(truth & set(zip(ai.tolist(), bi.tolist()))) / len(truth)
            rows[f"IVF search s @{k}"] = time.perf_counter() - t
        for probes in args.ivf_probes:
            default, index_module.IVF_PROBE = index_module.IVF_PROBE, int(probes)
            try:
                t = time.perf_counter()
                ai, bi, _ = candidate_pairs(vectors, groups, k=k, threads=args.threads, index="ivf",
                                            whiten=not args.no_whiten, hub_correction=not args.no_hub_correction)
                dt_ivf = time.perf_counter() - t
                cells = index_module.ivf_shape(vectors.index_size)[0]
            finally:
                index_module.IVF_PROBE = default
            pairs = set(zip(ai.tolist(), bi.tolist()))
            rows[f"IVF {probes} of {cells} cells @{k}: recall / share of the index's pairs / s"] = (
                f"{len(truth & pairs) / len(truth):.3f} / {len(got & pairs) / max(1, len(got)):.4f} / {dt_ivf:.1f}")
        if k == max(args.k):
            top = set(zip(a[:len(truth)].tolist(), b[:len(truth)].tolist()))
            rows["R-precision"] = len(truth & top) / len(truth)
            rows["planted with f <= 1"] = float(np.mean([dd <= 1.0 for aa, bb, dd in zip(a, b, d) if (aa, bb) in truth]))
            rows["unrelated candidates with f <= 1"] = float(np.mean(
                [dd <= 1.0 for aa, bb, dd in zip(a, b, d) if (aa, bb) not in truth]))
            if vectors.c:   # the screen's own order: the smaller of f and the crop distance
                dc = crop_min_distance(vectors, a, b, penalty=model.pose_penalty)
                ev = np.fmin(d, dc)
                o = np.argsort(ev, kind="stable")[:len(truth)]
                rows["R-precision (by min of f and crop f)"] = len(truth & set(zip(a[o].tolist(), b[o].tolist()))) / len(truth)
                rows["planted with crop f <= 1"] = float(np.mean([x <= 1.0 for aa, bb, x in zip(a, b, dc) if (aa, bb) in truth]))
                rows["unrelated candidates with crop f <= 1"] = float(np.mean(
                    [x <= 1.0 for aa, bb, x in zip(a, b, dc) if (aa, bb) not in truth]))
    if args.exhaustive:              # whole images only (the crop windows are not in it)
        vectors = vectors.without_crops()
        found, dt = exhaustive_topk(vectors, args.k)
        for k in args.k:
            rows[f"recall@{k} (exhaustive)"] = len(truth & found[k]) / len(truth)
        rows["exhaustive s"] = dt
        white = _fit_search_whitening(vectors) if res.info["whitened"] else None
        if white is not None:     # the whitened search's own exhaustive counterpart
            wv = vectors.transformed(white)
            found, _ = exhaustive_topk(wv, args.k)
            for k in args.k:
                rows[f"recall@{k} (exhaustive, whitened)"] = len(truth & found[k]) / len(truth)
    if args.verify_top:
        # what the screen does with localize=L: keypoint-verify its L best pairs and move the
        # verified ones to the top; how clean is that top?
        loc = Localizer()
        pairs = res.pairs.head(args.verify_top)
        by_id = {int(i): r for i, r in zip(res.items["id"], refs)}
        t = time.perf_counter()
        verified = []
        for pa, pb in zip(pairs["a"].astype(int), pairs["b"].astype(int)):
            m = loc(load_item_image(by_id[pa]), load_item_image(by_id[pb]))
            verified.append(m.method == "orb-ransac")
        verified = np.array(verified, bool)
        is_planted = np.array([(min(pa, pb), max(pa, pb)) in truth for pa, pb in
                               zip(pairs["a"].astype(int), pairs["b"].astype(int))], bool)
        rows[f"verified of the best {len(pairs)}: planted / unrelated"] = (
            f"{int((verified & is_planted).sum())} / {int((verified & ~is_planted).sum())}")
        rows[f"planted among the best {len(pairs)} (by distance)"] = int(is_planted.sum())
        top = np.argsort(~verified, kind="stable")[:len(truth)]
        rows["R-precision after verification"] = float(is_planted[top].sum() / len(truth))
        rows["s per pair verified"] = (time.perf_counter() - t) / max(1, len(pairs))
    # localisation of planted pairs
    loc = Localizer()
    ious, ious_pose, pose_ok = [], [], []
    t = time.perf_counter()
    by_name = {os.path.basename(r.source): r for r in refs}
    for o, c, box, (mirror, turns) in planted[:args.localize]:
        ia = load_item_image(by_name[o])
        ib = load_item_image(by_name[c])
        m = loc(ia, ib)
        ious.append(box_iou(m.box_a, box))
        ious_pose.append(box_iou((0, 0, ia.shape[1], ia.shape[0]), box))
        pose_ok.append(m.method != "pose" and m.mirrored == mirror)
    if ious:
        rows["localised pairs"] = len(ious)
        rows["IoU mean (ORB+RANSAC)"] = float(np.mean(ious))
        rows["IoU median (ORB+RANSAC)"] = float(np.median(ious))
        rows["IoU mean (whole frame)"] = float(np.mean(ious_pose))
        rows["mirror found"] = float(np.mean(pose_ok))
        rows["s per pair localised"] = (time.perf_counter() - t) / len(ious)
    return rows


def _screen_order_rows(rows, res, truth, planted, src, args):
    """Recall at 1 / k candidates per item in the screen's own table order (pixel-verified pairs
    first, by match; then by distance), R-precision of that order, and the pixel check's figures."""
    from napari_siamforensic.screening.localize import box_iou
    from napari_siamforensic.screening.verify import MATCH_THRESHOLD

    pa, pb = res.pairs["a"].to_numpy(int), res.pairs["b"].to_numpy(int)
    key = [(min(x, y), max(x, y)) for x, y in zip(pa.tolist(), pb.tolist())]
    wider = res.info["wider"]
    searched = f"{max(max(args.k), args.search_k)}" + (f" + {wider} wider" if wider else "")
    ranks: dict[int, list] = {}
    for pair in key:                       # table order: each item's candidates, best evidence first
        for i in pair:
            ranks.setdefault(i, []).append(pair)
    for k in args.k:
        got = {p for lst in ranks.values() for p in lst[:k]}
        rows[f"recall@{k} (screen's order, {searched} searched per item)"] = len(truth & got) / len(truth)
    rows["R-precision (screen's order)"] = len(truth & set(key[:len(truth)])) / len(truth)
    match = res.pairs["match"].to_numpy(float)
    if np.isfinite(match).any():
        planted_rows = np.array([p in truth for p in key], bool)
        rows["planted among the candidate pairs"] = int(planted_rows.sum())
        if planted_rows.any():
            # (NaN: not checked in full, where the gate on the nearest pairs stopped them)
            rows["match of planted pairs: min / median"] = (f"{np.nanmin(match[planted_rows]):.3f} / "
                                                            f"{np.nanmedian(match[planted_rows]):.3f}")
            rows["planted pairs not checked in full"] = int(np.isnan(match[planted_rows]).sum())
            rows[f"planted pairs with match >= {MATCH_THRESHOLD:g}"] = float(np.mean(match[planted_rows] >= MATCH_THRESHOLD))
        other = match[~planted_rows]
        other = other[np.isfinite(other)]
        rows["unrelated candidate pairs checked in full"] = len(other)
        if len(other):
            rows["match of unrelated candidate pairs: max / 99.9th percentile"] = (
                f"{other.max():.3f} / {np.percentile(other, 99.9):.3f}")
            rows[f"unrelated candidate pairs with match >= {MATCH_THRESHOLD:g}"] = int((other >= MATCH_THRESHOLD).sum())
        # the pixel check's box in the original against the planted region
        index = {p: r for r, p in enumerate(key)}
        ious = []
        for o, c, box, _ in planted:
            r = index.get((min(src[o], src[c]), max(src[o], src[c])))
            if r is None or not match[r] >= MATCH_THRESHOLD:
                continue
            got_box = res.pairs["box_a"].iloc[r] if pa[r] == src[o] else res.pairs["box_b"].iloc[r]
            ious.append(box_iou(tuple(got_box), box) if got_box is not None else 0.0)
        if ious:
            rows["IoU mean / min (pixel check, verified planted pairs)"] = f"{np.mean(ious):.3f} / {np.min(ious):.3f}"


def _check_without_stage(rows, res, truth, stage: str = "rotations") -> None:
    """The pixel check of the same candidate pairs again, with and then without one of its
    stages (``core.pixels``: ``"rotations"``, tenth session; ``"overlap"``, thirteenth;
    ``"structure"``, the line rule, fourteenth; ``"discount"``, the small-template discount,
    fifteenth), each timed on fresh thumbnails: the stage's
    cost as a ratio measured in one run, and what it changes in the match; the unrelated pairs
    either way verifies are listed (file names, match with / without)."""
    from napari_siamforensic.core.pixels import MATCH_THRESHOLD, PixelChecker

    name = {"rotations": "rotation stage", "overlap": "overlap stage", "structure": "line rule",
            "discount": "small-template discount"}[stage]
    paths = dict(zip(res.items["id"].to_numpy(int).tolist(), res.items["source"]))
    a, b = res.pairs["a"].to_numpy(int), res.pairs["b"].to_numpy(int)
    images = {i: np.asarray(Image.open(paths[i]).convert("F"), np.float32) for i in set(a.tolist()) | set(b.tolist())}
    planted = np.array([(min(x, y), max(x, y)) in truth for x, y in zip(a.tolist(), b.tolist())], bool)
    out = {}
    for on in (True, False):
        t = time.perf_counter()
        m = PixelChecker(images.__getitem__, **check_switch(stage, on))(a, b)
        out[on] = (time.perf_counter() - t, m.score)
    (t_with, with_), (t_without, without) = out[True], out[False]
    rows[f"pixel check s, same pairs: with / without the {name}"] = (
        f"{t_with:.1f} / {t_without:.1f} ({t_with / max(t_without, 1e-9):.2f}x)")
    for kind, sel in (("planted", planted), ("unrelated", ~planted)):
        if sel.any():
            rows[f"match of {kind} candidate pairs, with / without the {name}: max / min / share >= "
                 f"{MATCH_THRESHOLD:g}"] = (f"{np.nanmax(with_[sel]):.3f} / {np.nanmin(with_[sel]):.3f} / "
                                            f"{np.mean(with_[sel] >= MATCH_THRESHOLD):.4f} against "
                                            f"{np.nanmax(without[sel]):.3f} / {np.nanmin(without[sel]):.3f} / "
                                            f"{np.mean(without[sel] >= MATCH_THRESHOLD):.4f}")
            if kind == "unrelated":
                rows[f"unrelated candidate pairs with match >= {MATCH_THRESHOLD:g}, with / without the {name}"] = (
                    f"{int((with_[sel] >= MATCH_THRESHOLD).sum())} / {int((without[sel] >= MATCH_THRESHOLD).sum())}")
                either = np.flatnonzero(sel & ((np.nan_to_num(with_) >= MATCH_THRESHOLD)
                                               | (np.nan_to_num(without) >= MATCH_THRESHOLD)))
                for k in either[:8]:
                    rows[f"unrelated pair verified with or without the {name}: "
                         f"{os.path.basename(paths[int(a[k])])} & {os.path.basename(paths[int(b[k])])}"] = (
                        f"{with_[k]:.3f} / {without[k]:.3f}")
    rows[f"candidate pairs the {name} raised"] = int((with_ > without).sum())
    rows[f"candidate pairs the {name} lowered"] = int((with_ < without).sum())


def _candidate_recall_by_kind(rows, res, planted, src, folder, seed=None) -> None:
    """Which planted copies the search finds (any item's candidates): by the share of the
    original the copy keeps, by its pose and (given the corpus ``seed``) by the original's panel
    kind; where the search loses the rest."""
    pairs = {(min(x, y), max(x, y)) for x, y in zip(res.pairs["a"].tolist(), res.pairs["b"].tolist())}
    found, area, posed = [], [], []
    for o, c, box, (mirror, turns) in planted:
        with Image.open(Path(folder) / o) as im:
            w, h = im.size
        x0, y0, x1, y1 = box
        area.append((x1 - x0) * (y1 - y0) / (w * h))
        posed.append(bool(mirror) or turns % 4 != 0)
        found.append((min(src[o], src[c]), max(src[o], src[c])) in pairs)
    found, area, posed = np.array(found), np.array(area), np.array(posed)
    for lo, hi in ((0.0, 0.5), (0.5, 0.7), (0.7, 1.01)):
        m = (area >= lo) & (area < hi)
        if m.any():
            rows[f"among the candidates: planted copies keeping {lo:.0%}-{min(hi, 1):.0%} of the original"] = (
                f"{found[m].mean():.3f} of {int(m.sum())}")
    for flag, name in ((False, "as it is"), (True, "mirrored or turned")):
        m = posed == flag
        if m.any():
            rows[f"among the candidates: planted copies {name}"] = f"{found[m].mean():.3f} of {int(m.sum())}"
    if seed is not None:       # write_corpus: original i is make_panel(seed * 1_000_003 + i), kind its first draw
        kinds = np.array([int(np.random.default_rng(seed * 1_000_003 + int(o[1:7])).integers(4)) for o, *_ in planted])
        for k, name in enumerate(PANEL_KINDS):
            m = kinds == k
            if m.any():
                rows[f"among the candidates: planted copies of {name}"] = f"{found[m].mean():.3f} of {int(m.sum())}"


PANEL_KINDS = ("blobs", "cells", "fibres", "texture")


def kind_check(model, per_kind: int = 12, seed: int = 88_000_000):
    """Per panel kind: the distance f (the model's pose minimum) between different panels of that
    kind and between a panel and its planted copy (``plant_copy``, JPEG left out). Tells whether
    a kind's panels are told apart at all."""
    by = {k: [] for k in range(len(PANEL_KINDS))}
    i = 0
    while min(len(v) for v in by.values()) < per_kind:
        img, k = panel_and_kind(seed + i, (200, 200))
        if len(by[k]) < per_kind:
            by[k].append(img)
        i += 1
    rows = []
    for k, ims in by.items():
        m = model.pairwise(ims)
        neg = m[np.triu_indices(len(ims), 1)]
        half = len(ims) // 2
        pos = np.asarray(model.distance(ims[:half], [plant_copy(im, np.random.default_rng(j))[0]
                                                     for j, im in enumerate(ims[:half])]))
        rows.append((PANEL_KINDS[k], float(np.median(neg)), float((neg <= 1).mean()), float(np.median(pos)),
                     float(pos.max())))
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model file (default: the bundled model)")
    p.add_argument("--n", type=int, nargs="*", default=[1000, 10000], help="corpus sizes (none: skip the corpora)")
    p.add_argument("--kinds", type=int, default=0, metavar="N",
                   help="also print, per panel kind, f between N different panels and of N/2 planted copies")
    p.add_argument("--k", type=int, nargs="+", default=[1, 10])
    p.add_argument("--poses", default="dihedral+invert")
    p.add_argument("--pose-embedding", nargs="+", choices=("basis", "all"), default=["basis"],
                   help="screen each corpus once per value (same corpus, same run: a fair ratio)")
    p.add_argument("--index", choices=("auto", "flat", "ivf"), default="auto")
    p.add_argument("--compile", action="store_true", help="screen with compile=True (torch.compile)")
    p.add_argument("--verify-top", type=int, default=0, metavar="L",
                   help="keypoint-verify the screen's L best pairs (as localize=L does) and report how many "
                        "planted and unrelated pairs were verified, and the R-precision once verified pairs lead")
    p.add_argument("--crops", choices=("pixels", "features"), default="pixels",
                   help="how the crop windows are embedded (screen's crops=...; default pixels)")
    p.add_argument("--metric", choices=("l1", "l2"), default="l1",
                   help="the screen's neighbour search metric (default l1, the screen's default)")
    p.add_argument("--no-crops", action="store_true",
                   help="screen without crop windows (the fast whole-image search); with them (the default) "
                        "every k also reports the recall of the whole-image search on the same store")
    p.add_argument("--no-whiten", action="store_true",
                   help="screen with whiten=False (plain f search); by default the whitened search is "
                        "compared with the plain one in the same run")
    p.add_argument("--no-hub-correction", action="store_true",
                   help="screen with hub_correction=False (neighbours by plain distance); by default the "
                        "index's recall with the correction is compared with it off in the same run")
    p.add_argument("--ivf-probes", type=int, nargs="*", default=[], metavar="P",
                   help="also search each store with the IVF index probing P cells (each P given, at the "
                        "default number of cells); print recall, the share of the main index's candidate pairs "
                        "found, and seconds")
    p.add_argument("--ivf-check", action="store_true",
                   help="also search each store with the IVF index and print its recall")
    p.add_argument("--dup-fraction", type=float, default=0.05)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--localize", type=int, default=100, help="planted pairs to localise per corpus")
    p.add_argument("--without-rotations", action="store_true",
                   help="check the screen's candidate pairs again with and without the pixel check's rotation "
                        "stage, timed in the same run (one more check of every pair, twice)")
    p.add_argument("--overlap", action="store_true",
                   help="screen with the pixel check's overlap stage (overlap=True; off by default)")
    p.add_argument("--without-overlap", action="store_true",
                   help="check the screen's candidate pairs again with and without the pixel check's overlap "
                        "stage, timed in the same run")
    p.add_argument("--without-line-rule", action="store_true",
                   help="check the screen's candidate pairs again with and without the pixel check's line rule "
                        "(structure=False), timed in the same run, and list the unrelated pairs either verifies")
    p.add_argument("--without-discount", action="store_true",
                   help="check the screen's candidate pairs again with and without the pixel check's small-template "
                        "discount (template_full_area=None), timed in the same run, and list the unrelated pairs "
                        "either verifies")
    p.add_argument("--overlap-views", action="store_true",
                   help="plant overlapping views (two regions of one picture sharing 16-64 %% of each, neither "
                        "holding the other) instead of cropped copies (write_overlap_corpus)")
    p.add_argument("--search-k", type=int, default=0,
                   help="neighbours the screen searches per item (default: the largest --k); the recall in "
                        "the screen's order counts each item's best k of them")
    p.add_argument("--wider", type=int, default=None, metavar="W",
                   help="screen with wider=W: W neighbours more per item, kept where the pixel check's first "
                        "pass reaches FIRST_PASS_THRESHOLD (default: the screen's own, DEFAULT_WIDER with the "
                        "check; 0 turns it off)")
    p.add_argument("--texture", type=int, default=None, metavar="T",
                   help="screen with texture=T: each item's T nearest by texture orientation, kept where the "
                        "first pass reaches FIRST_PASS_THRESHOLD (default: the screen's own, DEFAULT_TEXTURE with "
                        "the check; 0 turns it off)")
    p.add_argument("--gate-nearest", choices=("off", "on", "both"), default="off",
                   help="screen with gate_nearest (the first pass decides which of each item's nearest pairs get "
                        "the full check); 'both': screen each corpus without and then with it, the second on the "
                        "first's store (its embedding restored, not redone), for a ratio in one run")
    p.add_argument("--corpus-seed", type=int, default=None, metavar="S",
                   help="generate the corpus from seed S (default: its size N, the benchmark's test corpus); "
                        "choose settings on other seeds (e.g. 20,000,600 for a calibration corpus)")
    p.add_argument("--no-verify", action="store_true", help="screen without the pixel check")
    p.add_argument("--no-exhaustive", dest="exhaustive", action="store_false")
    p.add_argument("--no-index-recall", dest="index_recall", action="store_false",
                   help="skip searching the store again at each --k (the index's own recall, with and without "
                        "whitening, crop windows and the hub correction): the screen's order is still measured")
    p.add_argument("--no-panels", dest="panels", action="store_false")
    p.add_argument("--workdir", default=None, help="folder for the generated corpora (created)")
    p.add_argument("--keep", default=None, metavar="DIR",
                   help="keep the generated corpus and the embedding store in DIR (created) and reuse them "
                        "on the next run: a run stopped during its screen goes on from the items it had "
                        "embedded (the screen's store resumes; 'items restored' says how many)")
    p.add_argument("--progress", action="store_true",
                   help="print a line per stage of the screen as it happens (seconds since the screen began)")
    p.add_argument("--default-malloc", action="store_true",
                   help="leave glibc's malloc as it is (by default the benchmark, like the siamforensic "
                        "command, calls core.devices.retain_freed_memory())")
    args = p.parse_args(argv)
    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)

    import torch

    from napari_siamforensic.screening import resolve_model

    from napari_siamforensic.core.devices import retain_freed_memory

    if args.threads:
        torch.set_num_threads(args.threads)
    retained = False if args.default_malloc else retain_freed_memory()
    model = resolve_model(args.model)
    print(f"{machine_line()}; freed memory retained (mallopt): {retained}")
    print(f"model: {args.model or 'bundled default'} ({model.identity()}), precision {model.precision}, "
          f"poses {args.poses}\n")
    if args.panels:
        r = panel_benchmark()
        print("| panel splitting | " + " | ".join(r) + " |")
        print("|---" * (len(r) + 1) + "|")
        print("| generated figures | " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r.values()) + " |\n")
    if args.kinds:
        print(f"| panel kind ({args.kinds} each) | median f, different panels | share of them with f <= 1 | "
              f"median f, planted copies | largest f, planted copies |")
        print("|---|---|---|---|---|")
        for name, neg, share, pos, top in kind_check(model, args.kinds):
            print(f"| {name} | {neg:.3f} | {share:.2f} | {pos:.3f} | {top:.3f} |")
        print(flush=True)
    if not args.n:
        return
    results = {}
    for n in args.n:
        for emb, rows in run_corpus(n, args, model).items():
            results[(n, emb)] = rows
    keys = list(dict.fromkeys(k for r in results.values() for k in r))
    print("\n| metric | " + " | ".join(f"N = {n:,} ({emb})" for n, emb in results) + " |")
    print("|---" * (len(results) + 1) + "|")
    for key in keys:
        vals = [results[n].get(key) for n in results]
        print(f"| {key} | " + " | ".join("" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))
                                         for v in vals) + " |")
    print(f"\nload average at end {os.getloadavg()}")


if __name__ == "__main__":
    main()
