"""Train widget: pick images, set the run, Start / Cancel, watch loss and accuracy live.

Everything here is a call a script can make (``napari_siamforensic.iter_train`` with a
``TrainConfig``); the widget only turns layers into arrays and the form into a config, runs
the generator in a thread worker and shows its reports. The trained model goes into the
shared model registry, so the Duplicates and Segment widgets use it at once.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..core.config import DeformConfig, TrainConfig
from ..core.scoring import load_model
from ..core.train import CHECKPOINT_NAME, iter_train
from ._jobs import JobRunner, stop_on_destroy
from ._layers import LayerChecklist, layer_planes
from ._models import ModelBox, registry
from ._plot import LossPlot

#: Deformation families the form can switch off: label -> DeformConfig probability field.
FAMILIES = {
    "reflect": "p_reflect", "rot 90°": "p_rot90", "perspective": "p_perspective",
    "rotate/scale/shift": "p_similarity", "crop": "p_crop", "stretch": "p_stretch",
    "JPEG": "p_jpeg", "gamma": "p_gamma", "levels": "p_levels", "local edit": "p_local_edit",
    "invert": "p_invert", "noise": "p_noise", "blur": "p_blur",
    "text": "p_text", "box": "p_box", "scale bar": "p_scalebar", "erase": "p_erase",
}
PRESETS = {
    "all (default)": DeformConfig,
    "paper (authors' v2)": DeformConfig.paper,
    "geometric only (SN[G])": DeformConfig.geometric_only,
}
START_FROM = ("scratch", "default model", "current model")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16")
PREVIEW_LAYER = "training triplets (anchor | same | different)"


def default_run_dir() -> str:
    return str(Path.home() / "siamforensic-runs" / time.strftime("run-%Y%m%d-%H%M%S"))


class TrainWidget(QWidget):
    """Dock widget: train the forensic siamese net on layers and/or a folder."""

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.runner = JobRunner("Training")
        self.preview_runner = JobRunner("Triplet preview")
        self.model = None            # the last model this widget trained (or its checkpoint)
        self.reports: list = []      # the reports of the current / last run
        self._config: TrainConfig | None = None

        layout = QVBoxLayout(self)
        layout.addWidget(ModelBox())

        # --- sources
        src = QGroupBox("Training images")
        sl = QVBoxLayout(src)
        self.layers = LayerChecklist(self.viewer)
        sl.addWidget(self.layers)
        row = QHBoxLayout()
        self.folder = QLineEdit()
        self.folder.setPlaceholderText("and/or a folder of images (searched recursively)")
        browse = QPushButton("…")
        browse.setMaximumWidth(30)
        browse.clicked.connect(self._browse_folder)
        row.addWidget(self.folder)
        row.addWidget(browse)
        sl.addLayout(row)
        layout.addWidget(src)

        # --- settings
        form_box = QGroupBox("Run")
        form = QFormLayout(form_box)
        self.steps = _spin(1, 1_000_000, 1000)
        self.batch = _spin(2, 4096, 64)
        self.lr = QDoubleSpinBox()
        self.lr.setDecimals(6)
        self.lr.setRange(1e-6, 1.0)
        self.lr.setSingleStep(1e-4)
        self.lr.setValue(3e-4)
        self.validation = _spin(0, 100_000, 256)
        self.seed = _spin(0, 2**31 - 1, 0)
        self.device = _combo(DEVICES)
        self.precision = _combo(PRECISIONS)
        self.start_from = _combo(START_FROM)
        self.checkpoint_dir = QLineEdit(default_run_dir())
        self.checkpoint_dir.setToolTip("checkpoint.safetensors is written here while training runs "
                                       "and when it is cancelled")
        form.addRow("steps", self.steps)
        form.addRow("batch (triplets)", self.batch)
        form.addRow("learning rate", self.lr)
        form.addRow("validation triplets", self.validation)
        form.addRow("seed", self.seed)
        form.addRow("device", self.device)
        form.addRow("precision", self.precision)
        form.addRow("start from", self.start_from)
        form.addRow("checkpoints", self.checkpoint_dir)
        layout.addWidget(form_box)

        # --- deformations
        deform_box = QGroupBox("Synthetic manipulations")
        dl = QVBoxLayout(deform_box)
        self.preset = _combo(tuple(PRESETS))
        self.preset.currentTextChanged.connect(self._apply_preset)
        dl.addWidget(self.preset)
        grid = QGridLayout()
        self.families: dict[str, QCheckBox] = {}
        for i, label in enumerate(FAMILIES):
            cb = QCheckBox(label)
            self.families[label] = cb
            grid.addWidget(cb, i // 3, i % 3)
        dl.addLayout(grid)
        layout.addWidget(deform_box)
        self._apply_preset(self.preset.currentText())

        # --- actions
        buttons = QHBoxLayout()
        self.preview_button = QPushButton("Preview triplets")
        self.preview_button.setToolTip("Add an image layer with sampled training triplets: "
                                       "anchor | deformed copy | different image")
        self.start_button = QPushButton("Start")
        self.cancel_button = QPushButton("Cancel")
        self.save_button = QPushButton("Save model…")
        for b in (self.preview_button, self.start_button, self.cancel_button, self.save_button):
            buttons.addWidget(b)
        layout.addLayout(buttons)
        self.preview_button.clicked.connect(self.preview)
        self.start_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.runner.cancel)
        self.save_button.clicked.connect(self._ask_and_save)

        self.status = QLabel("idle")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        self.plot = LossPlot()
        layout.addWidget(self.plot)
        layout.addStretch(1)

        self.runner.busy_changed.connect(self._busy_changed)
        self.preview_runner.busy_changed.connect(self._busy_changed)
        self._busy_changed(False)
        stop_on_destroy(self, self.runner, self.preview_runner)

    # ------------------------------------------------------------------ form -> config
    def _apply_preset(self, name: str) -> None:
        preset = PRESETS[name]()
        for label, field in FAMILIES.items():
            self.families[label].setChecked(getattr(preset, field) > 0)

    def deform_config(self) -> DeformConfig:
        """The preset with the unticked families switched off (ticked ones the preset lacks get
        the library's default probability)."""
        preset = PRESETS[self.preset.currentText()]()
        default = DeformConfig()
        changes = {}
        for label, field in FAMILIES.items():
            on = self.families[label].isChecked()
            if not on:
                changes[field] = 0.0
            elif getattr(preset, field) == 0:
                changes[field] = getattr(default, field)
        return preset.replace(**changes)

    def train_config(self) -> TrainConfig:
        steps = self.steps.value()
        return TrainConfig(
            steps=steps, batch_size=self.batch.value(), lr=self.lr.value(), seed=self.seed.value(),
            device=self.device.currentText(), precision=self.precision.currentText(),
            validation_triplets=self.validation.value(), eval_every=max(1, steps // 20),
            checkpoint_every=max(1, steps // 10),
            checkpoint_dir=self.checkpoint_dir.text().strip() or None,
            deform=self.deform_config())

    def sources(self) -> list:
        """Arrays of the ticked layers (stacks give one array per plane) and the folder."""
        out: list = []
        for layer in self.layers.selected():
            out.extend(arr for _, arr in layer_planes(layer))
        folder = self.folder.text().strip()
        if folder:
            out.append(folder)
        if not out:
            raise ValueError("no training images: tick image layers or choose a folder")
        return out

    # ------------------------------------------------------------------ actions
    def start(self) -> bool:
        """Start training with the form's settings (returns False when it could not start)."""
        try:
            config = self.train_config()
            sources = self.sources()
        except (ValueError, TypeError) as exc:
            show_error(f"Training not started: {exc}")
            return False
        start_from = self.start_from.currentText()
        current = registry.model
        if start_from == "current model" and current is None:
            show_error("Training not started: there is no current model yet; start from scratch "
                       "or the default model, or load a model file.")
            return False

        def factory():
            init = None
            if start_from == "default model":
                try:
                    init = load_model(device="cpu")
                except ValueError as exc:
                    raise ValueError(f"{exc}. Choose 'start from: scratch' instead.") from None
            elif start_from == "current model":
                init = current
            return iter_train(sources, config, init=init)

        self._config = config
        self.reports = []
        self.plot.reset(config.steps)
        self.status.setText("starting…")
        return self.runner.start(factory, on_yield=self._on_report, on_done=self._on_done,
                                 on_cancelled=self._on_cancelled, on_error=self._on_error,
                                 total=config.steps, desc="Training", progress_of=lambda r: r.step)

    def cancel(self) -> None:
        self.runner.cancel()

    def _on_report(self, report) -> None:
        self.reports.append(report)
        self.plot.add(report.step, report.loss, report.triplet_accuracy)
        acc = next((r.triplet_accuracy for r in reversed(self.reports) if r.triplet_accuracy is not None), None)
        self.status.setText(
            f"step {report.step}/{report.steps}   loss {report.loss:.4f}   "
            f"accuracy {'–' if acc is None else f'{acc:.3f}'}   "
            f"{report.triplets_per_second:.0f} triplets/s   {report.seconds:.0f} s")
        if report.done and report.model is not None:
            self.model = report.model
            registry.set(report.model, f"trained here ({report.step} steps)")

    def _on_done(self) -> None:
        self.status.setText(self.status.text() + "   — done; the other widgets use this model now")
        show_info("Training finished: the Duplicates and Segment widgets use the new model.")

    def checkpoint_path(self) -> Path | None:
        cfg = self._config
        return Path(cfg.checkpoint_dir) / CHECKPOINT_NAME if cfg and cfg.checkpoint_dir else None

    def _on_cancelled(self) -> None:
        path = self.checkpoint_path()
        step = self.reports[-1].step if self.reports else 0
        if path is None or not path.is_file():
            self.status.setText(f"cancelled at step {step}; no checkpoint directory was set")
            return
        try:
            model = load_model(path, device=self._config.device)
        except ValueError as exc:
            show_error(f"Training cancelled, but its checkpoint could not be loaded: {exc}")
            return
        self.model = model
        registry.set(model, f"checkpoint of a cancelled run (step {step})")
        self.status.setText(f"cancelled at step {step}; checkpoint {path} is the current model")

    def _on_error(self, exc) -> None:
        self.status.setText(f"failed: {exc}")

    def save_model(self, path) -> Path:
        """Save the trained (or current) model as safetensors."""
        model = self.model or registry.model
        if model is None:
            raise ValueError("no model to save yet: train one first")
        return model.save(path)

    def _ask_and_save(self) -> None:
        if (self.model or registry.model) is None:
            show_error("No model to save yet: train one (or load one) first.")
            return
        path, _ = QFileDialog.getSaveFileName(self, "Save the model", "model.safetensors",
                                              "Model files (*.safetensors)")
        if not path:
            return
        try:
            saved = self.save_model(path)
        except (ValueError, OSError) as exc:
            show_error(f"Could not save the model: {exc}")
            return
        show_info(f"Model saved to {saved}")

    def preview(self, n: int = 8) -> bool:
        """Add (or refresh) an image layer of ``n`` sampled triplets, ``(n, 128, 3 * 128 + 8)``."""
        try:
            config = self.train_config()
            sources = self.sources()
        except (ValueError, TypeError) as exc:
            show_error(f"No preview: {exc}")
            return False

        def factory():
            import torch

            from ..core.data import gather_training_images
            from ..core.devices import make_generator, resolve_device
            from ..core.train import TripletSampler

            arrays, groups = gather_training_images(sources)
            sampler = TripletSampler(arrays, groups, config, resolve_device(config.device))
            with torch.no_grad():
                triplet = sampler.sample(n, make_generator(config.seed))
            yield [t[:, 0].float().cpu().numpy() for t in triplet]   # 3 x (n, 128, 128)

        return self.preview_runner.start(factory, on_yield=self._show_preview, total=1,
                                         desc="Sampling triplets")

    def _show_preview(self, triplet) -> None:
        anchor, same, different = triplet
        gap = np.ones((anchor.shape[0], anchor.shape[1], 4), np.float32)
        panel = np.concatenate([anchor, gap, same, gap, different], axis=2)
        if PREVIEW_LAYER in self.viewer.layers:
            self.viewer.layers[PREVIEW_LAYER].data = panel
        else:
            self.viewer.add_image(panel, name=PREVIEW_LAYER, colormap="gray", contrast_limits=(0, 1))

    # ------------------------------------------------------------------ helpers
    def _busy_changed(self, _busy=None) -> None:
        training = self.runner.busy
        busy = training or self.preview_runner.busy
        self.start_button.setEnabled(not busy)
        self.preview_button.setEnabled(not busy)
        self.cancel_button.setEnabled(training)
        self.save_button.setEnabled(not training)

    def _browse_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder of training images")
        if folder:
            self.folder.setText(folder)


def _spin(lo: int, hi: int, value: int) -> QSpinBox:
    s = QSpinBox()
    s.setRange(lo, hi)
    s.setValue(value)
    return s


def _combo(items) -> QComboBox:
    c = QComboBox()
    c.addItems(list(items))
    return c
