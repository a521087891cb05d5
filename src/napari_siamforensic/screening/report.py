"""The result of a screen: tables, and a report a person reads (HTML), plus CSV / JSON.

``ScreenResult.items``   id, source, page, panel (x0, y0, x1, y1) or None, object, kind, document
``ScreenResult.pairs``   a, b (item ids), distance, f, crop_distance, match, probability,
                         transform, box_a, box_b, inliers, method; best evidence first: pairs
                         verified by their pixels (match >= 0.6, best match first) or by
                         keypoints (method "orb-ransac"), then the rest by the smaller of f
                         and crop_distance, with match fused in as for distance. f is the
                         whole images' f (pose minimum),
                         crop_distance a crop window's (NaN without crop windows), match the
                         pixel check's (NaN without it, and where it could compare nothing: a
                         flat picture, or one over about 10 times as wide as high); distance is
                         f with match fused in as ``ForensicModel.distance`` does
                         (``ForensicModel.fuse``; f itself where match is NaN and for a model
                         without ``pixel_check``), and probability is calibrated on it
``ScreenResult.skipped`` source, page, reason

The HTML page is one self-contained file (thumbnails as base64 PNG with the matched regions
drawn, provenance, score, transform) rendered from the single template ``report.html``.
"""
from __future__ import annotations

import base64
import html
import io
import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from string import Template

import numpy as np
import pandas as pd

ITEM_COLUMNS = ["id", "source", "page", "panel", "object", "kind", "document"]
PAIR_COLUMNS = ["a", "b", "distance", "f", "crop_distance", "match", "probability", "transform", "box_a", "box_b", "inliers", "method"]
SKIPPED_COLUMNS = ["source", "page", "reason"]
THUMB_SIDE = 220
BOX_COLOURS = ("#e8112d", "#1f77ff")


def empty_frame(columns) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})


def thumbnail(image: np.ndarray, side: int = THUMB_SIDE) -> tuple[np.ndarray, float]:
    """2D float image -> uint8 thumbnail with its longest side <= ``side``, and the scale used."""
    from PIL import Image

    from ..core.data import normalise_intensity

    g = (normalise_intensity(np.asarray(image, np.float32)) * 255).astype(np.uint8)
    s = min(1.0, side / max(g.shape))
    if s < 1.0:
        im = Image.fromarray(g).resize((max(1, round(g.shape[1] * s)), max(1, round(g.shape[0] * s))),
                                       Image.Resampling.LANCZOS)
        g = np.asarray(im)
    return g, s


