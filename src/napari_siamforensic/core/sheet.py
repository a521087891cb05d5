"""A contact sheet of sampled training triplets, so a person can look at what the net learns from.

The sheet has three rows of ``n`` tiles: the anchors, their "same" partners (deformed copies)
and the "different" images, all drawn exactly as training draws them
(:class:`~napari_siamforensic.core.train.TripletSampler`, clutter included). Column ``j`` is
one triplet. A narrow label column on the left names the rows.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .._validation import check_positive_int
from .config import DeformConfig, TrainConfig

#: Pixels between tiles and around the sheet.
GAP = 4
#: Width of the label column on the left.
LABEL_WIDTH = 72
ROW_NAMES = ("anchor", "same", "different")
MAX_TRIPLETS = 64


def sheet_size(n: int, tile: int = 128) -> tuple[int, int]:
    """``(height, width)`` in pixels of a sheet of ``n`` triplets with ``tile`` px tiles."""
    return 3 * tile + 4 * GAP, LABEL_WIDTH + n * tile + (n + 1) * GAP


def _as_train_config(config) -> TrainConfig:
    if config is None:
        return TrainConfig(validation_triplets=0)
    if isinstance(config, DeformConfig):
        return TrainConfig(deform=config, validation_triplets=0)
    if isinstance(config, TrainConfig):
        return config
    raise TypeError(f"`config` must be a TrainConfig, a DeformConfig or None, got {type(config).__name__}")


def sample_triplets(images, *, n: int = 8, config=None, seed: int = 0) -> np.ndarray:
    """Draw ``n`` training triplets as numpy: ``(3, n, S, S)`` float32 in [0, 1] (S = 128),
    rows anchor, same, different.

    ``images`` are arrays, image files or folders, as for training. ``config`` is a
    :class:`TrainConfig` (its ``deform``, ``patch_size``, ``hard_negative_fraction``,
    ``p_deform_negative`` and ``device`` are used) or a :class:`DeformConfig`.
    """
    import torch

    from .data import gather_training_images
    from .devices import make_generator, resolve_device
    from .train import TripletSampler

    n = check_positive_int(n, "n")
    if n > MAX_TRIPLETS:
        raise ValueError(f"`n` must be at most {MAX_TRIPLETS} triplets per sheet, got {n}")
    seed = check_positive_int(seed, "seed", 0)
    cfg = _as_train_config(config)
    arrays, groups = gather_training_images(images)
    device = resolve_device(cfg.device)
    sampler = TripletSampler(arrays, groups, cfg, device)
    with torch.no_grad():
        anchor, same, different = sampler.sample(n, make_generator(seed))
    stack = torch.stack([anchor[:, 0], same[:, 0], different[:, 0]]).float().clamp(0, 1)
    return stack.cpu().numpy()


def write_contact_sheet(images, path: str | os.PathLike, *, n: int = 8, config=None, seed: int = 0) -> Path:
    """Write a PNG contact sheet of ``n`` sampled training triplets.

    Parameters
    ----------
    images : array, sequence of arrays, image files or folders
        The training sources (as for :func:`~napari_siamforensic.iter_train`).
    path : str or path
        Where the PNG goes (parent folders are created). The file is always PNG.
    n : int
        Triplets (columns), 1 to 64.
    config : TrainConfig or DeformConfig, optional
        The deformations to show (default ``DeformConfig()``).
    seed : int
        Same seed, same sheet.

    Returns
    -------
    Path of the written file. Its size is :func:`sheet_size` ``(n)``: 3 rows of 128 px tiles
    (anchor, same, different) with 4 px gaps, plus a 72 px label column; 8-bit gray.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from PIL import Image
    >>> imgs = [np.random.default_rng(i).random((300, 300)) for i in range(2)]
    >>> out = write_contact_sheet(imgs, os.path.join(tempfile.mkdtemp(), "sheet.png"), n=2)
    >>> Image.open(out).size == sheet_size(2)[::-1]
    True
    """
    from PIL import Image, ImageDraw, ImageFont

    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`path` must be a file path, got {type(path).__name__}")
    tiles = sample_triplets(images, n=n, config=config, seed=seed)       # (3, n, S, S)
    _, n, s, _ = tiles.shape
    h, w = sheet_size(n, s)
    sheet = np.full((h, w), 40, np.uint8)                                # dark gray background
    for r in range(3):
        y = GAP + r * (s + GAP)
        for c in range(n):
            x = LABEL_WIDTH + GAP + c * (s + GAP)
            sheet[y:y + s, x:x + s] = np.round(tiles[r, c] * 255).astype(np.uint8)
    img = Image.fromarray(sheet, mode="L")
    draw = ImageDraw.Draw(img)
    try:
        font = ImageFont.load_default(size=14)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    for r, name in enumerate(ROW_NAMES):
        draw.text((6, GAP + r * (s + GAP) + s // 2 - 8), name, fill=230, font=font)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out, format="PNG")
    return out


__all__ = ["write_contact_sheet", "sample_triplets", "sheet_size"]
