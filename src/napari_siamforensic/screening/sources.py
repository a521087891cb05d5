"""Sources as they come (files, folders, PDFs, arrays) -> screenable items with provenance.

Every item keeps where it came from: the ``source`` (file path, or ``"array[i]"``), the
``page`` (TIFF page / PDF page, 0-based; None for single images), the ``object`` (which
embedded image of a PDF page, or -1 for the rendered page) and the ``panel`` box
``(x0, y0, x1, y1)`` in pixels of that page's image (None for a whole image). From that
provenance an item can be read again later (:func:`load_item_image`), so a screen never has
to hold all images in memory.

Bad input never raises here: a corrupt file, an encrypted PDF, an unreadable folder or an
image smaller than the minimum becomes a :class:`Skipped` record with the reason.

PDFs are read with pypdfium2 (Google's PDFium, BSD/Apache licensed, wheels for every
platform, no system dependency, actively maintained): it both extracts the embedded image
objects at their native resolution and renders pages, which covers figures pasted as
bitmaps and figures drawn as vector graphics or scanned pages.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._validation import MIN_SIDE
from ..core.data import IMAGE_SUFFIXES
from .panels import split_panels

PDF_SUFFIXES = (".pdf",)
PDF_PAGE_MODES = ("auto", "always", "never")
#: Panels cut from a figure smaller than this (either side, px) are skipped: they are labels,
#: letters and fragments, not images (the model itself accepts 16 px and up).
MIN_PANEL_SIDE = 32


@dataclass(frozen=True)
class ItemRef:
    """Where an item comes from; enough to read it again.

    ``source``: file path or ``"array[i]"``; ``page``: 0-based page/plane or None;
    ``object``: index of the embedded image on a PDF page, -1 for the rendered page, None
    otherwise; ``panel``: ``(x0, y0, x1, y1)`` in pixels of the page image, or None;
    ``document``: what "within a document" means (the file, or the array).
    """

    source: str
    page: int | None = None
    object: int | None = None
    panel: tuple[int, int, int, int] | None = None
    document: str = ""
    kind: str = "image"   # "image", "tiff-page", "pdf-image", "pdf-page", "array"


@dataclass
class Item:
    """One screenable image (2D float32 gray) with its provenance."""

    ref: ItemRef
    image: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class FileDone:
    """Marker: every item and skipped record of this file has been yielded."""

    source: str


@dataclass(frozen=True)
class Skipped:
    """Something that could not be screened, and why."""

    source: str
    reason: str
    page: int | None = None


def contains_the_other(a: ItemRef, b: ItemRef) -> bool:
    """True when one item is part of the other's pixels: a rendered PDF page (``object`` -1)
    and an embedded image (or a panel of one) of the same page of the same file. Such pairs
    match by construction and are dropped from a screen."""
    return a.source == b.source and a.page == b.page and {a.kind, b.kind} == {"pdf-page", "pdf-image"}


def _gray(arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        a = arr[..., :3].astype(np.float32)
        return 0.299 * a[..., 0] + 0.587 * a[..., 1] + 0.114 * a[..., 2]
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    return arr.astype(np.float32, copy=False)


def _planes(arr: np.ndarray) -> list[np.ndarray]:
    """Any TIFF series array -> list of 2D / RGB planes."""
    arr = np.asarray(arr)
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (3, 4)):
        return [arr]
    if arr.ndim >= 3:
        rgb = arr.shape[-1] in (3, 4)
        lead = arr.shape[:-3] if rgb else arr.shape[:-2]
        flat = arr.reshape((-1,) + arr.shape[len(lead):])
        return list(flat)
    return []


def _too_small(shape) -> bool:
    return shape[0] < MIN_SIDE or shape[1] < MIN_SIDE


# ---------------------------------------------------------------------------------- readers
def read_tiff_pages(path: Path, max_pages: int) -> Iterator[tuple[int, np.ndarray]]:
    """(page index, 2D float32 gray) for every plane of every series of a TIFF (16-bit kept)."""
    import tifffile

    with tifffile.TiffFile(str(path)) as tif:
        k = 0
        for series in tif.series:
            for plane in _planes(series.asarray()):
                if k >= max_pages:
                    return
                yield k, _gray(plane)
                k += 1


def read_pil(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
            return np.asarray(im.convert("F"), dtype=np.float32)
        return _gray(np.asarray(im.convert("RGB") if im.mode not in ("L", "RGB") else im))


def _open_pdf(path: Path):
    import pypdfium2 as pdfium

    return pdfium.PdfDocument(str(path))


def pdf_render_scale(dpi: float) -> float:
    return float(dpi) / 72.0


def _pdf_page_images(page, min_side: int) -> list[tuple[int, np.ndarray]]:
    import pypdfium2.raw as raw

    out = []
    for j, obj in enumerate(page.get_objects(filter=[raw.FPDF_PAGEOBJ_IMAGE], max_depth=3)):
        try:
            w, h = obj.get_px_size()
            if min(w, h) < min_side:
                continue
            arr = obj.get_bitmap(render=False).to_numpy()
        except Exception:   # an image object PDFium cannot decode: try the next one
            continue
        out.append((j, _gray(arr)))
    return out


def _pdf_render(page, dpi: float) -> np.ndarray:
    return _gray(page.render(scale=pdf_render_scale(dpi), grayscale=True).to_numpy())


def _describe(exc: BaseException) -> str:
    msg = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {msg}"


# ---------------------------------------------------------------------------------- the walk
@dataclass
class SourceOptions:
    """How sources are turned into items.

    split_panels : cut multi-panel figures into panels (boxes kept as provenance).
    pdf_pages : ``"auto"`` renders the PDF pages that have no embedded images (vector figures);
        ``"always"`` renders every page as well; ``"never"`` only extracts embedded images.
    pdf_dpi : resolution of rendered pages.
    max_pages : at most this many planes of one TIFF / pages of one PDF.
    min_panel_side : panels smaller than this are skipped (labels, letters).
    """

    split_panels: bool = True
    pdf_pages: str = "auto"
    pdf_dpi: float = 150.0
    max_pages: int = 1000
    min_panel_side: int = MIN_PANEL_SIDE

    def __post_init__(self):
        if self.pdf_pages not in PDF_PAGE_MODES:
            raise ValueError(f"`pdf_pages` must be one of {PDF_PAGE_MODES}, got {self.pdf_pages!r}")
        if not (10 <= float(self.pdf_dpi) <= 1200):
            raise ValueError(f"`pdf_dpi` out of bounds: expected within [10, 1200], got {self.pdf_dpi}")
        if int(self.max_pages) < 1:
            raise ValueError(f"`max_pages` must be >= 1, got {self.max_pages}")
        if int(self.min_panel_side) < MIN_SIDE:
            raise ValueError(f"`min_panel_side` must be >= {MIN_SIDE}, got {self.min_panel_side}")


def _emit(image: np.ndarray, base: ItemRef, opts: SourceOptions) -> Iterator[Item | Skipped]:
    """One page image -> panels (or the whole image) as items; tiny ones as skipped."""
    where = base.source + (f" page {base.page}" if base.page is not None else "")
    if image.ndim != 2 or _too_small(image.shape):
        yield Skipped(base.source, f"image is {image.shape[0]} x {image.shape[1]} px, smaller than the "
                                   f"{MIN_SIDE} x {MIN_SIDE} px minimum", base.page)
        return
    if not np.isfinite(image).all():
        yield Skipped(base.source, "image contains NaN or infinite values", base.page)
        return
    if float(image.max()) - float(image.min()) <= 0:
        yield Skipped(base.source, "image is blank (one constant value)", base.page)
        return
    boxes = split_panels(image) if opts.split_panels else []
    if len(boxes) <= 1 or all(min(x1 - x0, y1 - y0) < opts.min_panel_side for x0, y0, x1, y1 in boxes):
        yield Item(base, image)     # a figure of small panels only is screened whole, not lost
        return
    for box in boxes:
        x0, y0, x1, y1 = box
        w, h = x1 - x0, y1 - y0
        if min(w, h) < opts.min_panel_side:
            yield Skipped(base.source, f"panel {box} of {where} is {w} x {h} px, smaller than the "
                                       f"{opts.min_panel_side} px panel minimum", base.page)
            continue
        ref = ItemRef(base.source, base.page, base.object, tuple(int(v) for v in box), base.document, base.kind)
        yield Item(ref, np.ascontiguousarray(image[y0:y1, x0:x1]))


def iter_file(path: Path, opts: SourceOptions, document: str | None = None) -> Iterator[Item | Skipped]:
    """Items of one file (image, multi-page TIFF or PDF); failures become Skipped records."""
    src = str(path)
    doc = document if document is not None else src
    suffix = path.suffix.lower()
    try:
        if suffix in PDF_SUFFIXES:
            yield from _iter_pdf(path, opts, doc)
            return
        if suffix in (".tif", ".tiff"):
            any_page = False
            for k, plane in read_tiff_pages(path, opts.max_pages):
                any_page = True
                yield from _emit(plane, ItemRef(src, k, None, None, doc, "tiff-page"), opts)
            if not any_page:
                yield Skipped(src, "could not read the file (no readable image planes in the TIFF)")
            return
        yield from _emit(read_pil(path), ItemRef(src, None, None, None, doc, "image"), opts)
    except Exception as exc:   # corrupt / unsupported file: report it, never stop the screen
        yield Skipped(src, f"could not read the file ({_describe(exc)})")


def _iter_pdf(path: Path, opts: SourceOptions, doc: str) -> Iterator[Item | Skipped]:
    src = str(path)
    try:
        pdf = _open_pdf(path)
    except ImportError:
        yield Skipped(src, "reading PDFs needs pypdfium2, which is not installed: "
                           "pip install 'napari-siamforensic[screening]' (or pip install pypdfium2)")
        return
    except Exception as exc:
        text = str(exc)
        if "password" in text.lower():
            yield Skipped(src, "encrypted PDF (a password is required to open it)")
        else:
            yield Skipped(src, f"could not open the PDF ({_describe(exc)})")
        return
    try:
        n = len(pdf)
        if n == 0:
            yield Skipped(src, "PDF has no pages")
        for k in range(min(n, opts.max_pages)):
            try:
                page = pdf[k]
                found = _pdf_page_images(page, MIN_SIDE)
                for j, arr in found:
                    yield from _emit(arr, ItemRef(src, k, j, None, doc, "pdf-image"), opts)
                if opts.pdf_pages == "always" or (opts.pdf_pages == "auto" and not found):
                    yield from _emit(_pdf_render(page, opts.pdf_dpi), ItemRef(src, k, -1, None, doc, "pdf-page"), opts)
            except Exception as exc:
                yield Skipped(src, f"could not read page {k} ({_describe(exc)})", k)
        if n > opts.max_pages:
            yield Skipped(src, f"only the first {opts.max_pages} of {n} pages were screened (max_pages)")
    finally:
        pdf.close()


def _walk(folder: Path, skipped: list[Skipped]) -> list[Path]:
    """Screenable files under ``folder`` (recursive, sorted); unreadable folders -> skipped."""
    def onerror(err: OSError):
        skipped.append(Skipped(str(err.filename or folder), f"could not read the folder ({_describe(err)})"))

    found = []
    suffixes = IMAGE_SUFFIXES + PDF_SUFFIXES
    for root, dirs, files in os.walk(folder, onerror=onerror):
        dirs.sort()
        for name in files:
            if name.lower().endswith(suffixes) and not name.startswith("."):
                found.append(Path(root) / name)
    return sorted(found)


def iter_sources(sources, options: SourceOptions | None = None, *, skip_files=frozenset(),
                 markers: bool = False) -> Iterator[Item | Skipped | FileDone]:
    """Stream items (and skipped records) from files, folders, PDFs and arrays, in a fixed order.

    Parameters
    ----------
    sources : path, array, or a sequence of them
        Image files (PNG, JPEG, TIFF incl. multi-page and 16-bit, BMP, GIF, WebP), PDFs,
        folders (searched recursively for those), or numpy arrays (2D gray, RGB(A), or a
        ``(Z, H, W)`` stack).
    options : SourceOptions, optional
    skip_files : set of str
        Paths of files not to read (already screened and stored: resuming).
    markers : bool
        Also yield a :class:`FileDone` after each file.

    Yields
    ------
    Item, Skipped (or FileDone)
    """
    opts = options or SourceOptions()
    for entry in expand_sources(sources):
        if isinstance(entry, Skipped):
            yield entry
        elif isinstance(entry, Path):
            if str(entry) not in skip_files:
                yield from iter_file(entry, opts)
                if markers:
                    yield FileDone(str(entry))
        else:
            yield from _iter_array(*entry, opts)


def expand_sources(sources) -> Iterator[Path | Skipped | tuple[int, object]]:
    """The screening order: each file (folders walked recursively, sorted) as a Path, each
    array as ``(index, array)``, and Skipped records for missing paths and unreadable folders."""
    if isinstance(sources, (str, os.PathLike, np.ndarray)) or not isinstance(sources, Iterable):
        sources = [sources]
    for i, src in enumerate(sources):
        if isinstance(src, (str, os.PathLike)):
            p = Path(src)
            if p.is_dir():
                problems: list[Skipped] = []
                files = _walk(p, problems)
                yield from problems
                if not files and not problems:
                    yield Skipped(str(p), "folder holds no image or PDF files")
                yield from files
            elif p.is_file():
                yield p
            elif p.exists():
                yield Skipped(str(p), "neither a file nor a folder")
            else:
                yield Skipped(str(p), "no such file or folder")
        else:
            yield (i, src)


def _iter_array(i: int, src, opts: SourceOptions) -> Iterator[Item | Skipped]:
    name = f"array[{i}]"
    try:
        arr = np.asarray(src)
        if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
            raise ValueError(f"dtype {arr.dtype} is not a number type")
        planes = [arr] if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (1, 3, 4)) else None
        if planes is None and arr.ndim == 3:
            planes = list(arr)
        if planes is None:
            raise ValueError(f"shape {arr.shape} is not (H, W), (H, W, 1|3|4) or (Z, H, W)")
    except Exception as exc:
        yield Skipped(name, f"not an image array ({_describe(exc)})")
        return
    stack = len(planes) > 1
    for k, plane in enumerate(planes):
        yield from _emit(_gray(plane), ItemRef(name, k if stack else None, None, None, name, "array"), opts)


def load_item_image(ref: ItemRef, arrays: dict[str, np.ndarray] | None = None, *, pdf_dpi: float = 150.0) -> np.ndarray:
    """Read an item's image again from its provenance (2D float32). Raises ``ValueError``."""
    try:
        if ref.kind == "array":
            if not arrays or ref.source not in arrays:
                raise ValueError("the array is not available any more")
            arr = np.asarray(arrays[ref.source])
            img = _gray(arr[ref.page] if ref.page is not None else arr)
        elif ref.kind == "tiff-page":
            img = next(plane for k, plane in read_tiff_pages(Path(ref.source), ref.page + 1) if k == ref.page)
        elif ref.kind in ("pdf-image", "pdf-page"):
            pdf = _open_pdf(Path(ref.source))
            try:
                page = pdf[ref.page]
                if ref.kind == "pdf-page":
                    img = _pdf_render(page, pdf_dpi)
                else:
                    img = dict(_pdf_page_images(page, MIN_SIDE))[ref.object]
            finally:
                pdf.close()
        else:
            img = read_pil(Path(ref.source))
    except ValueError:
        raise
    except Exception as exc:
        raise ValueError(f"could not read {ref.source!r} again ({_describe(exc)})") from None
    if ref.panel is not None:
        x0, y0, x1, y1 = ref.panel
        img = img[y0:y1, x0:x1]
    return np.ascontiguousarray(img, dtype=np.float32)


__all__ = ["ItemRef", "Item", "Skipped", "FileDone", "SourceOptions", "iter_sources", "expand_sources", "iter_file", "load_item_image",
           "contains_the_other",
           "MIN_PANEL_SIDE", "PDF_PAGE_MODES"]
