"""Segment widget: paint scribbles, get a live per-pixel prediction.

A thin adapter over :class:`napari_siamforensic.core.segment.Segmenter`: the user paints class
strokes into a *scribble* Labels layer (which this widget only ever reads); each finished
stroke (with "live" on) snapshots the scribbles, refits the segmenter in a thread worker and
writes the prediction tile by tile into a *separate* Labels layer, the visible part of the
visible plane first. The Segmenter caches its features, so a refit does not run the network
again. Strokes that finish while a refit runs are coalesced into one more refit.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..core.segment import Segmenter
from ._jobs import JobRunner, stop_on_destroy
from ._layers import LayerCombo, image_shape, layer_array
from ._models import ModelBox, registry

NEW_SCRIBBLES = "(new scribbles layer)"
SCRIBBLES_SUFFIX = " scribbles"
PREDICTION_SUFFIX = " prediction"
PROBABILITY_SUFFIX = " probability"


def _n_jobs() -> int:
    return max(1, (os.cpu_count() or 2) - 1)    # leave a core to the viewer


class SegmentWidget(QWidget):
    """Dock widget: scribble segmentation with a live prediction layer."""

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.runner = JobRunner("Segmentation")
        self.segmenter: Segmenter | None = None
        self._segmenter_key = None        # (image layer id, model) the segmenter's cache is for
        self._pending = False             # a stroke finished while a refit was running
        self._watched: Labels | None = None
        self._watched_key = None

        layout = QVBoxLayout(self)
        layout.addWidget(ModelBox())
        form = QFormLayout()
        self.image = LayerCombo(self.viewer, Image)
        self.scribbles = LayerCombo(self.viewer, Labels, none_text=NEW_SCRIBBLES)
        self.trees = QSpinBox()
        self.trees.setRange(1, 1000)
        self.trees.setValue(50)
        self.filters = QCheckBox("add intensity / edge / blob filters")
        self.filters.setChecked(True)
        self.live = QCheckBox("live: refit after every stroke")
        self.live.setChecked(True)
        self.probability = QCheckBox("probability layer")
        form.addRow("image", self.image)
        form.addRow("scribbles", self.scribbles)
        form.addRow("trees", self.trees)
        form.addRow(self.filters)
        form.addRow(self.live)
        form.addRow(self.probability)
        layout.addLayout(form)

        row = QHBoxLayout()
        self.new_button = QPushButton("New scribbles")
        self.fit_button = QPushButton("Fit && predict")
        self.cancel_button = QPushButton("Cancel")
        for b in (self.new_button, self.fit_button, self.cancel_button):
            row.addWidget(b)
        layout.addLayout(row)
        self.new_button.clicked.connect(self.new_scribbles)
        self.fit_button.clicked.connect(self.fit_predict)
        self.cancel_button.clicked.connect(self.runner.cancel)

        apply_form = QFormLayout()
        self.target = LayerCombo(self.viewer, Image)
        self.whole_stack = QCheckBox("whole stack (not only the visible plane)")
        apply_form.addRow("apply to", self.target)
        apply_form.addRow(self.whole_stack)
        layout.addLayout(apply_form)
        row2 = QHBoxLayout()
        self.apply_button = QPushButton("Apply")
        self.save_button = QPushButton("Save segmenter…")
        self.load_button = QPushButton("Load segmenter…")
        for b in (self.apply_button, self.save_button, self.load_button):
            row2.addWidget(b)
        layout.addLayout(row2)
        self.apply_button.clicked.connect(lambda: self.apply())
        self.save_button.clicked.connect(self._ask_save)
        self.load_button.clicked.connect(self._ask_load)

        self.status = QLabel("Paint at least two classes (labels 1, 2, …) into the scribbles layer.")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        layout.addStretch(1)

        self.scribbles.currentTextChanged.connect(self._watch_scribbles)
        self.runner.busy_changed.connect(self._busy_changed)
        self._busy_changed(False)
        self._watch_scribbles()
        stop_on_destroy(self, self.runner)
        self.destroyed.connect(lambda *_: self._unwatch())

    # ------------------------------------------------------------------ layers
    def new_scribbles(self) -> Labels | None:
        """Add an empty scribble Labels layer over the chosen image and select it for painting."""
        image = self.image.layer()
        if image is None:
            show_error("Segmentation: add or choose an image layer first.")
            return None
        layer = self.viewer.add_labels(np.zeros(image_shape(image), np.uint8),
                                       name=image.name + SCRIBBLES_SUFFIX,
                                       scale=image.scale[-len(image_shape(image)):],
                                       translate=image.translate[-len(image_shape(image)):])
        layer.brush_size = 5
        layer.selected_label = 1
        layer.mode = "paint"
        self.scribbles.select(layer.name)
        self.viewer.layers.selection.active = layer
        return layer

    def _unwatch(self) -> None:
        if self._watched is not None:
            try:
                self._watched.events.paint.disconnect(self._stroke_finished)
            except Exception:    # noqa: BLE001 - layer already gone
                pass
            self._watched = None

    def _watch_scribbles(self, *_):
        layer = self.scribbles.layer()
        key = None if layer is None else (layer.name, id(layer.data))
        if key == self._watched_key:
            return
        self._unwatch()
        self._watched_key = key
        if layer is not None:
            layer.events.paint.connect(self._stroke_finished)
            self._watched = layer

    def _stroke_finished(self, event=None) -> None:
        """napari emits ``paint`` once per finished stroke (or fill): refit if live."""
        if self.live.isChecked():
            QTimer.singleShot(0, self._live_fit)

    def _live_fit(self) -> None:
        if self.runner.busy:
            # a stroke during a job, or one queued while idle whose refit comes due after a job
            # started: refit when the job ends (a start now would be refused and the refit lost)
            self._pending = True
            return
        layer = self.scribbles.layer()
        if layer is None or len(np.unique(np.asarray(layer.data))) < 3:   # 0 plus two classes
            self.status.setText("Live: paint at least two classes (labels 1 and 2) to start.")
            return
        self.fit_predict()

    def _output_layer(self, name: str, shape: tuple, like: Image, kind: str):
        ndim = len(shape) if kind == "labels" else len(shape) - 1
        spatial_scale = like.scale[-ndim:]
        spatial_translate = like.translate[-ndim:]
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            if layer.data.shape == shape:
                return layer
            self.viewer.layers.remove(layer)
        if kind == "labels":
            return self.viewer.add_labels(np.zeros(shape, np.int32), name=name, opacity=0.5,
                                          scale=spatial_scale, translate=spatial_translate)
        return self.viewer.add_image(np.zeros(shape, np.float32), name=name, colormap="magma",
                                     contrast_limits=(0, 1), opacity=0.6, blending="additive",
                                     scale=(1,) + tuple(spatial_scale), translate=(0,) + tuple(spatial_translate))

    # ------------------------------------------------------------------ regions
    def _plane_of(self, layer: Image) -> tuple:
        """The stack indices of the plane the viewer shows (``()`` for a 2D image)."""
        n_lead = len(image_shape(layer)) - 2
        if n_lead <= 0:
            return ()
        world = tuple(self.viewer.dims.point)[-len(image_shape(layer)):][:n_lead]
        data_pt = [(w - t) / s for w, t, s in zip(world, layer.translate[:n_lead], layer.scale[:n_lead])]
        shape = image_shape(layer)
        return tuple(int(min(max(round(p), 0), n - 1)) for p, n in zip(data_pt, shape[:n_lead]))

    def _regions(self, layer: Image, whole_stack: bool) -> list[tuple]:
        """Regions to predict, in order: the viewport of the visible plane (when it is much
        smaller than the plane), the visible plane, then (``whole_stack``) the whole stack."""
        shape = image_shape(layer)
        plane = self._plane_of(layer)
        regions = []
        try:
            corners = np.asarray(layer.corner_pixels)[:, -2:]
            (y0, x0), (y1, x1) = corners[0], corners[1] + 1
            y0, x0 = max(0, int(y0)), max(0, int(x0))
            y1, x1 = min(shape[-2], int(y1)), min(shape[-1], int(x1))
            if y1 > y0 and x1 > x0 and (y1 - y0) * (x1 - x0) < 0.5 * shape[-2] * shape[-1]:
                regions.append(plane + (slice(y0, y1), slice(x0, x1)))
        except (AttributeError, IndexError, ValueError):
            pass
        regions.append(plane + (slice(None), slice(None)))
        if whole_stack and plane:
            regions.append(())
        return regions

    # ------------------------------------------------------------------ jobs
    def _segmenter_for(self, image: Image) -> Segmenter:
        # napari may hand plugins proxies of its layers (a new object per access): key by name and
        # the data array itself, so the segmenter (and its feature cache) survives refits
        key = (image.name, id(layer_array(image)), id(registry.model))
        if self.segmenter is None or self._segmenter_key != key:
            self.segmenter = Segmenter(model=registry.model, n_estimators=self.trees.value(),
                                       filters=self.filters.isChecked(), n_jobs=_n_jobs())
            self._segmenter_key = key
        else:
            self.segmenter.set_params(n_estimators=self.trees.value(), filters=self.filters.isChecked())
        return self.segmenter

    def fit_predict(self) -> bool:
        """Snapshot the scribbles, refit in a worker, write the prediction of the visible plane
        (viewport first). The scribbles layer is only read."""
        image, scribbles = self.image.layer(), self.scribbles.layer()
        if image is None or scribbles is None:
            show_error("Segmentation: choose an image layer and a scribbles layer "
                       "(press 'New scribbles' and paint two classes).")
            return False
        if tuple(scribbles.data.shape) != image_shape(image):
            show_error(f"Segmentation: the scribbles {tuple(scribbles.data.shape)} do not match the image "
                       f"{image_shape(image)}; press 'New scribbles'.")
            return False
        labels = np.array(scribbles.data, copy=True)      # the user may keep painting
        data = layer_array(image)
        seg = self._segmenter_for(image)
        regions = self._regions(image, whole_stack=False)
        proba = self.probability.isChecked()
        self._pending = False

        def factory():
            seg.fit(data, labels)
            yield ("fitted", None)
            yield from self._predict_items(seg, data, regions, proba)

        self.status.setText("fitting…")
        return self.runner.start(factory, on_yield=lambda item: self._on_item(item, image, seg),
                                 on_done=self._on_done, on_error=self._on_error, desc="Segmenting")

    @staticmethod
    def _predict_items(seg: Segmenter, data, regions, proba: bool):
        for region in regions:
            lead = tuple(r for r in region if isinstance(r, (int, np.integer)))
            spatial = [r for r in region if isinstance(r, slice)]
            y0 = (spatial[-2].start or 0) if len(spatial) >= 2 else 0
            x0 = (spatial[-1].start or 0) if len(spatial) >= 2 else 0
            for tp in seg.iter_predict(data, region=region, proba=proba):
                yield ("tile", lead, y0, x0, tp)

    def apply(self, target: Image | None = None, whole_stack: bool | None = None) -> bool:
        """Predict another image layer (or the whole stack) with the fitted segmenter."""
        target = target or self.target.layer()
        whole = self.whole_stack.isChecked() if whole_stack is None else whole_stack
        if self.segmenter is None or not hasattr(self.segmenter, "forest_"):
            show_error("Segmentation: fit (paint two classes) or load a segmenter first.")
            return False
        if target is None:
            show_error("Segmentation: choose the image layer to apply the segmenter to.")
            return False
        seg, data = self.segmenter, layer_array(target)
        plane = self._plane_of(target)
        regions = [()] if whole or not plane else [plane + (slice(None), slice(None))]
        proba = self.probability.isChecked()

        def factory():
            yield ("fitted", None)
            yield from self._predict_items(seg, data, regions, proba)

        self.status.setText(f"predicting {target.name}…")
        return self.runner.start(factory, on_yield=lambda item: self._on_item(item, target, seg),
                                 on_done=self._on_done, on_error=self._on_error,
                                 desc=f"Segmenting {target.name}")

    def _on_item(self, item, image: Image, seg: Segmenter) -> None:
        if item[0] == "fitted":
            self.status.setText(f"fitted on {getattr(seg, 'n_samples_fit_', 0)} painted pixels, "
                                f"classes {getattr(seg, 'classes_', np.array([])).tolist()}; predicting…")
            return
        _, lead, y0, x0, tp = item
        shape = image_shape(image)
        pred = self._output_layer(image.name + PREDICTION_SUFFIX, shape, image, "labels")
        where = lead + tp.index + (slice(y0 + tp.rows.start, y0 + tp.rows.stop),
                                   slice(x0 + tp.cols.start, x0 + tp.cols.stop))
        pred.data[where] = tp.labels
        pred.refresh()
        if tp.proba is not None:
            n = tp.proba.shape[-1]
            prob = self._output_layer(image.name + PROBABILITY_SUFFIX, (n,) + shape, image, "image")
            prob.metadata["classes"] = seg.classes_.tolist()
            prob.data[(slice(None),) + where] = np.moveaxis(tp.proba, -1, 0)
            prob.refresh()
        self.status.setText(f"predicted tile {tp.done}/{tp.total}")

    def _on_done(self) -> None:
        seg = self.segmenter
        classes = getattr(seg, "classes_", np.array([])).tolist()
        self.status.setText(f"done: classes {classes}" + ("" if not self.live.isChecked() else
                                                          "; keep painting, it refits after each stroke"))

    def _on_error(self, exc) -> None:
        self.status.setText(f"failed (scribbles and prediction left as they were): {exc}")

    def _busy_changed(self, busy=None) -> None:
        busy = self.runner.busy
        for b in (self.fit_button, self.apply_button, self.save_button, self.load_button):
            b.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)
        if not busy and self._pending and self.live.isChecked():
            self._pending = False
            QTimer.singleShot(0, self._live_fit)

    # ------------------------------------------------------------------ save / load
    def save_segmenter(self, path) -> Path:
        if self.segmenter is None or not hasattr(self.segmenter, "forest_"):
            raise ValueError("nothing to save yet: fit the segmenter first")
        return self.segmenter.save(path)

    def load_segmenter(self, path) -> Segmenter:
        """Load a saved segmenter (with the current model, else the one it names)."""
        try:
            seg = Segmenter.load(path, model=registry.model)
        except ValueError:
            if registry.model is None:
                raise
            seg = Segmenter.load(path)
        self.segmenter = seg
        self._segmenter_key = None     # the next fit starts a fresh one for its image
        self.status.setText(f"loaded {Path(path).name}: classes {seg.classes_.tolist()}; "
                            "choose a layer and press Apply")
        return seg

    def _ask_save(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save the segmenter", "segmenter.zip",
                                              "Segmenter (*.zip)")
        if path:
            try:
                show_info(f"Saved {self.save_segmenter(path)}")
            except (ValueError, OSError) as exc:
                show_error(f"Could not save the segmenter: {exc}")

    def _ask_load(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load a segmenter", "", "Segmenter (*.zip);;All files (*)")
        if path:
            try:
                self.load_segmenter(path)
            except (ValueError, OSError) as exc:
                show_error(f"Could not load the segmenter: {exc}")
