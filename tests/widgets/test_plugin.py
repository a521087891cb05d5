"""The plugin as napari users meet it: widgets from the Plugins menu, samples, the model reader."""
import numpy as np
import pytest

pytest.importorskip("napari")

from napari_siamforensic._widgets._models import registry  # noqa: E402
from napari_siamforensic._widgets.duplicates import DuplicatesWidget  # noqa: E402
from napari_siamforensic._widgets.segment import SegmentWidget  # noqa: E402
from napari_siamforensic._widgets.train import TrainWidget  # noqa: E402

pytestmark = pytest.mark.gui


@pytest.mark.parametrize("name, cls", [("Train", TrainWidget), ("Find duplicates", DuplicatesWidget),
                                       ("Segment by scribbles", SegmentWidget)])
def test_widgets_open_from_the_plugin_menu(make_napari_viewer, name, cls, scenes):
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget("napari-siamforensic", name)
    assert isinstance(widget, cls)
    viewer.add_image(scenes[0], name="added later")     # the widget follows the viewer's layers
    picker = widget.image if cls is SegmentWidget else widget.layers
    assert [picker.itemText(i) if cls is SegmentWidget else picker.item(i).text()
            for i in range(picker.count())] == ["added later"]


def test_live_segmentation_through_the_plugin_menu(make_napari_viewer, qtbot, wait_idle):
    """napari hands plugin widgets a proxy of the viewer: the live path must work through it."""
    from napari_siamforensic.core.synthetic import labelled_scene

    image, truth = labelled_scene("nuclei", seed=7, size=(96, 96))
    viewer = make_napari_viewer()
    viewer.add_image(image, name="img")
    _, w = viewer.window.add_plugin_dock_widget("napari-siamforensic", "Segment by scribbles")
    w.trees.setValue(10)
    scribbles = w.new_scribbles()
    scribbles.brush_size = 3
    scribbles.paint((int(np.nonzero(truth)[0][0]), int(np.nonzero(truth)[1][0])), 1)
    scribbles.paint((2, 2), 2)
    qtbot.waitUntil(lambda: "img prediction" in viewer.layers, timeout=60_000)
    wait_idle(w.runner)
    first = w.segmenter
    scribbles.paint((90, 90), 2)

    def refitted():
        return (w.segmenter.n_samples_fit_ == int((viewer.layers["img scribbles"].data > 0).sum())
                and not w.runner.busy)

    try:
        qtbot.waitUntil(refitted, timeout=60_000)
    except AssertionError as exc:   # this wait timed out once in 3 CI runs: say what the widget was doing
        state = dict(status=w.status.text(), busy=w.runner.busy, pending=w._pending,
                     outcome=w.runner.last_outcome, error=repr(w.runner.last_error),
                     fitted_on=w.segmenter.n_samples_fit_,
                     painted=int((viewer.layers["img scribbles"].data > 0).sum()),
                     chooser=w.scribbles.currentText(), watched=getattr(w._watched, "name", None),
                     live=w.live.isChecked())
        raise AssertionError(f"no refit after the third stroke: {state}") from exc
    assert w.segmenter is first          # the same segmenter (and its feature cache) refitted


def test_samples_open(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-siamforensic", "planted-duplicates")
    assert [lay.name for lay in viewer.layers] == [f"panel {i}" for i in range(1, 9)]
    viewer.open_sample("napari-siamforensic", "scribble-nuclei")
    assert viewer.layers[-1].data.shape == (512, 512)


def test_dropping_a_model_file_makes_it_current(make_napari_viewer, tmp_path, tiny_model):
    path = tiny_model.save(tmp_path / "mine.safetensors")
    viewer = make_napari_viewer()
    n = len(viewer.layers)
    viewer.open(str(path), plugin="napari-siamforensic")
    assert len(viewer.layers) == n             # no layer, just the model
    assert registry.model is not None and registry.description == "mine.safetensors"
    np.testing.assert_allclose(registry.model.alpha, tiny_model.alpha)


def test_closing_the_viewer_mid_training_stops_it(make_napari_viewer, tmp_path, scenes, qtbot):
    viewer = make_napari_viewer()
    for s in scenes[:2]:
        viewer.add_image(s)
    _, w = viewer.window.add_plugin_dock_widget("napari-siamforensic", "Train")
    w.steps.setValue(100_000)
    w.batch.setValue(2)
    w.validation.setValue(0)
    w.device.setCurrentText("cpu")
    w.checkpoint_dir.setText(str(tmp_path / "run"))
    runner = w.runner
    w.start()
    qtbot.waitUntil(lambda: len(w.reports) >= 1, timeout=60_000)
    viewer.close()
    qtbot.waitUntil(lambda: not runner.busy or runner._cancel.is_set(), timeout=10_000)
    assert runner._cancel.is_set()
    qtbot.waitUntil(lambda: (tmp_path / "run" / "checkpoint.safetensors").is_file(), timeout=60_000)
