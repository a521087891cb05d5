"""Apply a fitted :class:`~napari_siamforensic.core.segment.Segmenter` to many image files.

:func:`segment_files` is a generator of :class:`SegmentFileProgress` reports (one per input
file), so the CLI can wrap it in tqdm and a widget in a worker. Label images are written as
TIFF (``<stem>_labels.tif``) beside each input or into ``out_dir``; existing files are never
overwritten unless asked, and a file that cannot be read or segmented is reported and skipped.

Examples
--------
>>> from napari_siamforensic.core.segment import Segmenter          # doctest: +SKIP
>>> from napari_siamforensic.core.segment_batch import segment_files  # doctest: +SKIP
>>> seg = Segmenter.load("nuclei.seg")                                # doctest: +SKIP
>>> for report in segment_files(seg, ["plates/"], out_dir="masks"):   # doctest: +SKIP
...     print(report.done, report.total, report.source, report.output, report.error)
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import IMAGE_SUFFIXES

__all__ = ["SegmentFileProgress", "segment_files", "read_image_array", "output_path", "LABEL_SUFFIX"]

#: Appended to an input's stem to name its label image.
LABEL_SUFFIX = "_labels"


@dataclass(frozen=True)
class SegmentFileProgress:
    """One input file handled: ``done`` of ``total``; ``output`` the label file written (None
    when skipped); ``error`` why it was skipped (None on success); ``n_pixels`` per class value
    in ``counts`` (empty when skipped)."""

    done: int
    total: int
    source: Path
    output: Path | None
    error: str | None
    counts: dict


def read_image_array(path: str | os.PathLike) -> np.ndarray:
    """Read an image file keeping colour and stacks: TIFF via tifffile (every page), others via
    Pillow (gray stays 2D, colour becomes ``(H, W, 3|4)``). Raises ``ValueError`` when unreadable."""
    p = Path(path)
    try:
        if p.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            return np.asarray(tifffile.imread(str(p)))
        from PIL import Image

        with Image.open(p) as im:
            im.load()
            if im.mode in ("I", "I;16", "I;16B", "F"):
                return np.asarray(im.convert("F") if im.mode != "I;16" else im)
            if im.mode in ("RGB", "RGBA", "L"):
                return np.asarray(im)
            return np.asarray(im.convert("RGBA" if "A" in im.mode else "RGB"))
    except Exception as exc:
        raise ValueError(f"could not read {str(p)!r} as an image ({type(exc).__name__}: {exc})") from None


def output_path(source: Path, out_dir: str | os.PathLike | None) -> Path:
    """Where the label image of ``source`` goes: ``<out_dir or its folder>/<stem>_labels.tif``."""
    folder = Path(out_dir) if out_dir is not None else source.parent
    return folder / f"{source.stem}{LABEL_SUFFIX}.tif"


def _expand(paths) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not isinstance(paths, Sequence):
        paths = list(paths)
    files: list[Path] = []
    for item in paths:
        p = Path(item)
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                            and not f.stem.endswith(LABEL_SUFFIX))
        else:
            files.append(p)
    return files


def _label_dtype(classes: np.ndarray):
    top = int(classes.max()) if classes.size else 0
    for dt in (np.uint8, np.uint16, np.uint32):
        if top <= np.iinfo(dt).max:
            return dt
    return np.int64


def segment_files(segmenter, paths, out_dir: str | os.PathLike | None = None, *,
                  overwrite: bool = False) -> Iterator[SegmentFileProgress]:
    """Segment image files with a fitted segmenter, one report per file.

    Parameters
    ----------
    segmenter : Segmenter
        Fitted (``fit`` or ``Segmenter.load``); its ``channel_axis`` applies to every file.
    paths : path or sequence of paths
        Image files and folders (searched recursively for ``.png .jpg .tif ...``; files that
        already end in ``_labels`` are our outputs and skipped).
    out_dir : path or None
        Folder for the label images (created); None writes each beside its input.
    overwrite : bool
        Replace existing label files; by default such inputs are skipped and reported.

    Yields
    ------
    SegmentFileProgress
    """
    import tifffile

    segmenter._check_fitted()
    files = _expand(paths)
    if not files:
        raise ValueError(f"no image files found in {paths!r} (accepted: {', '.join(IMAGE_SUFFIXES)})")
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    dtype = _label_dtype(np.asarray(segmenter.classes_))
    for i, src in enumerate(files, start=1):
        out = output_path(src, out_dir)
        if out.exists() and not overwrite:
            yield SegmentFileProgress(i, len(files), src, None, f"{str(out)!r} exists (pass overwrite=True)", {})
            continue
        try:
            if not src.is_file():
                raise ValueError(f"no such file {str(src)!r}")
            labels = segmenter.predict(read_image_array(src)).astype(dtype)
        except (ValueError, TypeError) as exc:
            yield SegmentFileProgress(i, len(files), src, None, str(exc), {})
            continue
        tmp = out.with_name(out.name + ".tmp")
        tifffile.imwrite(str(tmp), labels, compression="zlib")
        os.replace(tmp, out)
        values, counts = np.unique(labels, return_counts=True)
        yield SegmentFileProgress(i, len(files), src, out, None,
                                  {int(v): int(c) for v, c in zip(values, counts)})
