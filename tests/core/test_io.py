"""Safe model files: safetensors + JSON config; foreign, broken or mismatched files are refused."""
from __future__ import annotations

import ast
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import napari_siamforensic as sf
from napari_siamforensic.core import io as sf_io
from napari_siamforensic.core.model import SiameseNet
from napari_siamforensic.core.scoring import ForensicModel

from .conftest import SMALL_MODEL, scene


@pytest.fixture(scope="module")
def model(device):
    """A small model whose every tensor, batch-norm statistics included, is non-trivial."""
    net = SiameseNet(SMALL_MODEL)
    g = torch.Generator().manual_seed(0)
    net.reset_parameters(g)
    with torch.no_grad():
        for name, buf in net.named_buffers():
            if buf.is_floating_point():
                buf.copy_(torch.rand(buf.shape, generator=g) + 0.5)
        net.alpha_raw.copy_(torch.randn(net.alpha_raw.shape, generator=g))
    return ForensicModel(net, device, poses="dihedral", info={"note": "test", "steps": 3})


@pytest.fixture(scope="module")
def images():
    return [scene(i, 96) for i in range(4)]


@pytest.fixture
def saved(model, tmp_path) -> Path:
    return model.save(tmp_path / "m.safetensors")


def rewrite(src: Path, dst: Path, *, tensors=None, metadata=None) -> Path:
    """Copy a model file with some tensors and/or metadata entries replaced."""
    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata())
    data = load_file(str(src))
    data.update(tensors or {})
    data = {k: v for k, v in data.items() if v is not None}
    meta.update(metadata or {})
    save_file(data, str(dst), metadata={k: v for k, v in meta.items() if v is not None})
    return dst


def test_save_load_round_trip_gives_identical_embeddings(model, saved, images, device):
    again = sf.load_model(saved, device=device)
    assert again.config == model.config
    np.testing.assert_array_equal(again.embed(images), model.embed(images))
    np.testing.assert_array_equal(again.alpha, model.alpha)
    np.testing.assert_array_equal(again.distance(images, images[::-1]), model.distance(images, images[::-1]))
    assert again.poses == "dihedral" and again.info == {"note": "test", "steps": 3}
    assert again.identity() == model.identity()
    for (k, a), b in zip(model.net.state_dict().items(), again.net.state_dict().values()):
        assert torch.equal(a.cpu(), b.cpu()), k


def test_file_is_plain_safetensors_with_json_config(model, saved):
    with safe_open(str(saved), framework="pt") as f:
        meta = f.metadata()
        keys = set(f.keys())
    assert meta["format"] == sf_io.MODEL_FORMAT
    assert sf.ModelConfig.from_json(meta["model_config"]) == model.config
    assert keys == {"net." + k for k in model.net.state_dict()}
    assert not list(saved.parent.glob("*.tmp"))


def test_float16_file_loads(model, tmp_path, images, device):
    path = model.save(tmp_path / "half.safetensors", dtype="float16")
    with safe_open(str(path), framework="pt") as f:
        assert f.get_tensor("net.branch.fc1.weight").dtype == torch.float16
    assert path.stat().st_size < 0.6 * model.save(tmp_path / "full.safetensors").stat().st_size
    half = sf.load_model(path, device=device)
    assert half.net.branch.fc1.weight.dtype == torch.float32
    e, e_half = model.embed(images), half.embed(images)
    assert np.abs(e - e_half).max() < 0.02 * np.abs(e).max()
    with pytest.raises(ValueError, match="dtype"):
        model.save(tmp_path / "x.safetensors", dtype="int8")


def test_saving_again_overwrites_atomically(model, saved, images, monkeypatch):
    """A save that fails half-way leaves the previous file intact and no temporary file."""
    before = saved.read_bytes()

    def broken_save_file(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr("safetensors.torch.save_file", broken_save_file)
    with pytest.raises(OSError, match="disk full"):
        model.save(saved)
    assert saved.read_bytes() == before
    assert sorted(p.name for p in saved.parent.iterdir()) == [saved.name]
    monkeypatch.undo()
    model.save(saved)      # overwriting works
    assert sf.load_model(saved, device="cpu").config == model.config


# --------------------------------------------------------------------------- refused files

def test_truncated_file_is_refused(saved, tmp_path):
    data = saved.read_bytes()
    for cut in (len(data) // 2, len(data) - 7, 12, 3):
        p = tmp_path / f"cut{cut}.safetensors"
        p.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="truncated|corrupted|not a readable"):
            sf.load_model(p, device="cpu")


@pytest.mark.parametrize("content", [b"", b"not a weights file", bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)),
                                     pickle.dumps({"net.alpha_raw": [1.0]})], ids=["empty", "text", "random", "pickle"])
