"""``ForensicModel.compile``: the same embeddings as eager, and a clear fallback when it fails."""
from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch

from napari_siamforensic.core.config import ModelConfig
from napari_siamforensic.core.devices import make_generator
from napari_siamforensic.core.model import SiameseNet
from napari_siamforensic.core.scoring import COMPILED_CHUNK, ForensicModel


@pytest.fixture(scope="module")
def eager():
    net = SiameseNet(ModelConfig())
    net.reset_parameters(make_generator(3))
    return ForensicModel(net, "cpu", precision="fp32")


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.rand(COMPILED_CHUNK + 5, 1, 128, 128, generator=g)      # not a whole number of chunks


def test_compiled_embeddings_equal_eager_ones(eager, batch):
    want = eager.embed_tensor(batch)
    fast = copy.copy(eager).compile()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = fast.embed_tensor(batch)
    if not fast.is_compiled:     # this machine cannot compile (no C++ compiler): say so, do not pass
        pytest.skip(f"torch.compile does not work here: {caught[0].message if caught else '?'}")
    assert got.shape == want.shape
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(fast.embed_tensor(batch[:3]).numpy(), want[:3].numpy(), atol=1e-4, rtol=1e-4)
    assert not eager.is_compiled         # the copy was compiled, not the original


def test_a_failing_compile_warns_and_stays_eager(eager, batch, monkeypatch):
    def broken(*args, **kwargs):
        def forward(x):
            raise RuntimeError("no C++ compiler found\nmore detail")
        return forward

    monkeypatch.setattr(torch, "compile", broken)
    m = copy.copy(eager).compile()
    assert m.is_compiled
    with pytest.warns(RuntimeWarning, match="torch.compile failed, embedding without it: RuntimeError: no C"):
        got = m.embed_tensor(batch[:10])
    assert not m.is_compiled
    np.testing.assert_array_equal(got.numpy(), eager.embed_tensor(batch[:10]).numpy())


def test_screen_compile_option_compiles_a_copy(eager, monkeypatch):
    from napari_siamforensic.screening import screen

    calls = []
    real = ForensicModel.compile

    def spy(self):
        calls.append(self)
        return real(self)

    def broken(*args, **kwargs):
        def forward(x):
            raise RuntimeError("compiler missing")
        return forward

    monkeypatch.setattr(ForensicModel, "compile", spy)
    monkeypatch.setattr(torch, "compile", broken)
    rng = np.random.default_rng(0)
    arrays = [rng.random((64, 64)) for _ in range(3)]
    with pytest.warns(RuntimeWarning, match="compiler missing"):
        res = screen(arrays, eager, compile=True, localize=0)
    assert len(calls) == 1 and calls[0] is not eager and not eager.is_compiled
    assert res.info["compiled"] is False          # it fell back: the report says so
    plain = screen(arrays, eager, localize=0)
    np.testing.assert_allclose(res.pairs["distance"], plain.pairs["distance"], rtol=1e-6)
    with pytest.raises(TypeError, match="compile"):
        screen(arrays, eager, compile="yes")
