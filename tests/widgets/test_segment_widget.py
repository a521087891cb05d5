"""The Segment widget in a real viewer: live refits from strokes, stacks, failures, save/load."""
import numpy as np
import pytest

pytest.importorskip("napari")

from napari_siamforensic.core.synthetic import labelled_scene  # noqa: E402
from napari_siamforensic._widgets.segment import (  # noqa: E402
    PREDICTION_SUFFIX,
    PROBABILITY_SUFFIX,
    SegmentWidget,
)

pytestmark = pytest.mark.gui


@pytest.fixture
def nuclei():
    image, truth = labelled_scene("nuclei", seed=7, size=(128, 128))
    return image, truth > 0


def _paint_from_truth(layer, truth, n=30, seed=0, plane=()):
    """One stroke (one undo item, one paint event) of n pixels per class taken from ``truth``."""
    rng = np.random.default_rng(seed)
    with layer.block_history():
        for cls, mask in ((1, truth), (2, ~truth)):
            ys, xs = np.nonzero(mask)
            pick = rng.choice(ys.size, n, replace=False)
            for y, x in zip(ys[pick], xs[pick]):
                layer.paint(plane + (int(y), int(x)), cls, refresh=False)
    layer.refresh()


def _widget(viewer):
    w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.trees.setValue(20)
    return w


def _painted_not_live(make_napari_viewer, nuclei):
    """A viewer with the nuclei image, a Segment widget with live off and one stroke painted."""
    image, truth = nuclei
    viewer = make_napari_viewer()
    viewer.add_image(image, name="cells")
    w = _widget(viewer)
    w.live.setChecked(False)
    scribbles = w.new_scribbles()
    _paint_from_truth(scribbles, truth)
    return viewer, w, scribbles, truth


def test_live_stroke_refits_and_never_writes_scribbles(make_napari_viewer, nuclei, qtbot, wait_idle):
    image, truth = nuclei
    viewer = make_napari_viewer()
    viewer.add_image(image, name="cells")
    w = _widget(viewer)
    scribbles = w.new_scribbles()
    assert scribbles.name == "cells scribbles" and scribbles.data.shape == (128, 128)
    assert w.scribbles.layer() is scribbles
    w.probability.setChecked(True)

    scribbles.brush_size = 1
    _paint_from_truth(scribbles, truth)           # a finished stroke -> a refit, no button
    before = scribbles.data.copy()
    qtbot.waitUntil(lambda: "cells" + PREDICTION_SUFFIX in viewer.layers, timeout=60_000)
    wait_idle(w.runner)
    assert w.runner.last_outcome == "finished", w.runner.last_error
    np.testing.assert_array_equal(scribbles.data, before)

    pred = viewer.layers["cells" + PREDICTION_SUFFIX]
    assert pred.data.shape == (128, 128)
    assert set(np.unique(pred.data)) <= {1, 2}
    accuracy = ((pred.data == 1) == truth).mean()
    assert accuracy > 0.75, accuracy
    prob = viewer.layers["cells" + PROBABILITY_SUFFIX]
    assert prob.data.shape == (2, 128, 128)
    np.testing.assert_allclose(prob.data.sum(0), 1, atol=1e-4)
    np.testing.assert_array_equal(prob.data.argmax(0) + 1, pred.data)

    # a second stroke refits on the new scribbles (more pixels)
    n_before = w.segmenter.n_samples_fit_
    _paint_from_truth(scribbles, truth, seed=1)
    qtbot.waitUntil(lambda: w.segmenter.n_samples_fit_ > n_before and not w.runner.busy, timeout=60_000)
    assert w.segmenter.n_samples_fit_ == int((scribbles.data > 0).sum())


def test_a_live_refit_due_while_a_job_runs_comes_after_it(make_napari_viewer, nuclei, qtbot, wait_idle):
    # a stroke's refit is queued (QTimer) while the runner is idle; if a job has started by the
    # time it comes due, the refit must wait for that job, not be refused and lost
    viewer, w, scribbles, truth = _painted_not_live(make_napari_viewer, nuclei)
    assert w.fit_predict()                      # a job runs ...
    _paint_from_truth(scribbles, truth, seed=1)
    w.live.setChecked(True)
    assert w.runner.busy
    w._live_fit()                               # ... when a queued live refit comes due
    wait_idle(w.runner)
    qtbot.waitUntil(lambda: not w.runner.busy
                    and w.segmenter.n_samples_fit_ == int((scribbles.data > 0).sum()), timeout=60_000)


def test_failing_fit_leaves_scribbles_and_prediction(make_napari_viewer, nuclei, wait_idle):
    viewer, w, scribbles, truth = _painted_not_live(make_napari_viewer, nuclei)
    w.fit_button.click()
    wait_idle(w.runner)
    pred = viewer.layers["cells" + PREDICTION_SUFFIX].data.copy()

    scribbles.data = np.where(scribbles.data == 2, 0, scribbles.data).astype(scribbles.data.dtype)  # one class left
    one_class = scribbles.data.copy()
    assert w.fit_predict()
    wait_idle(w.runner)
    assert w.runner.last_outcome == "error"
    assert "two classes" in str(w.runner.last_error)
    np.testing.assert_array_equal(scribbles.data, one_class)
    np.testing.assert_array_equal(viewer.layers["cells" + PREDICTION_SUFFIX].data, pred)
    assert "left as they were" in w.status.text()
    assert w.fit_button.isEnabled()


def test_stack_visible_plane_then_whole_stack_and_save_load(make_napari_viewer, nuclei, wait_idle, tmp_path):
    image, truth = nuclei
    stack = np.stack([image, image[::-1], image[:, ::-1]])
    viewer = make_napari_viewer()
    viewer.add_image(stack, name="stack")
    w = _widget(viewer)
    w.live.setChecked(False)
    scribbles = w.new_scribbles()
    assert scribbles.data.shape == (3, 128, 128)
    viewer.dims.set_current_step(0, 1)
    _paint_from_truth(scribbles, truth[::-1], plane=(1,))
    assert (scribbles.data[1] > 0).any() and not (scribbles.data[[0, 2]] > 0).any()
    w.fit_button.click()
    wait_idle(w.runner)
    pred = viewer.layers["stack" + PREDICTION_SUFFIX]
    assert pred.data.shape == (3, 128, 128)
    assert (pred.data[1] > 0).all() and not (pred.data[[0, 2]] > 0).any()   # the visible plane only

    w.whole_stack.setChecked(True)
    w.target.select("stack")
    w.apply_button.click()
    wait_idle(w.runner)
    assert (pred.data > 0).all()
    flipped = ((pred.data[2] == 1) == truth[:, ::-1]).mean()
    assert flipped > 0.7

    # save, load into a fresh widget, apply to another layer: the same prediction
    path = w.save_segmenter(tmp_path / "seg.zip")
    viewer.add_image(image, name="single")
    w2 = _widget(viewer)
    w2.load_segmenter(path)
    assert w2.apply(viewer.layers["single"])
    wait_idle(w2.runner)
    np.testing.assert_array_equal(viewer.layers["single" + PREDICTION_SUFFIX].data, pred.data[0])
