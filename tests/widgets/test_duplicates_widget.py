"""The Duplicates widget in a real viewer: heatmap, pairs table, side-by-side view, export."""
import numpy as np
import pytest

from napari_siamforensic.screening.verify import MATCH_THRESHOLD

pytest.importorskip("napari")

from napari.layers import Image, Shapes  # noqa: E402
from qtpy.QtCore import Qt  # noqa: E402

from napari_siamforensic._widgets._models import registry  # noqa: E402
from napari_siamforensic._widgets.duplicates import GAP_PX, PAIR_PREFIX, DuplicatesWidget  # noqa: E402

pytestmark = pytest.mark.gui


@pytest.fixture
def dup_viewer(make_napari_viewer, scenes):
    viewer = make_napari_viewer()
    names = ["nuclei", "cells", "fibres"]
    for name, s in zip(names, scenes):
        viewer.add_image(s, name=name)
    viewer.add_image(np.rot90(scenes[0])[:, ::-1].copy(), name="nuclei copy")
    return viewer


def test_matrix_pairs_and_side_by_side(dup_viewer, tiny_model, wait_idle, tmp_path):
    registry.set(tiny_model, "tiny")
    w = DuplicatesWidget(dup_viewer)
    dup_viewer.window.add_dock_widget(w)
    w.compute_button.click()
    wait_idle(w.runner)
    assert w.runner.last_outcome == "finished", w.runner.last_error

    names = ["nuclei", "cells", "fibres", "nuclei copy"]
    assert w.names == names
    m = w.matrix
    assert m.shape == (4, 4)
    np.testing.assert_allclose(m, m.T, atol=1e-5)
    np.testing.assert_allclose(np.diag(m), 0)
    assert (m[~np.eye(4, dtype=bool)] > 0).all()
    np.testing.assert_allclose(m, tiny_model.pairwise([lay.data for lay in dup_viewer.layers],
                                                      poses="dihedral+invert"), atol=1e-4)
    # heatmap: names on both axes, the value in each cell
    h = w.heatmap
    assert h.rowCount() == h.columnCount() == 4
    assert [h.horizontalHeaderItem(i).text() for i in range(4)] == names
    assert [h.verticalHeaderItem(i).text() for i in range(4)] == names
    assert float(h.item(0, 3).text()) == pytest.approx(m[0, 3], abs=0.006)

    # pairs: all 6 of 4 images, sortable by distance
    t = w.pairs
    assert t.rowCount() == len(w.result.pairs) == 6
    t.sortItems(2, Qt.DescendingOrder)
    shown = [float(t.item(r, 2).text()) for r in range(6)]
    assert shown == sorted(shown, reverse=True)
    t.sortItems(2, Qt.AscendingOrder)
    assert float(t.item(0, 2).text()) == pytest.approx(w.result.pairs["distance"].min(), abs=1e-3)

    # clicking a pair: the two images side by side, regions as Shapes, the rest hidden
    a, b, r = t.item(0, 0).data(Qt.UserRole)
    w._pair_clicked(0)
    pair = w.pair_layers()
    images = [lay for lay in pair if isinstance(lay, Image)]
    assert len(images) == 2
    assert images[0].name == f"{PAIR_PREFIX}A: {w.names[a]}" and images[1].name == f"{PAIR_PREFIX}B: {w.names[b]}"
    np.testing.assert_allclose(images[1].translate, (0, images[0].data.shape[1] + GAP_PX))
    row = w.result.pairs.iloc[r]
    shapes = [lay for lay in pair if isinstance(lay, Shapes)]
    assert {a, b} == {0, 3}     # the planted mirrored + rotated copy ranks first (poses make it exact)
    assert "mirrored" in t.item(0, 6).text()
    assert t.horizontalHeaderItem(3).text() == "crop f" and t.item(0, 3).text() == "-"   # layers: no crop windows
    assert t.horizontalHeaderItem(4).text() == "match" and float(t.item(0, 4).text()) >= MATCH_THRESHOLD
    if isinstance(row["box_a"], (tuple, list)):     # localised: its boxes are drawn
        x0, y0, x1, y1 = row["box_a"]
        assert shapes and shapes[0].data[0].min(axis=0).tolist() == [y0, x0]
        assert shapes[0].data[0].max(axis=0).tolist() == [y1, x1]
    else:
        assert not shapes
    assert all(not dup_viewer.layers[n].visible for n in names)
    w.restore_button.click()
    assert not w.pair_layers()
    assert all(dup_viewer.layers[n].visible for n in names)

    # heatmap click shows that pair
    w._heatmap_clicked(1, 2)
    assert {lay.name for lay in w.pair_layers() if isinstance(lay, Image)} == {
        f"{PAIR_PREFIX}A: cells", f"{PAIR_PREFIX}B: fibres"}
    w.restore_layers()

    # export
    html = w.export(tmp_path / "report.html")
    csv = w.export(tmp_path / "pairs.csv")
    assert "<html" in html.read_text().lower()
    import pandas as pd

    assert len(pd.read_csv(csv)) == 6


