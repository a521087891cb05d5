"""Layers in, arrays out (and the small layer pickers the widgets share)."""
from __future__ import annotations

import itertools

import numpy as np
from napari.layers import Image, Labels, Layer
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QComboBox, QListWidget, QListWidgetItem

MAX_PLANES = 512   # a guard: more planes than this from one layer is surely a mistake


def image_layers(viewer) -> list[Image]:
    return [lay for lay in viewer.layers if isinstance(lay, Image)]


def layer_array(layer: Layer) -> np.ndarray | object:
    """The full-resolution data of a layer (level 0 of a multiscale one), not copied."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def image_shape(layer: Image) -> tuple[int, ...]:
    """The layer's spatial shape: ``data.shape`` without the colour axis of an RGB layer."""
    shape = tuple(layer_array(layer).shape)
    return shape[:-1] if layer.rgb else shape


def layer_planes(layer: Image) -> list[tuple[str, np.ndarray]]:
    """``[(name, (H, W) or (H, W, 3|4) array), ...]``: one entry for a 2D or RGB layer, one
    per plane of a stack (named ``"name[z]"``, ``"name[t, z]"``)."""
    data = layer_array(layer)
    spatial = data.ndim - (1 if layer.rgb else 0)
    if spatial <= 2:
        return [(layer.name, np.asarray(data))]
    lead = data.shape[:spatial - 2]
    n = int(np.prod(lead))
    if n > MAX_PLANES:
        raise ValueError(f"layer {layer.name!r} has {n} planes (shape {data.shape}); at most "
                         f"{MAX_PLANES} are taken from one layer: crop it or pick fewer planes")
    out = []
    for idx in itertools.product(*(range(s) for s in lead)):
        label = ", ".join(str(i) for i in idx)
        out.append((f"{layer.name}[{label}]", np.asarray(data[idx])))
    return out


class LayerChecklist(QListWidget):
    """A checkable list of the viewer's layers of one type, kept in sync with the viewer.

    New layers appear checked. ``selected()`` returns the checked layers in viewer order.
    """

    def __init__(self, viewer, layer_type=Image, parent=None):
        super().__init__(parent)
        self.viewer = viewer
        self.layer_type = layer_type
        self._known: set[str] = set()
        self.setMaximumHeight(120)
        ev = viewer.layers.events
        for e in (ev.inserted, ev.removed, ev.reordered):
            e.connect(self.refresh)
        self.destroyed.connect(lambda *_: _disconnect(viewer, self.refresh))
        self.refresh()

    def refresh(self, *_):
        try:
            checked = {self.item(i).text(): self.item(i).checkState() == Qt.Checked for i in range(self.count())}
        except RuntimeError:
            return
        self.clear()
        names = [lay.name for lay in self.viewer.layers if isinstance(lay, self.layer_type)]
        for name in names:
            item = QListWidgetItem(name)
            item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
            item.setCheckState(Qt.Checked if checked.get(name, name not in self._known) else Qt.Unchecked)
            self.addItem(item)
        self._known = set(names)

    def set_checked(self, names) -> None:
        names = set(names)
        for i in range(self.count()):
            it = self.item(i)
            it.setCheckState(Qt.Checked if it.text() in names else Qt.Unchecked)

    def selected(self) -> list[Layer]:
        names = [self.item(i).text() for i in range(self.count()) if self.item(i).checkState() == Qt.Checked]
        return [self.viewer.layers[n] for n in names if n in self.viewer.layers]


class LayerCombo(QComboBox):
    """A combo box of the viewer's layers of one type (optionally with a first "none" entry)."""

    def __init__(self, viewer, layer_type=Image, none_text: str | None = None, parent=None):
        super().__init__(parent)
        self.viewer = viewer
        self.layer_type = layer_type
        self.none_text = none_text
        ev = viewer.layers.events
        for e in (ev.inserted, ev.removed, ev.reordered):
            e.connect(self.refresh)
        self.destroyed.connect(lambda *_: _disconnect(viewer, self.refresh))
        self.refresh()

    def refresh(self, *_):
        try:
            current = self.currentText()
        except RuntimeError:
            return
        self.blockSignals(True)
        self.clear()
        if self.none_text is not None:
            self.addItem(self.none_text)
        for lay in self.viewer.layers:
            if isinstance(lay, self.layer_type):
                self.addItem(lay.name)
        i = self.findText(current)
        self.blockSignals(False)
        if i >= 0:
            self.setCurrentIndex(i)
        else:
            self.setCurrentIndex(0 if self.count() else -1)
            self.currentIndexChanged.emit(self.currentIndex())

    def layer(self) -> Layer | None:
        name = self.currentText()
        if not name or name == self.none_text or name not in self.viewer.layers:
            return None
        lay = self.viewer.layers[name]
        return lay if isinstance(lay, self.layer_type) else None

    def select(self, name: str) -> None:
        self.refresh()
        i = self.findText(name)
        if i >= 0:
            self.setCurrentIndex(i)


def _disconnect(viewer, slot) -> None:
    ev = viewer.layers.events
    for e in (ev.inserted, ev.removed, ev.reordered):
        try:
            e.disconnect(slot)
        except Exception:   # noqa: BLE001 - the viewer may be gone already
            pass


__all__ = ["image_layers", "layer_array", "image_shape", "layer_planes", "LayerChecklist",
           "LayerCombo", "Labels"]