def test_non_safetensors_files_are_refused(tmp_path, content):
    p = tmp_path / "x.safetensors"
    p.write_bytes(content)
    with pytest.raises(ValueError, match="safetensors"):
        sf.load_model(p, device="cpu")


def test_corrupted_header_is_refused(saved, tmp_path):
    data = bytearray(saved.read_bytes())
    data[10:30] = b"\xff" * 20      # inside the JSON header
    p = tmp_path / "bad.safetensors"
    p.write_bytes(bytes(data))
    with pytest.raises(ValueError):
        sf.load_model(p, device="cpu")


def test_another_programs_safetensors_file_is_refused(tmp_path):
    p = tmp_path / "other.safetensors"
    save_file({"weight": torch.randn(4, 4), "bias": torch.zeros(4)}, str(p), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="not a napari-siamforensic model"):
        sf.load_model(p, device="cpu")
    q = tmp_path / "nometa.safetensors"
    save_file({"weight": torch.randn(4, 4)}, str(q))
    with pytest.raises(ValueError, match="not a napari-siamforensic model"):
        sf.load_model(q, device="cpu")


def test_metadata_declaring_another_architecture_is_refused(saved, tmp_path):
    other = SMALL_MODEL.replace(hidden=128).to_json()
    p = rewrite(saved, tmp_path / "arch.safetensors", metadata={"model_config": other})
    with pytest.raises(ValueError, match="does not match the architecture.*wrong shapes"):
        sf.load_model(p, device="cpu")
    deeper = SMALL_MODEL.replace(channels=(8, 16, 32)).to_json()
    p = rewrite(saved, tmp_path / "deeper.safetensors", metadata={"model_config": deeper})
    with pytest.raises(ValueError, match="does not match.*missing"):
        sf.load_model(p, device="cpu")


def test_tensors_of_another_architecture_are_refused(saved, tmp_path):
    p = rewrite(saved, tmp_path / "shape.safetensors", tensors={"net.branch.fc2.weight": torch.zeros(5, 64)})
    with pytest.raises(ValueError, match="wrong shapes.*fc2"):
        sf.load_model(p, device="cpu")
    p = rewrite(saved, tmp_path / "missing.safetensors", tensors={"net.alpha_raw": None})
    with pytest.raises(ValueError, match="missing.*alpha_raw"):
        sf.load_model(p, device="cpu")
    p = rewrite(saved, tmp_path / "extra.safetensors", tensors={"net.branch.fc3.weight": torch.zeros(2, 2)})
    with pytest.raises(ValueError, match="unexpected.*fc3"):
        sf.load_model(p, device="cpu")


def test_non_finite_weights_are_refused(saved, tmp_path):
    w = load_file(str(saved))["net.branch.fc1.weight"].clone()
    w[0, 0] = float("nan")
    p = rewrite(saved, tmp_path / "nan.safetensors", tensors={"net.branch.fc1.weight": w})
    with pytest.raises(ValueError, match="non-finite"):
        sf.load_model(p, device="cpu")


@pytest.mark.parametrize("metadata, message", [
    ({"model_config": "{not json"}, "model configuration"),
    ({"model_config": json.dumps({"input_size": 100})}, "model configuration"),
    ({"model_config": None}, "model configuration"),
    ({"format_version": "99"}, "format version"),
], ids=["bad-json", "invalid-config", "no-config", "version"])
def test_bad_metadata_is_refused(saved, tmp_path, metadata, message):
    p = rewrite(saved, tmp_path / "meta.safetensors", metadata=metadata)
    with pytest.raises(ValueError, match=message):
        sf.load_model(p, device="cpu")


def test_missing_file_and_wrong_path_type(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        sf.load_model(tmp_path / "absent.safetensors", device="cpu")
    with pytest.raises(TypeError, match="path"):
        sf.load_model(42, device="cpu")


def test_a_model_file_is_not_a_checkpoint(saved):
    with pytest.raises(ValueError, match="not a training checkpoint"):
        sf_io.load_checkpoint(saved)


# --------------------------------------------------------------------------- nothing is unpickled

def test_loading_never_unpickles(saved, monkeypatch, images):
    def forbidden(*args, **kwargs):
        raise AssertionError("a model file was unpickled")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    m = sf.load_model(saved, device="cpu")
    assert m.embed(images).shape == (4, SMALL_MODEL.embedding_dim)


def test_io_code_calls_no_unpickler():
    """The file-reading modules never call torch.load or pickle (static check of the source)."""
    core = Path(sf_io.__file__).parent
    for name in ("io.py", "scoring.py", "train.py"):
        tree = ast.parse((core / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                assert not any(m and m.split(".")[0] in ("pickle", "dill", "joblib", "cloudpickle") for m in mods), name
            if isinstance(node, ast.Attribute) and node.attr == "load" and isinstance(node.value, ast.Name):
                assert node.value.id not in ("torch", "pickle", "np", "numpy"), f"{name}: {node.value.id}.load"