def test_without_a_model_says_what_to_do(dup_viewer, no_default_model, wait_idle):
    w = DuplicatesWidget(dup_viewer)
    assert w.compute()
    wait_idle(w.runner)
    assert w.runner.last_outcome == "error"
    assert "Train" in str(w.runner.last_error) and "model file" in str(w.runner.last_error)
    assert w.result is None and w.pairs.rowCount() == 0
    assert len(dup_viewer.layers) == 4


def test_one_image_is_refused(make_napari_viewer, scenes, tiny_model):
    viewer = make_napari_viewer()
    viewer.add_image(scenes[0])
    registry.set(tiny_model)
    w = DuplicatesWidget(viewer)
    assert w.compute() is False
    assert not w.runner.busy


def test_a_stack_gives_one_item_per_plane(make_napari_viewer, scenes, tiny_model, wait_idle):
    viewer = make_napari_viewer()
    viewer.add_image(np.stack(scenes[:3]), name="stack")
    registry.set(tiny_model)
    w = DuplicatesWidget(viewer)
    w.compute()
    wait_idle(w.runner)
    assert w.names == ["stack[0]", "stack[1]", "stack[2]"]
    assert w.matrix.shape == (3, 3)


def test_pose_penalty_box_reaches_the_scores_and_leaves_the_model_alone(dup_viewer, tiny_model, wait_idle):
    import copy

    registry.set(tiny_model, "tiny")
    own = tiny_model.pose_penalty
    w = DuplicatesWidget(dup_viewer)
    assert w.penalty.text() == "the model's own"
    w.penalty.setValue(0.5)
    w.compute()
    wait_idle(w.runner)
    assert w.runner.last_outcome == "finished", w.runner.last_error
    assert tiny_model.pose_penalty == own                  # the shared model is untouched
    ref = copy.copy(tiny_model)
    ref.pose_penalty = 0.5
    images = [lay.data for lay in dup_viewer.layers]
    want = ref.pairwise(images, poses="dihedral+invert")
    np.testing.assert_allclose(w.matrix, want, atol=1e-4)
    # the pairs table and the heatmap agree (every pose is embedded for layers)
    for a, b, d in zip(w.result.pairs["a"], w.result.pairs["b"], w.result.pairs["distance"]):
        assert d == pytest.approx(want[a, b], abs=1e-4)
    assert not np.allclose(want, tiny_model.pairwise(images, poses="dihedral+invert"), atol=1e-3)


def test_a_model_with_a_pixel_check_fuses_it_into_the_table_and_the_heatmap(dup_viewer, tiny_model, wait_idle):
    import copy

    fused = copy.copy(tiny_model)
    fused.pixel_check = (3.0, 0.5)
    registry.set(fused, "tiny with a pixel check")
    seen = []
    w = DuplicatesWidget(dup_viewer)
    original = w._on_item
    w._on_item = lambda item: (seen.append(item), original(item))
    w.compute()
    wait_idle(w.runner)
    assert w.runner.last_outcome == "finished", w.runner.last_error
    images = [lay.data for lay in dup_viewer.layers]
    want = fused.pairwise(images, poses="dihedral+invert")
    np.testing.assert_allclose(w.matrix, want, atol=1e-4)
    assert not np.allclose(want, fused.pairwise(images, poses="dihedral+invert", pixels=False), atol=1e-3)
    for a, b, d in zip(w.result.pairs["a"], w.result.pairs["b"], w.result.pairs["distance"]):
        assert d == pytest.approx(want[a, b], abs=1e-4)       # the table's distance is the heatmap's
    best = w.result.pairs.iloc[0]
    assert {w.names[int(best["a"])], w.names[int(best["b"])]} == {"nuclei", "nuclei copy"}
    # the matrix's pixel checks were reported as they went (the job can be cancelled between them)
    assert any(item[0] == "progress" and item[1].stage == "pairwise" for item in seen)


