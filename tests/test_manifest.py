"""The npe2 manifest: valid, installed under the package's entry point, every contribution
resolves to a real object, and sample data / the model reader work (no viewer needed)."""
import importlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

npe2 = pytest.importorskip("npe2")

import napari_siamforensic  # noqa: E402

MANIFEST = Path(napari_siamforensic.__file__).parent / "napari.yaml"


@pytest.fixture(scope="module")
def manifest():
    return npe2.PluginManifest.from_file(MANIFEST)


def test_manifest_is_valid_and_is_the_installed_one(manifest):
    assert manifest.name == "napari-siamforensic"
    installed = npe2.PluginManifest.from_distribution("napari-siamforensic")
    assert installed.model_dump() == manifest.model_dump()
    result = subprocess.run([sys.executable, "-m", "npe2", "validate", str(MANIFEST)],
                            capture_output=True, text=True)
    assert result.returncode == 0 and "valid" in result.stdout, result.stdout + result.stderr


def test_contributions_reference_declared_commands(manifest):
    ids = {c.id for c in manifest.contributions.commands}
    used = ([w.command for w in manifest.contributions.widgets]
            + [s.command for s in manifest.contributions.sample_data]
            + [r.command for r in manifest.contributions.readers])
    assert set(used) <= ids
    assert set(used) == ids     # no dead commands either
    assert {w.display_name for w in manifest.contributions.widgets} == {
        "Train", "Find duplicates", "Segment by scribbles"}


def test_every_command_resolves(manifest):
    pytest.importorskip("napari")
    pytest.importorskip("qtpy")
    for cmd in manifest.contributions.commands:
        module, _, attr = cmd.python_name.partition(":")
        obj = getattr(importlib.import_module(module), attr)
        assert callable(obj), cmd.python_name
    manifest.validate_imports()


def test_sample_data_without_napari():
    code = ("import sys, napari_siamforensic._sample_data as s; s.planted_duplicates(); s.scribble_image(); "
            "bad = [m for m in ('napari', 'qtpy', 'PyQt5', 'magicgui') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_planted_duplicates_sample():
    from napari_siamforensic._sample_data import planted_duplicates

    layers = planted_duplicates()
    assert len(layers) == 8
    for data, meta, kind in layers:
        assert kind == "image" and data.dtype == np.float32 and data.ndim == 2
        assert 0 <= data.min() and data.max() <= 1 and data.std() > 0.01
    planted = {meta["name"]: meta["metadata"]["planted"] for _, meta, _ in layers}
    assert [n for n, p in planted.items() if p] == ["panel 6", "panel 7", "panel 8"]
    # the copies are what they say: panel 8 is panel 5 inverted (up to JPEG)
    p5, p8 = layers[4][0], layers[7][0]
    assert np.corrcoef(p5.ravel(), p8.ravel())[0, 1] < -0.9
    p1, p6 = layers[0][0], layers[5][0]
    np.testing.assert_allclose(np.rot90(p1[:, ::-1])[20:236, 10:226], p6)


def test_scribble_sample():
    from napari_siamforensic._sample_data import scribble_image

    [(data, meta, kind)] = scribble_image()
    assert data.shape == (512, 512) and kind == "image" and data.std() > 0.05


def test_model_reader_accepts_only_our_files(tmp_path):
    pytest.importorskip("napari")
    from safetensors.numpy import save_file

    from napari_siamforensic._widgets._reader import get_model_reader, read_model
    from napari_siamforensic.core.config import ModelConfig
    from napari_siamforensic.core.model import SiameseNet
    from napari_siamforensic.core.scoring import ForensicModel

    foreign = tmp_path / "other.safetensors"
    save_file({"w": np.zeros(3, np.float32)}, str(foreign))
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    assert get_model_reader(str(foreign)) is None
    assert get_model_reader(str(tmp_path / "junk.safetensors")) is None
    assert get_model_reader(str(tmp_path / "missing.png")) is None

    ours = ForensicModel(SiameseNet(ModelConfig(input_size=32, channels=(4, 8), hidden=16, embedding_dim=8)),
                         "cpu").save(tmp_path / "ours.safetensors")
    assert get_model_reader(str(ours)) is read_model