def _png_data_uri(thumb: np.ndarray, scale: float, box, colour: str) -> str:
    from PIL import Image, ImageDraw

    im = Image.fromarray(thumb).convert("RGB")
    if box is not None:
        x0, y0, x1, y1 = (v * scale for v in box)
        ImageDraw.Draw(im).rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=colour, width=2)
    buf = io.BytesIO()
    im.save(buf, "PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _provenance(row) -> str:
    parts = [html.escape(str(row["source"]))]
    if row.get("page") is not None and not (isinstance(row["page"], float) and np.isnan(row["page"])):
        parts.append(f"page {int(row['page'])}")
    obj = row.get("object")
    if obj is not None and not (isinstance(obj, float) and np.isnan(obj)):
        parts.append("rendered page" if int(obj) < 0 else f"image {int(obj)}")
    if row.get("panel") is not None:
        parts.append(f"panel {tuple(int(v) for v in row['panel'])}")
    return ", ".join(parts)


def _jsonable(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return None if np.isnan(v) else float(v)
    if isinstance(v, float) and np.isnan(v):
        return None
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v


@dataclass
class ScreenResult:
    """Items, candidate pairs (best evidence first) and skipped inputs of a screen.

    ``thumbnails`` maps item id -> ``(uint8 thumbnail, scale)`` for the items of the pairs
    that were localised (what the HTML report shows). ``info``: model, poses, timings.
    """

    items: pd.DataFrame
    pairs: pd.DataFrame
    skipped: pd.DataFrame
    info: dict = field(default_factory=dict)
    thumbnails: dict = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        return (f"ScreenResult({len(self.items)} items, {len(self.pairs)} pairs, "
                f"{len(self.skipped)} skipped)")

    # ------------------------------------------------------------------ tables
    def pairs_with_provenance(self) -> pd.DataFrame:
        """``pairs`` joined with both items' source, page and panel (``*_a``, ``*_b``)."""
        prov = self.items.set_index("id")[["source", "page", "panel"]]
        out = self.pairs.copy()
        for side in ("a", "b"):
            p = prov.reindex(out[side].to_numpy())
            for c in ("source", "page", "panel"):
                out[f"{c}_{side}"] = p[c].to_numpy()
        return out

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write the pairs with provenance as CSV (boxes as ``x0 y0 x1 y1``)."""
        df = self.pairs_with_provenance()
        for c in ("box_a", "box_b", "panel_a", "panel_b"):
            df[c] = df[c].map(lambda b: "" if b is None or (isinstance(b, float) and np.isnan(b))
                              else " ".join(str(int(v)) for v in b))
        path = Path(path)
        df.to_csv(path, index=False)
        return path

    def to_json(self, path: str | os.PathLike) -> Path:
        """Write items, pairs, skipped and info as one JSON document."""
        def records(df):
            return [{k: _jsonable(v) for k, v in r.items()} for r in df.to_dict("records")]

        doc = {"info": self.info, "items": records(self.items), "pairs": records(self.pairs),
               "skipped": records(self.skipped)}
        path = Path(path)
        path.write_text(json.dumps(doc, indent=1, default=str))
        return path

    def to_html(self, path: str | os.PathLike, *, max_pairs: int = 100, title: str = "Duplicate screen") -> Path:
        """Write a self-contained HTML report of the best ``max_pairs`` pairs."""
        items = self.items.set_index("id")
        rows = []
        for rank, pair in enumerate(self.pairs.head(max_pairs).to_dict("records"), 1):
            cells = []
            for side, colour in zip(("a", "b"), BOX_COLOURS):
                item_id = int(pair[side])
                meta = items.loc[item_id].to_dict()
                thumb = self.thumbnails.get(item_id)
                if thumb is not None:
                    img = (f'<img alt="item {item_id}" src="{_png_data_uri(thumb[0], thumb[1], pair[f"box_{side}"], colour)}">')
                else:
                    img = '<div class="nothumb">no thumbnail</div>'
                cells.append(f'<figure>{img}<figcaption><b>#{item_id}</b> {_provenance(meta)}'
                             f'<br>region {html.escape(str(pair[f"box_{side}"]))}</figcaption></figure>')
            verdict = "duplicate" if pair["distance"] <= 1.0 else "different"
            whole_f = pair.get("f", np.nan)
            crop_txt = "" if whole_f is None or not np.isfinite(whole_f) else f" &middot; f = {whole_f:.3f}"
            crop_f = pair.get("crop_distance", np.nan)
            crop_txt += "" if crop_f is None or not np.isfinite(crop_f) else f" &middot; crop f = {crop_f:.3f}"
            match = pair.get("match", np.nan)
            crop_txt += "" if match is None or not np.isfinite(match) else f" &middot; match = {match:.2f}"
            rows.append(
                f'<section class="pair {verdict}" data-a="{int(pair["a"])}" data-b="{int(pair["b"])}">'
                f'<h2>{rank}. distance = {pair["distance"]:.3f}{crop_txt} &middot; p(same) = {pair["probability"]:.3f} '
                f'&middot; <span class="verdict">{verdict}</span></h2>'
                f'<p class="transform">transform a &rarr; b: {html.escape(str(pair["transform"]))} '
                f'({html.escape(str(pair.get("method", "")))}, {pair.get("inliers", 0)} inliers)</p>'
                f'<div class="sides">{cells[0]}{cells[1]}</div></section>')
        skipped = "".join(
            f"<tr><td>{html.escape(str(r['source']))}</td><td>{'' if r['page'] is None or (isinstance(r['page'], float) and np.isnan(r['page'])) else int(r['page'])}</td>"
            f"<td>{html.escape(str(r['reason']))}</td></tr>" for r in self.skipped.to_dict("records"))
        info = html.escape(", ".join(f"{k}: {v}" for k, v in self.info.items() if not isinstance(v, dict)))
        template = Template(resources.files(__package__).joinpath("report.html").read_text(encoding="utf-8"))
        page = template.substitute(
            title=html.escape(title), n_items=len(self.items), n_pairs=len(self.pairs),
            n_shown=min(max_pairs, len(self.pairs)), n_skipped=len(self.skipped), info=info,
            pairs="\n".join(rows) or "<p>No candidate pairs.</p>",
            skipped=skipped or '<tr><td colspan="3">nothing skipped</td></tr>')
        path = Path(path)
        path.write_text(page, encoding="utf-8")
        return path


__all__ = ["ScreenResult", "ITEM_COLUMNS", "PAIR_COLUMNS", "SKIPPED_COLUMNS", "thumbnail", "empty_frame"]
