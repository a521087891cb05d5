"""Duplicates widget: score layers (and files, folders, PDFs) against each other.

A thin adapter over the screening API: ``napari_siamforensic.screening.iter_screen`` finds and
localises the candidate pairs (with their transform and matched boxes); for images that are
layers the full score matrix comes from ``ForensicModel.pairwise``. The widget shows the
matrix as a heatmap (item names on both axes) and the pairs as a sortable table; clicking
either shows the two images side by side with the matched regions as Shapes layers.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import Qt
from qtpy.QtGui import QBrush, QColor
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ..core.scoring import POSES
from ..screening.verify import MATCH_THRESHOLD
from ._jobs import JobRunner, stop_on_destroy
from ._layers import LayerChecklist, layer_planes
from ._models import ModelBox, registry

PAIR_PREFIX = "pair "
BOX_COLOURS = ("#e8112d", "#1f77ff")
MATRIX_LIMIT = 400        # the full matrix (pairwise) for at most this many layer images
MAX_CANDIDATES = 50
GAP_PX = 16
PENALTY_FROM_MODEL = -0.05   # the pose-penalty box's lowest value reads "the model's own"


def _missing(value) -> bool:
    """None, NaN or pandas' NA (how a DataFrame cell says "no value")."""
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):     # tuples and such are values
        return False


def _heat_colour(d: float) -> QColor:
    """Distance -> colour: red (<= 1, "same") through yellow to dark blue (>= 3)."""
    if d is None or not math.isfinite(d):
        return QColor(60, 60, 60)
    t = min(max((d - 0.5) / 2.5, 0.0), 1.0)
    stops = [(0.0, (220, 30, 40)), (0.2, (250, 200, 40)), (0.5, (60, 150, 200)), (1.0, (20, 30, 80))]
    for (t0, c0), (t1, c1) in zip(stops, stops[1:]):
        if t <= t1:
            u = (t - t0) / (t1 - t0)
            return QColor(*(int(a + (b - a) * u) for a, b in zip(c0, c1)))
    return QColor(*stops[-1][1])


class _NumberItem(QTableWidgetItem):
    """A table cell that sorts by its number."""

    def __init__(self, value: float, text: str):
        super().__init__(text)
        self.value = value

    def __lt__(self, other):
        if isinstance(other, _NumberItem):
            return self.value < other.value
        return super().__lt__(other)


