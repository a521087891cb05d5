"""Sample data for napari's File > Open Sample menu: images of our own, generated on the fly.

* :func:`planted_duplicates`: eight "figure panels" of different kinds; three of them are
  manipulated copies of others (what the Duplicates widget should find). Which ones, and how
  they were changed, is in each layer's ``metadata["planted"]`` (and in docs/widgets.md).
* :func:`scribble_image`: a microscopy-like image of nuclei, ready to paint on with the
  Segment widget.

Seeds lie between the training pool (below 1,000,000) and the evaluation range (10,000,000
and up), so no sample is a training or an evaluation image.

This module imports neither napari nor Qt: the functions return napari ``LayerData`` tuples.
"""
from __future__ import annotations

import io

import numpy as np

from .core.synthetic import generate_scene, labelled_scene

SAMPLE_SEED = 5_000_000
PANEL_SIZE = (256, 256)


def _gamma(image: np.ndarray, gamma: float) -> np.ndarray:
    return np.clip(image, 0, 1) ** gamma


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("L"), np.float32) / 255.0


def _rescale(image: np.ndarray, factor: float) -> np.ndarray:
    from skimage.transform import rescale

    return rescale(image, factor, order=1, anti_aliasing=factor < 1).astype(np.float32)


def planted_duplicates() -> list[tuple]:
    """Eight gray panels, ``(H, W)`` float32 in [0, 1]; panels 6-8 are manipulated copies.

    * panel 6 = panel 1 mirrored, rotated by 90 degrees and cropped;
    * panel 7 = panel 3 cropped, rescaled by 0.7 and gamma-changed (0.6);
    * panel 8 = panel 5 with inverted contrast, JPEG quality 30.
    """
    kinds = ("nuclei", "tissue", "blot", "fibres", "em")
    originals = [generate_scene(k, SAMPLE_SEED + i, PANEL_SIZE) for i, k in enumerate(kinds)]
    p1, _, p3, _, p5 = originals
    copies = [
        (np.rot90(p1[:, ::-1])[20:236, 10:226], "copy of panel 1: mirrored, rotated 90°, cropped"),
        (_gamma(_rescale(p3[30:230, 0:200], 0.7), 0.6), "copy of panel 3: cropped, rescaled 0.7, gamma 0.6"),
        (_jpeg(1.0 - p5, 30), "copy of panel 5: contrast inverted, JPEG quality 30"),
    ]
    layers = []
    for i, (img, kind) in enumerate(zip(originals, kinds), start=1):
        layers.append((img.astype(np.float32), {"name": f"panel {i}", "colormap": "gray",
                                                "metadata": {"kind": kind, "planted": None}}, "image"))
    for j, (img, what) in enumerate(copies, start=len(originals) + 1):
        layers.append((np.ascontiguousarray(img, np.float32), {"name": f"panel {j}", "colormap": "gray",
                                                               "metadata": {"planted": what}}, "image"))
    return layers


def scribble_image() -> list[tuple]:
    """A 512 x 512 microscopy-like image of nuclei (float32 in [0, 1]) to paint scribbles on."""
    image, _ = labelled_scene("nuclei", SAMPLE_SEED + 100, (512, 512))
    return [(image, {"name": "nuclei (paint scribbles)", "colormap": "gray"}, "image")]


__all__ = ["planted_duplicates", "scribble_image"]
