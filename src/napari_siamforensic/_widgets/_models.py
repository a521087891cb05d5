"""The model the widgets share: trained in the Train widget, loaded from a file, or the default.

One module-level :data:`registry`. Widgets read ``registry.get()`` when a job starts (so a
model trained a moment ago is used at once) and listen to ``registry.changed`` to refresh
their "model:" labels. Without a model set, ``get()`` loads the bundled default model; when
the installation has none it raises a ``ValueError`` that says what to do instead.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

from psygnal import Signal
from qtpy.QtWidgets import QFileDialog, QHBoxLayout, QLabel, QPushButton, QWidget

from ..core.scoring import ForensicModel, load_model

NO_MODEL_HELP = ("Train one with the SiamForensic Train widget, or load a model file "
                 "(.safetensors) with 'Load model…' (or drop it on the viewer).")


class ModelRegistry:
    """Holds the current :class:`ForensicModel` and its description.

    Signals
    -------
    changed(str)
        Emitted with the new description whenever the current model changes.
    """

    changed = Signal(str)

    def __init__(self):
        self._model: ForensicModel | None = None
        self._name: str | None = None
        self._lock = threading.Lock()

    @property
    def model(self) -> ForensicModel | None:
        """The model set by training or loading, or None (then :meth:`get` tries the default)."""
        return self._model

    @property
    def description(self) -> str:
        return self._name or "bundled default model"

    def set(self, model: ForensicModel | None, name: str | None = None) -> None:
        if model is not None and not isinstance(model, ForensicModel):
            raise TypeError(f"`model` must be a ForensicModel or None, got {type(model).__name__}")
        with self._lock:
            self._model = model
            self._name = (name or "unnamed model") if model is not None else None
        self.changed.emit(self.description)

    def get(self) -> ForensicModel:
        """The current model; loads the bundled default model when none is set.

        Raises ``ValueError`` (saying what to do) when there is no model at all. Safe to call
        from a worker thread.
        """
        with self._lock:
            if self._model is not None:
                return self._model
        try:
            model = load_model()
        except ValueError as exc:
            raise ValueError(f"no model available: {exc}. {NO_MODEL_HELP}") from None
        with self._lock:
            if self._model is None:
                self._model, self._name = model, "bundled default model"
        self.changed.emit(self.description)
        return model

    def load_file(self, path: str | os.PathLike) -> ForensicModel:
        """Load a model (or training checkpoint) file and make it current."""
        model = load_model(path)
        self.set(model, Path(path).name)
        return model


#: The one registry every widget of this plugin shares.
registry = ModelRegistry()


class ModelBox(QWidget):
    """A row "model: <name>  [Load model…]" bound to :data:`registry`."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.load_button = QPushButton("Load model…")
        self.load_button.setToolTip("Load a model file (.safetensors) or a training checkpoint; "
                                    "all SiamForensic widgets then use it.")
        self.load_button.clicked.connect(self._ask_and_load)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.load_button)
        self._refresh(registry.description)
        registry.changed.connect(self._refresh)
        self.destroyed.connect(lambda *_: _safe_disconnect(registry.changed, self._refresh))

    def _refresh(self, description: str) -> None:
        try:
            self.label.setText(f"model: {description}")
        except RuntimeError:     # the Qt object is gone
            _safe_disconnect(registry.changed, self._refresh)

    def _ask_and_load(self) -> None:
        from napari.utils.notifications import show_error, show_info

        path, _ = QFileDialog.getOpenFileName(self, "Load a SiamForensic model", "",
                                              "Model files (*.safetensors);;All files (*)")
        if not path:
            return
        try:
            registry.load_file(path)
        except (ValueError, OSError) as exc:
            show_error(f"Could not load the model: {exc}")
            return
        show_info(f"Loaded model {Path(path).name}; all SiamForensic widgets use it now.")


def _safe_disconnect(signal, slot) -> None:
    try:
        signal.disconnect(slot)
    except (ValueError, RuntimeError, TypeError):
        pass
