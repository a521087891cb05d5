"""Screenshots of the widgets for docs/widgets.md, taken from a real napari viewer.

Run under an X server (never QT_QPA_PLATFORM=offscreen: the canvas renders black there):

    xvfb-run -a python docs/make_screenshots.py

Uses the bundled default model when installed, otherwise a randomly initialised network
(the screenshots then show the workflow, not the trained model's quality). Each shot is
checked for real content: it must have many distinct colours, not a black canvas.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("SIAMFORENSIC_SYNC_JOBS", "1")     # jobs run inline: no waiting for threads

import numpy as np  # noqa: E402

OUT = Path(__file__).parent / "images"
MIN_COLOURS = 2000


def check(path: Path) -> int:
    from PIL import Image

    arr = np.asarray(Image.open(path).convert("RGB"))
    colours = len(np.unique(arr.reshape(-1, 3), axis=0))
    if colours < MIN_COLOURS:
        raise SystemExit(f"{path}: only {colours} distinct colours - is the canvas black?")
    return colours


def model_or_random():
    from napari_siamforensic._widgets._models import registry
    from napari_siamforensic.core.config import ModelConfig
    from napari_siamforensic.core.devices import make_generator
    from napari_siamforensic.core.model import SiameseNet
    from napari_siamforensic.core.scoring import ForensicModel

    try:
        registry.get()
    except ValueError:
        net = SiameseNet(ModelConfig())
        net.reset_parameters(make_generator(0))
        registry.set(ForensicModel(net, "cpu"), "random-init (no bundled model)")


def shot(viewer, name: str) -> None:
    from qtpy.QtWidgets import QApplication

    for _ in range(20):
        QApplication.processEvents()
    path = OUT / name
    viewer.window.screenshot(str(path), canvas_only=False, flash=False)
    print(f"{path}: {check(path)} colours")


def main() -> int:
    import napari

    from napari_siamforensic.core.synthetic import labelled_scene
    from napari_siamforensic._sample_data import SAMPLE_SEED

    OUT.mkdir(parents=True, exist_ok=True)
    model_or_random()

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1500, 950)
    viewer.open_sample("napari-siamforensic", "planted-duplicates")
    _, dup = viewer.window.add_plugin_dock_widget("napari-siamforensic", "Find duplicates")
    dup.compute()
    dup.pairs.sortItems(2)
    dup._pair_clicked(0)
    shot(viewer, "duplicates.png")
    viewer.close()

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1500, 950)
    viewer.open_sample("napari-siamforensic", "scribble-nuclei")
    image, truth = labelled_scene("nuclei", SAMPLE_SEED + 100, (512, 512))
    _, seg = viewer.window.add_plugin_dock_widget("napari-siamforensic", "Segment by scribbles")
    seg.live.setChecked(False)
    scribbles = seg.new_scribbles()
    rng = np.random.default_rng(0)
    with scribbles.block_history():
        for cls, mask in ((1, truth > 0), (2, truth == 0)):
            ys, xs = np.nonzero(mask)
            for k in rng.choice(ys.size, 60, replace=False):
                scribbles.paint((int(ys[k]), int(xs[k])), cls, refresh=False)
    scribbles.refresh()
    seg.fit_predict()
    shot(viewer, "segment.png")
    viewer.close()

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1500, 950)
    viewer.open_sample("napari-siamforensic", "planted-duplicates")
    _, tr = viewer.window.add_plugin_dock_widget("napari-siamforensic", "Train")
    tr.preview(n=6)
    viewer.layers.selection.active = viewer.layers[-1]
    shot(viewer, "train.png")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
