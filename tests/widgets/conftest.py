"""Fixtures for the widget tests: a real napari viewer (pytest-xvfb gives the X server)."""
import importlib.util
import time

import pytest

# Without napari (or pytest-qt) the core suite still runs: these tests are simply not collected.
if importlib.util.find_spec("napari") is None or importlib.util.find_spec("pytestqt") is None:
    collect_ignore_glob = ["test_*.py"]

from napari_siamforensic.core.synthetic import generate_scene  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Keep the widget tests light on a shared 2-core machine (workers inherit this)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _fresh_registry():
    """Every test starts without a shared model (the registry is a module singleton)."""
    from napari_siamforensic._widgets._models import registry

    registry.set(None)
    yield
    registry.set(None)


@pytest.fixture
def scenes():
    """Four small generated gray scenes, (96, 96) float32 in [0, 1]."""
    kinds = ("nuclei", "cells", "fibres", "blot")
    return [generate_scene(k, seed=100 + i, size=(96, 96)) for i, k in enumerate(kinds)]


@pytest.fixture
def wait_idle(qtbot):
    """``wait_idle(runner)``: process Qt events until the runner's job has ended."""
    def _wait(runner, timeout=120.0):
        deadline = time.monotonic() + timeout
        while runner.busy and time.monotonic() < deadline:
            qtbot.wait(20)
        assert not runner.busy, f"{runner.name} still running after {timeout} s"

    return _wait


@pytest.fixture
def tiny_model():
    """A small untrained ForensicModel (input 32 px) that scores images in milliseconds."""
    from napari_siamforensic.core.config import ModelConfig
    from napari_siamforensic.core.model import SiameseNet
    from napari_siamforensic.core.scoring import ForensicModel
    from napari_siamforensic.core.devices import make_generator

    net = SiameseNet(ModelConfig(input_size=32, channels=(4, 8), hidden=16, embedding_dim=8))
    net.reset_parameters(make_generator(0))
    return ForensicModel(net, "cpu")


@pytest.fixture
def no_default_model(monkeypatch):
    """Pretend this installation has no bundled default model."""
    from napari_siamforensic._widgets import _models

    def missing(*args, **kwargs):
        raise ValueError("this installation has no bundled default model")

    monkeypatch.setattr(_models, "load_model", missing)
