"""``siamforensic segment``: a saved segmenter applied to a folder, and bad input.

The segmenter is fitted on a generated scene with the seeded random network
(``fallback_model``), which ``Segmenter.load`` resolves without ``--model``."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from napari_siamforensic.cli import main
from napari_siamforensic.core.features import fallback_model
from napari_siamforensic.core.segment import Segmenter

from .test_segment import FAST, blob_scene, iou, scribbles


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.set_num_threads(min(2, torch.get_num_threads()))
    d = tmp_path_factory.mktemp("cli_segment")
    img, truth = blob_scene(0)
    net = fallback_model(device="cpu")
    net.save(d / "net.safetensors")
    seg = Segmenter(net, **FAST).fit(img, scribbles(truth, values=(2, 9)))
    path = seg.save(d / "cells.seg")
    src = d / "in"
    (src / "sub").mkdir(parents=True)
    tifffile.imwrite(src / "a.tif", blob_scene(21)[0])
    Image.fromarray((blob_scene(22)[0] * 255).clip(0, 255).astype(np.uint8)).save(src / "sub" / "b.png")
    (src / "broken.png").write_bytes(b"\x89PNG nonsense")
    return path, src, str(d / "net.safetensors")


def test_segment_folder_writes_labels_and_reports_the_broken_file(saved, tmp_path, capsys):
    path, src, net = saved
    out = tmp_path / "masks"
    assert main(["segment", str(path), str(src), "--out", str(out), "--no-progress", "--model", net, "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "2 label image(s) written, 1 file(s) skipped" in captured.out
    assert "broken.png" in captured.err and "could not read" in captured.err
    labels = tifffile.imread(out / "a_labels.tif")
    assert labels.shape == blob_scene(21)[0].shape and set(np.unique(labels)) <= {2, 9}
    assert iou(labels == 9, blob_scene(21)[1]) > 0.6
    assert (out / "b_labels.tif").exists()
    # a second run keeps the existing label files unless --overwrite
    before = (out / "a_labels.tif").stat().st_mtime_ns
    assert main(["segment", str(path), str(src / "a.tif"), "--out", str(out), "--no-progress", "--model", net]) == 1
    assert "exists" in capsys.readouterr().err
    assert (out / "a_labels.tif").stat().st_mtime_ns == before
    assert main(["segment", str(path), str(src / "a.tif"), "--out", str(out), "--no-progress", "--model", net, "--overwrite"]) == 0


def test_segment_beside_the_inputs(saved, tmp_path):
    path, _, net = saved
    tifffile.imwrite(tmp_path / "c.tif", blob_scene(23)[0])
    assert main(["segment", str(path), str(tmp_path / "c.tif"), "--no-progress", "--model", net]) == 0
    assert (tmp_path / "c_labels.tif").exists()


def test_segment_bad_input_is_one_line(saved, tmp_path, capsys):
    path, src, net = saved
    assert main(["segment", str(path), str(src), "--no-progress"]) == 2   # fitted with a model file
    assert "--model PATH" in capsys.readouterr().err
    assert main(["segment", str(tmp_path / "missing.seg"), str(src), "--no-progress", "--model", net]) == 2
    assert "segmenter" in capsys.readouterr().err
    assert main(["segment", str(path), str(tmp_path / "nothing_here"), "--no-progress", "--model", net]) == 2
    capsys.readouterr()
    not_ours = tmp_path / "not_ours.seg"
    not_ours.write_bytes(b"just some bytes")
    assert main(["segment", str(not_ours), str(src), "--no-progress", "--model", net]) == 2
    err = capsys.readouterr().err
    assert err.startswith("siamforensic: error:") and len(err.strip().splitlines()) == 1