class DuplicatesWidget(QWidget):
    """Dock widget: score matrix, ranked pairs, side-by-side view, HTML/CSV export."""

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.runner = JobRunner("Duplicate scoring")
        self.result = None                 # the ScreenResult of the last run
        self.matrix: np.ndarray | None = None   # (N, N) f between items (NaN where unknown)
        self.names: list[str] = []         # item names, in item-id order
        self._arrays: dict[str, np.ndarray] = {}   # "array[i]" -> the plane given to the screen
        self._hidden: list[str] = []       # names of the layers this widget hid to show a pair

        layout = QVBoxLayout(self)
        layout.addWidget(ModelBox())
        layout.addWidget(QLabel("Images (layers; stacks give one image per plane):"))
        self.layers = LayerChecklist(self.viewer)
        layout.addWidget(self.layers)
        form = QFormLayout()
        row = QHBoxLayout()
        self.paths = QLineEdit()
        self.paths.setPlaceholderText("and/or files, folders, PDFs (separate with ;)")
        browse = QPushButton("…")
        browse.setMaximumWidth(30)
        browse.clicked.connect(self._browse)
        row.addWidget(self.paths)
        row.addWidget(browse)
        form.addRow("files", row)
        self.poses = QComboBox()
        self.poses.addItems(list(POSES))
        self.poses.setCurrentText("dihedral+invert")
        self.poses.setToolTip("f is the minimum over these poses of the second image: mirrored, "
                              "rotated or inverted copies are found through them")
        form.addRow("poses", self.poses)
        self.penalty = QDoubleSpinBox()
        self.penalty.setRange(PENALTY_FROM_MODEL, 10.0)
        self.penalty.setSingleStep(0.05)
        self.penalty.setDecimals(2)
        self.penalty.setSpecialValueText("the model's own")
        self.penalty.setValue(PENALTY_FROM_MODEL)
        self.penalty.setToolTip("added to f in every pose but an image's own before the minimum over poses "
                                "(re-used images mostly keep their pose; 0 is the plain minimum). "
                                "Default: the value stored with the model (0.2 for the bundled one)")
        form.addRow("pose penalty", self.penalty)
        self.split = QCheckBox("cut multi-panel figures into panels")
        form.addRow(self.split)
        self.overlap = QCheckBox("find regions two images share (overlapping views)")
        self.overlap.setToolTip("the pixel check also compares two images over a region they share when neither "
                                "holds the other (overlapping fields of view, at one pixel scale); such pairs say "
                                "'shared region'. About 1.4x the checking time; repeated structure (a gel's lanes) "
                                "can match a different region. The heatmap does not use it")
        form.addRow(self.overlap)
        from ..screening import DEFAULT_TEXTURE, DEFAULT_WIDER

        self.wider = QSpinBox()
        self.wider.setRange(0, 1000)
        self.wider.setSingleStep(10)
        self.wider.setValue(DEFAULT_WIDER)
        self.wider.setSpecialValueText("no")
        self.wider.setToolTip(f"with files and folders (more than {MAX_CANDIDATES + 1} images): also look this many "
                              f"neighbours further per image than the {MAX_CANDIDATES} nearest, and check in full only "
                              "the pairs a quick pixel comparison (the check's 32 px stage) finds alike; finds copies "
                              "the network ranks far away, at under a sixth of the full check's time per extra "
                              "pair. 'no' (0) searches the nearest only")
        form.addRow("search further", self.wider)
        self.texture = QSpinBox()
        self.texture.setRange(0, 1000)
        self.texture.setSingleStep(10)
        self.texture.setValue(DEFAULT_TEXTURE)
        self.texture.setSpecialValueText("no")
        self.texture.setToolTip("with files and folders: also pair each image with this many others of the nearest "
                                "texture orientation and strength, and check in full those the quick pixel "
                                "comparison finds alike; finds copies of fibres and other oriented textures, which "
                                "the network ranks among many images of their kind. Reads each image. "
                                "'no' (0) turns it off")
        form.addRow("search by texture", self.texture)
        self.gate = QCheckBox("faster check: quick pixel comparison first for the nearest too")
        self.gate.setToolTip("with files and folders: check in full only those of each image's nearest pairs that "
                             "the quick pixel comparison (the check's 32 px stage) finds alike, as for the wider "
                             "search; the others stay listed, unchecked (no match), and count as farther apart. "
                             "Most nearest pairs in a large collection are not alike, and the full check takes "
                             "about 7x as long per pair")
        form.addRow(self.gate)
        self.fast_crops = QCheckBox("faster crop windows (finds fewer cut-out copies)")
        self.fast_crops.setToolTip("with files and folders: take each image's 9 crop windows from one pass of the "
                                   "network's conv blocks instead of embedding each window (crops='features'): "
                                   "about a third of the embedding time, but the windows are approximate and fewer "
                                   "copies cut from larger panels are found. A store keeps the choice it was built "
                                   "with")
        form.addRow(self.fast_crops)
        self.keep_memory = QCheckBox("faster embedding: keep freed memory (Linux)")
        self.keep_memory.setToolTip("ask the C library's allocator to keep the memory each batch frees instead of "
                                    "handing it back and faulting it in again (core.devices.retain_freed_memory): "
                                    "about half the CPU time of embedding on Linux with glibc, same results; in "
                                    "exchange napari's process keeps its peak memory. It applies to the whole "
                                    "napari session from the next Compute on and cannot be turned off again")
        form.addRow(self.keep_memory)
        self._show_memory_state()
        layout.addLayout(form)

        buttons = QHBoxLayout()
        self.compute_button = QPushButton("Compute")
        self.cancel_button = QPushButton("Cancel")
        self.compute_button.clicked.connect(self.compute)
        self.cancel_button.clicked.connect(self.runner.cancel)
        buttons.addWidget(self.compute_button)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)
        self.status = QLabel("distance ≤ 1 means “a manipulated copy” (the paper's decision)")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)

        self.tabs = QTabWidget()
        self.heatmap = QTableWidget()
        self.heatmap.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.heatmap.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.heatmap.cellClicked.connect(self._heatmap_clicked)
        self.pairs = QTableWidget(0, 7)
        self.pairs.setHorizontalHeaderLabels(["a", "b", "distance", "crop f", "match", "probability", "transform"])
        self.pairs.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.pairs.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.pairs.setSortingEnabled(True)
        self.pairs.horizontalHeader().setStretchLastSection(True)
        self.pairs.cellClicked.connect(self._pair_clicked)
        self.tabs.addTab(self.pairs, "Pairs")
        self.tabs.addTab(self.heatmap, "Heatmap")
        layout.addWidget(self.tabs, 1)

        export = QHBoxLayout()
        self.html_button = QPushButton("Export HTML…")
        self.csv_button = QPushButton("Export CSV…")
        self.restore_button = QPushButton("Show all layers")
        self.html_button.clicked.connect(lambda: self._ask_export("html"))
        self.csv_button.clicked.connect(lambda: self._ask_export("csv"))
        self.restore_button.clicked.connect(self.restore_layers)
        for b in (self.html_button, self.csv_button, self.restore_button):
            export.addWidget(b)
        layout.addLayout(export)

        self.runner.busy_changed.connect(self._busy_changed)
        self._busy_changed(False)
        stop_on_destroy(self, self.runner)

    # ------------------------------------------------------------------ compute
    def _show_memory_state(self) -> None:
        from ..core.devices import freed_memory_retained

        if freed_memory_retained():       # process-wide and for good: say so rather than offer a no-op
            self.keep_memory.setChecked(True)
            self.keep_memory.setEnabled(False)
            self.keep_memory.setText("faster embedding: freed memory is kept (this napari session)")

    def _apply_memory_choice(self) -> None:
        if not self.keep_memory.isChecked() or not self.keep_memory.isEnabled():
            return
        from ..core import devices

        if devices.retain_freed_memory():
            self._show_memory_state()
        else:
            self.keep_memory.setChecked(False)
            self.keep_memory.setEnabled(False)
            show_info("Duplicates: keeping freed memory needs Linux with glibc; embedding runs as before.")

    def _sources(self):
        planes: list[tuple[str, np.ndarray]] = []
        for layer in self.layers.selected():
            planes.extend(layer_planes(layer))
        paths = [p.strip() for p in self.paths.text().split(";") if p.strip()]
        if len(planes) + len(paths) == 0:
            raise ValueError("nothing to score: tick image layers or give files, folders or PDFs")
        if not paths and len(planes) < 2:
            raise ValueError("scoring needs at least two images: tick more layers (or a stack)")
        return planes, paths

    def compute(self) -> bool:
        """Screen the chosen images in a worker; fills the pairs table and the heatmap."""
        try:
            planes, paths = self._sources()
        except ValueError as exc:
            show_error(f"Duplicates: {exc}")
            return False
        from ..screening import SourceOptions, iter_screen

        self._apply_memory_choice()
        poses = self.poses.currentText()
        penalty = self.penalty.value()
        penalty = None if penalty <= PENALTY_FROM_MODEL + 1e-9 else float(penalty)
        options = SourceOptions(split_panels=self.split.isChecked())
        overlap = self.overlap.isChecked()
        wider = int(self.wider.value())
        texture = int(self.texture.value())
        # layers alone: every pair is checked, as in the heatmap (ForensicModel.pairwise) beside the table
        gate_nearest = self.gate.isChecked() and bool(paths)
        crops = ("features" if self.fast_crops.isChecked() else "pixels") if paths else False
        arrays = [arr for _, arr in planes]
        plane_names = [name for name, _ in planes]
        n_guess = len(arrays) + (1000 if paths else 0)
        candidates = max(1, min(MAX_CANDIDATES, n_guess - 1))

        # layers only: every pose embedded, so the pairs' f is the heatmap's (ForensicModel.pairwise);
        # with files (maybe thousands) the faster pose basis
        pose_embedding = "basis" if paths else "all"

        def factory():
            model = registry.get()
            if penalty is not None and model is not None:
                import copy

                model = copy.copy(model)        # the shared model keeps its own penalty
                model.pose_penalty = penalty
            result = None
            # crop windows (a copy cut from a larger panel) with files; layers alone are all
            # compared with each other anyway
            for report in iter_screen(arrays + paths, model, poses=poses, candidates=candidates,
                                      localize=MAX_CANDIDATES, options=options, pose_embedding=pose_embedding,
                                      crops=crops, overlap=overlap, wider=wider, texture=texture,
                                      gate_nearest=gate_nearest):
                if report.finished:
                    result = report.result
                else:
                    yield ("progress", report)
            matrix = None
            items = result.items
            from_arrays = [str(s).startswith("array[") for s in items["source"]]
            if len(items) and all(from_arrays) and len(items) <= MATRIX_LIMIT and not options.split_panels:
                idx = [int(str(s)[6:-1]) for s in items["source"]]
                # with the pixel check every pair costs a few ms: reported, and cancellable
                for report in model.iter_pairwise([arrays[i] for i in idx], poses=poses):
                    if report.matrix is None:
                        yield ("progress", report)
                    matrix = report.matrix
            yield ("result", result, matrix)

        self.status.setText("scoring…")
        self._plane_names = plane_names
        self._arrays = {f"array[{i}]": a for i, a in enumerate(arrays)}
        return self.runner.start(factory, on_yield=self._on_item, on_error=self._on_error,
                                 desc="Scoring duplicates")

    def _on_error(self, exc) -> None:
        self.status.setText(f"failed: {exc}")

    def _on_item(self, item) -> None:
        if item[0] == "progress":
            self.status.setText(item[1].message or item[1].stage)
            return
        _, result, matrix = item
        self.result = result
        self.names = [self._item_name(row) for row in result.items.itertuples()]
        n = len(self.names)
        if matrix is None:      # files too: the matrix holds the candidate pairs only
            matrix = np.full((n, n), np.nan, np.float32)
            np.fill_diagonal(matrix, 0.0)
            for a, b, d in zip(result.pairs["a"], result.pairs["b"], result.pairs["distance"]):
                matrix[a, b] = matrix[b, a] = d
        self.matrix = matrix
        self._fill_heatmap()
        self._fill_pairs()
        n_dup = int((result.pairs["distance"] <= 1.0).sum()) if len(result.pairs) else 0
        skipped = f", {len(result.skipped)} skipped" if len(result.skipped) else ""
        self.status.setText(f"{n} images, {len(result.pairs)} pairs scored, {n_dup} with distance ≤ 1{skipped}")
        if len(result.skipped):
            show_warning("Duplicates: skipped " + "; ".join(
                f"{r.source}: {r.reason}" for r in result.skipped.head(3).itertuples()))

    def _item_name(self, row) -> str:
        source = str(row.source)
        if source.startswith("array["):
            name = self._plane_names[int(source[6:-1])]
        else:
            name = Path(source).name
        if not _missing(row.page):
            name += f" p{int(row.page) + (0 if source.startswith('array[') else 1)}"
        if not _missing(row.panel):
            name += " panel ({}, {}, {}, {})".format(*row.panel)
        return name

    # ------------------------------------------------------------------ tables
    def _fill_heatmap(self) -> None:
        n = len(self.names)
        h = self.heatmap
        h.clear()
        h.setRowCount(n)
        h.setColumnCount(n)
        h.setHorizontalHeaderLabels(self.names)
        h.setVerticalHeaderLabels(self.names)
        for i in range(n):
            for j in range(n):
                d = float(self.matrix[i, j])
                cell = QTableWidgetItem("" if i == j else ("–" if not math.isfinite(d) else f"{d:.2f}"))
                cell.setBackground(QBrush(QColor(90, 90, 90) if i == j else _heat_colour(d)))
                cell.setForeground(QBrush(QColor("white")))
                cell.setTextAlignment(Qt.AlignCenter)
                cell.setToolTip(f"{self.names[i]} vs {self.names[j]}: distance = {d:.3f}")
                h.setItem(i, j, cell)

    def _fill_pairs(self) -> None:
        t = self.pairs
        t.setSortingEnabled(False)
        pairs = self.result.pairs
        t.setRowCount(len(pairs))
        for r, row in enumerate(pairs.itertuples()):
            a_item = QTableWidgetItem(self.names[row.a])
            a_item.setData(Qt.UserRole, (int(row.a), int(row.b), r))
            t.setItem(r, 0, a_item)
            t.setItem(r, 1, QTableWidgetItem(self.names[row.b]))
            t.setItem(r, 2, _NumberItem(float(row.distance), f"{row.distance:.3f}"))
            crop = float(row.crop_distance)
            t.setItem(r, 3, _NumberItem(crop, f"{crop:.3f}") if crop == crop else _NumberItem(float("inf"), "-"))
            match = float(row.match)
            t.setItem(r, 4, _NumberItem(match, f"{match:.2f}") if match == match else _NumberItem(float("-inf"), "-"))
            t.setItem(r, 5, _NumberItem(float(row.probability), f"{row.probability:.3f}"))
            t.setItem(r, 6, QTableWidgetItem(str(row.transform)))
            if row.distance <= 1.0 or match >= MATCH_THRESHOLD:
                for c in range(7):
                    t.item(r, c).setBackground(QBrush(QColor(120, 30, 40)))
        t.setSortingEnabled(True)
        t.resizeColumnsToContents()

    def _pair_clicked(self, row: int, _col: int = 0) -> None:
        a, b, r = self.pairs.item(row, 0).data(Qt.UserRole)
        self.show_pair(a, b)

    def _heatmap_clicked(self, i: int, j: int) -> None:
        if i != j:
            self.show_pair(i, j)

    # ------------------------------------------------------------------ side by side
    def _pair_row(self, a: int, b: int):
        pairs = self.result.pairs
        hit = pairs[((pairs["a"] == a) & (pairs["b"] == b)) | ((pairs["a"] == b) & (pairs["b"] == a))]
        return None if hit.empty else hit.iloc[0]

    def item_image(self, item_id: int) -> np.ndarray:
        """The image of an item of the last result (re-read from its provenance)."""
        from ..screening.sources import ItemRef, load_item_image

        row = self.result.items.iloc[item_id]
        page = None if _missing(row.page) else int(row.page)
        obj = None if _missing(row.object) else int(row.object)
        panel = None if _missing(row.panel) else tuple(int(v) for v in row.panel)
        ref = ItemRef(str(row.source), page, obj, panel, str(row.document), str(row.kind))
        return load_item_image(ref, self._arrays)

    def show_pair(self, a: int, b: int) -> None:
        """Show items ``a`` and ``b`` side by side (b to the right of a), each with a Shapes
        layer of its matched region when the screen localised the pair; other layers are
        hidden until "Show all layers"."""
        if self.result is None:
            return
        row = self._pair_row(a, b)
        if row is not None and int(row["a"]) != a:     # keep the boxes with their images
            a, b = b, a
        try:
            img_a, img_b = self.item_image(a), self.item_image(b)
        except ValueError as exc:
            show_error(f"Cannot show the pair: {exc}")
            return
        self._remove_pair_layers()
        for layer in self.viewer.layers:
            if layer.visible:
                layer.visible = False
                self._hidden.append(layer.name)
        offset = img_a.shape[1] + GAP_PX
        for tag, img, shift, name in (("A", img_a, 0, self.names[a]), ("B", img_b, offset, self.names[b])):
            self.viewer.add_image(img, name=f"{PAIR_PREFIX}{tag}: {name}", colormap="gray",
                                  translate=(0, shift))
        if row is not None:
            for tag, key, shift, colour in (("A", "box_a", 0, BOX_COLOURS[0]), ("B", "box_b", offset, BOX_COLOURS[1])):
                box = row[key]
                if _missing(box):
                    continue
                x0, y0, x1, y1 = box
                self.viewer.add_shapes([np.array([[y0, x0], [y1, x1]], float)], shape_type="rectangle",
                                       name=f"{PAIR_PREFIX}{tag} region", edge_color=colour,
                                       face_color="transparent", edge_width=3, translate=(0, shift))
            what = f"distance = {row['distance']:.3f}, p = {row['probability']:.3f}, {row['transform']}"
        else:
            what = f"distance = {self.matrix[a, b]:.3f}"
        self.status.setText(f"{self.names[a]} | {self.names[b]}: {what}")
        self.viewer.reset_view()

    def pair_layers(self) -> list:
        return [lay for lay in self.viewer.layers if lay.name.startswith(PAIR_PREFIX)]

    def _remove_pair_layers(self) -> None:
        for layer in self.pair_layers():
            self.viewer.layers.remove(layer)

    def restore_layers(self) -> None:
        """Remove the pair view and make the hidden layers visible again."""
        self._remove_pair_layers()
        for name in self._hidden:
            if name in self.viewer.layers:
                self.viewer.layers[name].visible = True
        self._hidden = []

    # ------------------------------------------------------------------ export
    def export(self, path: str | os.PathLike, kind: str | None = None) -> Path:
        """Write the last result as HTML (thumbnails, boxes) or CSV (pairs with provenance)."""
        if self.result is None:
            raise ValueError("nothing to export yet: press Compute first")
        kind = kind or Path(path).suffix.lstrip(".").lower()
        if kind == "html":
            return self.result.to_html(path)
        if kind == "csv":
            return self.result.to_csv(path)
        raise ValueError(f"export as 'html' or 'csv', got {kind!r}")

    def _ask_export(self, kind: str) -> None:
        if self.result is None:
            show_error("Nothing to export yet: press Compute first.")
            return
        path, _ = QFileDialog.getSaveFileName(self, f"Export the pairs as {kind.upper()}",
                                              f"duplicates.{kind}", f"{kind.upper()} (*.{kind})")
        if not path:
            return
        try:
            out = self.export(path, kind)
        except (ValueError, OSError) as exc:
            show_error(f"Export failed: {exc}")
            return
        show_info(f"Exported {out}")

    # ------------------------------------------------------------------ helpers
    def _busy_changed(self, _busy=None) -> None:
        busy = self.runner.busy
        self.compute_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder of figures")
        if folder:
            current = self.paths.text().strip()
            self.paths.setText(f"{current}; {folder}" if current else folder)