def test_the_overlap_box_finds_two_views_that_share_a_region(make_napari_viewer, tiny_model, wait_idle):
    """Two layers that show overlapping parts of one picture (neither holds the other): with the
    box ticked the pair is verified by its pixels as a shared region; unticked it is not."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(3)
    big = ndi.gaussian_filter(rng.standard_normal((260, 300)), 1.5).astype(np.float32)
    viewer = make_napari_viewer()
    viewer.add_image(big[:170, :190], name="left view")
    viewer.add_image(np.ascontiguousarray(big[70:240, 90:280]), name="right view")
    viewer.add_image(ndi.gaussian_filter(rng.standard_normal((170, 190)), 1.5).astype(np.float32), name="other")
    registry.set(tiny_model, "tiny")
    w = DuplicatesWidget(viewer)
    assert not w.overlap.isChecked()
    found = {}
    for ticked in (False, True):
        w.overlap.setChecked(ticked)
        w.compute()
        wait_idle(w.runner)
        assert w.runner.last_outcome == "finished", w.runner.last_error
        pairs = w.result.pairs
        row = pairs[(pairs["a"] + pairs["b"]) == 1].iloc[0]                  # left and right view
        found[ticked] = (float(row["match"]), str(row["transform"]))
    assert found[False][0] < MATCH_THRESHOLD and "shared region" not in found[False][1]
    assert found[True][0] >= MATCH_THRESHOLD and found[True][1].endswith("shared region"), found


def test_search_further_reaches_the_screen(make_napari_viewer, tiny_model, wait_idle, scenes, monkeypatch, tmp_path):
    """The "search further" box is the screen's ``wider``, "search by texture" its ``texture``,
    "faster crop windows" its ``crops="features"`` and "faster check" its ``gate_nearest``: passed
    on as set, and the result says which were used."""
    import napari_siamforensic.screening as screening
    from PIL import Image as PILImage

    for i, s in enumerate(scenes):
        PILImage.fromarray((np.asarray(s, np.float32) / max(1.0, float(np.max(s))) * 255).astype(np.uint8)).save(
            tmp_path / f"s{i}.png")
    seen = []
    real = screening.iter_screen

    def spy(*args, **kwargs):
        seen.append((kwargs["wider"], kwargs["texture"], kwargs["crops"], kwargs["gate_nearest"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(screening, "iter_screen", spy)
    registry.set(tiny_model, "tiny")
    w = DuplicatesWidget(make_napari_viewer())
    w.paths.setText(str(tmp_path))
    from napari_siamforensic.screening import DEFAULT_TEXTURE, DEFAULT_WIDER

    assert w.wider.value() == DEFAULT_WIDER           # the screen's own defaults
    assert w.texture.value() == DEFAULT_TEXTURE
    assert not w.fast_crops.isChecked() and not w.gate.isChecked()
    for value, tex, fast in ((0, 3, False), (20, 0, True)):
        w.wider.setValue(value)
        w.texture.setValue(tex)
        w.fast_crops.setChecked(fast)
        w.gate.setChecked(fast)
        w.compute()
        wait_idle(w.runner)
        assert w.runner.last_outcome == "finished", w.runner.last_error
        assert w.result.info["wider"] == value and w.result.info["texture"] == tex
        assert w.result.info["crop_layout"] == ("features" if fast else "pixels")
        assert w.result.info["gate_nearest"] is fast
    assert seen == [(0, 3, "pixels", False), (20, 0, "features", True)]
    # layers alone: every pair gets the full check whatever the box says, as the heatmap beside it does
    w.paths.setText("")
    for i, s in enumerate(scenes[:3]):
        w.viewer.add_image(s, name=f"layer {i}")
    w.compute()
    wait_idle(w.runner)
    assert w.runner.last_outcome == "finished", w.runner.last_error
    assert w.gate.isChecked() and seen[-1][3] is False and not w.result.info["gate_nearest"]
    assert np.isfinite(w.result.pairs["match"]).all()


@pytest.mark.parametrize("available", [True, False])
def test_keep_freed_memory_box(dup_viewer, tiny_model, wait_idle, monkeypatch, available):
    """The "keep freed memory" box calls core.devices.retain_freed_memory at the next Compute (not
    before, not when unticked); once applied it stays ticked and disabled, in this widget and in
    any opened later (it is process-wide and cannot be undone); where the allocator does not
    allow it the box is unticked and disabled, and the screen runs all the same."""
    from napari_siamforensic.core import devices

    monkeypatch.setattr(devices, "_RETAINED", False)
    calls = []

    def spy():
        calls.append(1)
        if available:
            devices._RETAINED = True
        return available

    monkeypatch.setattr(devices, "retain_freed_memory", spy)
    registry.set(tiny_model, "tiny")
    w = DuplicatesWidget(dup_viewer)
    assert not w.keep_memory.isChecked() and w.keep_memory.isEnabled()
    w.compute()
    wait_idle(w.runner)
    assert w.runner.last_outcome == "finished", w.runner.last_error
    assert calls == []                                   # unticked: the allocator is left alone
    w.keep_memory.setChecked(True)
    assert calls == []                                   # ticking alone does nothing yet
    w.compute()
    wait_idle(w.runner)
    assert w.runner.last_outcome == "finished", w.runner.last_error
    assert calls == [1]
    assert w.keep_memory.isChecked() is available and not w.keep_memory.isEnabled()
    w.compute()
    wait_idle(w.runner)
    assert calls == [1]                                  # asked once
    later = DuplicatesWidget(dup_viewer)
    assert later.keep_memory.isChecked() is available and later.keep_memory.isEnabled() is (not available)
    assert ("is kept" in later.keep_memory.text()) is available
