"""Fixtures of the engine tests: generated images, small configurations, one trained model.

Everything runs on the ``--device`` of the top-level conftest (CPU by default). Images are
generated here; no file outside the repository is read.
"""
from __future__ import annotations

import numpy as np
import pytest

import napari_siamforensic as sf

# A network small enough to train in milliseconds on a CPU core: the training machinery
# (sampling, checkpoints, resume) does not depend on the size of the net.
SMALL_MODEL = sf.ModelConfig(input_size=64, channels=(8, 16), hidden=64, embedding_dim=32)


def scene(seed: int, size=160, dtype=np.uint16) -> np.ndarray:
    """A textured gray image ``(H, W)``: random Gaussian blobs on a smooth background.

    ``size`` is a side or an ``(H, W)`` pair. Different seeds give clearly different images.
    """
    h, w = (size, size) if np.isscalar(size) else size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    img = 0.2 + 0.1 * np.sin(xx / (7 + seed % 5)) * np.cos(yy / 9)
    for _ in range(max(25, h * w // 1000)):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(3, 12)
        y0, y1 = max(0, int(cy - 4 * r)), min(h, int(cy + 4 * r) + 1)     # the blob's support
        x0, x1 = max(0, int(cx - 4 * r)), min(w, int(cx + 4 * r) + 1)
        win = (yy[y0:y1, x0:x1] - cy) ** 2 + (xx[y0:y1, x0:x1] - cx) ** 2
        img[y0:y1, x0:x1] += rng.uniform(0.2, 0.8) * np.exp(-win / (2 * r * r))
    img = np.clip(img / img.max(), 0, 1)
    if np.issubdtype(np.dtype(dtype), np.integer):
        return (img * np.iinfo(dtype).max).astype(dtype)
    return img.astype(dtype)


@pytest.fixture(scope="session")
def make_scene():
    """The :func:`scene` generator, for tests that need images of their own."""
    return scene


@pytest.fixture(scope="session")
def small_train_config(device):
    """A ``TrainConfig`` for the small net: fp32 (bit-exact on the CPU), tiny batches."""
    return sf.TrainConfig(steps=2, batch_size=4, validation_triplets=8, eval_every=1,
                          precision="fp32", device=device, seed=0, patch_size=128, model=SMALL_MODEL)


@pytest.fixture(scope="session")
def train_images():
    """Four training sources of different sizes, all larger than a 256 px patch in one side."""
    return [scene(0, 300), scene(1, (260, 340)), scene(2, 280, np.float32), scene(3, 270, np.uint8)]


@pytest.fixture(scope="session")
def trained_model(device, train_images):
    """The paper's full-size network after two training steps (shared, never modified)."""
    config = sf.TrainConfig(steps=2, batch_size=4, validation_triplets=8, precision="fp32",
                            device=device, seed=0)
    return sf.train(train_images, config)
