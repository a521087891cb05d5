"""Fixtures for the screening tests: a deterministic model (no training needed) and scenes.

A freshly initialised network from a fixed generator is a fixed deterministic function, so an
exact posed copy (mirrored, rotated, inverted) of an image has distance ~0 to it through the
pose embeddings, while different images do not: enough to test the screening machinery in
seconds. How well a *trained* model finds *manipulated* copies is measured in benchmarks/.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_siamforensic.core.config import ModelConfig
from napari_siamforensic.core.devices import make_generator
from napari_siamforensic.core.model import SiameseNet
from napari_siamforensic.core.scoring import ForensicModel


def scene(seed: int, size: int = 160) -> np.ndarray:
    """A textured gray image (uint16): random blobs on a smooth background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    img = 0.2 + 0.1 * np.sin(xx / (7 + seed % 5)) * np.cos(yy / 9)
    for _ in range(25):
        cy, cx, r = rng.uniform(0, size, 2).tolist() + [rng.uniform(3, 12)]
        img += rng.uniform(0.2, 0.8) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    return (np.clip(img / img.max(), 0, 1) * 65535).astype(np.uint16)


def scene8(seed: int, size: int = 160) -> np.ndarray:
    return (scene(seed, size) // 256).astype(np.uint8)


@pytest.fixture(scope="session")
def model() -> ForensicModel:
    torch.set_num_threads(min(2, torch.get_num_threads()))
    net = SiameseNet(ModelConfig())
    net.reset_parameters(make_generator(0))
    return ForensicModel(net, "cpu", batch_size=128)


@pytest.fixture(scope="session")
def model_path(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    model.save(str(path))
    return path
