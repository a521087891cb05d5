"""The Train widget in a real viewer: a short run, a cancelled run, the triplet preview."""
import numpy as np
import pytest

pytest.importorskip("napari")

from napari_siamforensic import load_model  # noqa: E402
from napari_siamforensic._widgets._models import registry  # noqa: E402
from napari_siamforensic._widgets.train import PREVIEW_LAYER, TrainWidget  # noqa: E402

pytestmark = pytest.mark.gui


def _widget(viewer, tmp_path, steps, scenes):
    for i, s in enumerate(scenes):
        viewer.add_image(s, name=f"scene {i}")
    w = TrainWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.steps.setValue(steps)
    w.batch.setValue(2)
    w.validation.setValue(4)
    w.device.setCurrentText("cpu")
    w.precision.setCurrentText("fp32")
    w.checkpoint_dir.setText(str(tmp_path / "run"))
    return w


def test_short_run_shares_the_model_and_saves(make_napari_viewer, tmp_path, scenes, wait_idle):
    viewer = make_napari_viewer()
    w = _widget(viewer, tmp_path, 3, scenes)
    assert [lay.name for lay in w.layers.selected()] == [f"scene {i}" for i in range(4)]
    assert registry.model is None
    w.start_button.click()
    assert not w.start_button.isEnabled() and w.cancel_button.isEnabled()
    wait_idle(w.runner)
    assert w.runner.last_outcome == "finished", w.runner.last_error
    assert [r.step for r in w.reports] == [1, 2, 3]
    assert w.reports[-1].triplet_accuracy is not None
    assert registry.model is w.model is not None
    assert w.start_button.isEnabled() and not w.cancel_button.isEnabled()
    assert len(w.plot.loss) == 3
    saved = w.save_model(tmp_path / "mine.safetensors")
    again = load_model(saved, device="cpu")
    np.testing.assert_allclose(again.embed(scenes[:2]), w.model.embed(scenes[:2]), atol=1e-4)


def test_cancel_keeps_a_checkpoint_that_loads(make_napari_viewer, tmp_path, scenes, qtbot, wait_idle):
    viewer = make_napari_viewer()
    w = _widget(viewer, tmp_path, 100_000, scenes)
    w.start_button.click()
    qtbot.waitUntil(lambda: len(w.reports) >= 2, timeout=60_000)
    w.cancel_button.click()
    wait_idle(w.runner)
    assert w.runner.last_outcome == "cancelled"
    ckpt = tmp_path / "run" / "checkpoint.safetensors"
    assert ckpt.is_file()
    model = load_model(ckpt, device="cpu")
    assert model.embed(scenes).shape == (4, 128)
    assert registry.model is w.model is not None
    assert "cancelled" in registry.description
    assert w.reports[-1].step < 100_000


def test_triplet_preview_layer(make_napari_viewer, tmp_path, scenes, wait_idle):
    viewer = make_napari_viewer()
    w = _widget(viewer, tmp_path, 5, scenes)
    assert w.preview(n=3)
    wait_idle(w.preview_runner)
    layer = viewer.layers[PREVIEW_LAYER]
    assert layer.data.shape == (3, 128, 3 * 128 + 8)
    assert 0.0 <= layer.data.min() and layer.data.max() <= 1.0
    anchor, same = layer.data[:, :, :128], layer.data[:, :, 132:260]
    assert not np.allclose(anchor, same)   # the "same" partner is a deformed copy


def test_no_images_is_a_notification_not_a_crash(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    w = TrainWidget(viewer)
    assert w.start() is False
    assert not w.runner.busy


def test_bad_folder_fails_in_the_job_and_reports(make_napari_viewer, tmp_path, wait_idle):
    viewer = make_napari_viewer()
    w = TrainWidget(viewer)
    w.folder.setText(str(tmp_path / "missing"))
    w.checkpoint_dir.setText(str(tmp_path / "run"))
    assert w.start()
    wait_idle(w.runner)
    assert w.runner.last_outcome == "error"
    assert "missing" in str(w.runner.last_error)
    assert w.start_button.isEnabled()
