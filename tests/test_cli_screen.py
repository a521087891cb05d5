"""``siamforensic screen``: a real screen of a small folder, and bad input.

The model is an untrained network from a fixed seed, written to a file and passed with
``--model`` (as tests/screening/conftest.py does): a fixed deterministic function, so an exact
mirrored copy has distance ~0 to its original through the pose embeddings while different
images do not. Images are 8-bit 160 px scenes; the screen runs in-process on the CPU.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from napari_siamforensic.cli import main
from napari_siamforensic.core.config import ModelConfig
from napari_siamforensic.core.devices import make_generator
from napari_siamforensic.core.model import SiameseNet
from napari_siamforensic.core.scoring import ForensicModel
from napari_siamforensic.screening import DEFAULT_TEXTURE, DEFAULT_WIDER


def _scene(seed: int, size: int = 160) -> np.ndarray:
    """A textured 8-bit gray image: random blobs on a smooth background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    img = 0.2 + 0.1 * np.sin(xx / (7 + seed % 5)) * np.cos(yy / 9)
    for _ in range(25):
        cy, cx, r = rng.uniform(0, size, 2).tolist() + [rng.uniform(3, 12)]
        img += rng.uniform(0.2, 0.8) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    return np.round(np.clip(img / img.max(), 0, 1) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.set_num_threads(min(2, torch.get_num_threads()))
    net = SiameseNet(ModelConfig())
    net.reset_parameters(make_generator(0))
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    ForensicModel(net, "cpu").save(str(path))
    return str(path)


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    """Four unrelated scenes, a mirrored copy of the first in a subfolder, and a broken PNG."""
    d = tmp_path_factory.mktemp("screen") / "figs"
    (d / "sub").mkdir(parents=True)
    for i in range(4):
        Image.fromarray(_scene(40 + i)).save(d / f"f{i}.png")
    Image.fromarray(np.ascontiguousarray(_scene(40)[:, ::-1])).save(d / "sub" / "copy.png")
    (d / "broken.png").write_bytes(b"\x89PNG this is not an image")
    return d


def test_screen_folder_writes_reports_with_the_planted_pair_first(figures, model_file, tmp_path, capsys):
    out = tmp_path / "report"
    code = main(["screen", str(figures), "--model", model_file, "--out", str(out), "--poses", "dihedral",
                 "--candidates", "3", "--localize", "2", "--device", "cpu", "--precision", "fp32",
                 "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    for name in ("report.html", "pairs.csv", "report.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name

    csv = pd.read_csv(out / "pairs.csv")
    assert len(csv) >= 1
    verified = csv["method"].isin(["orb-ransac", "pixels"]).to_numpy()   # verified pairs first
    assert verified[0] and not (np.diff(verified.astype(int)) > 0).any()
    ev = np.fmin(csv["distance"], csv["crop_distance"]).to_numpy()
    assert (np.diff(ev[~verified]) >= 0).all()                            # the rest by distance
    assert csv.loc[0, "match"] >= 0.6 and (csv["match"][~verified] < 0.6).all()
    first = {csv.loc[0, "source_a"].replace("\\", "/").rsplit("/", 1)[-1],
             csv.loc[0, "source_b"].replace("\\", "/").rsplit("/", 1)[-1]}
    assert first == {"f0.png", "copy.png"}
    assert csv.loc[0, "transform"].startswith("mirrored")

    doc = json.loads((out / "report.json").read_text())
    assert len(doc["items"]) == 5 and len(doc["pairs"]) == len(csv)
    assert len(doc["skipped"]) == 1 and doc["skipped"][0]["source"].endswith("broken.png")
    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "data:image/png;base64," in page and "broken.png" in page

    lines = captured.out.splitlines()
    assert any(ln.startswith("screened 5 items") for ln in lines)
    best = lines[lines.index(next(ln for ln in lines if ln.startswith("best "))) + 1]
    assert "f0.png" in best and "copy.png" in best and "mirrored" in best and "match=" in best
    assert any(ln.startswith("candidate pairs:") and "pixels match (>= 0.6): " in ln for ln in lines)
    assert "skipped: 1" in lines
    assert any("broken.png" in ln for ln in lines)
    assert f"report: {out / 'report.html'}" in lines
    assert "Traceback" not in captured.err


def test_screen_threshold_and_no_split_panels(figures, model_file, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["screen", str(figures / "f0.png"), str(figures / "sub"), str(figures / "f1.png"),
                 "--model", model_file, "--out", str(out), "--poses", "dihedral", "--threshold", "0.001",
                 "--no-split-panels", "--localize", "0", "--device", "cpu", "--precision", "fp32",
                 "--no-progress"]) == 0
    # untrained model: the exact mirrored copy is at f ~ 1e-8, different scenes at f ~ 0.03
    csv = pd.read_csv(out / "pairs.csv")
    assert len(csv) == 1 and (csv["distance"] <= 0.001).all()
    assert {csv.loc[0, "source_a"].replace("\\", "/").rsplit("/", 1)[-1],
            csv.loc[0, "source_b"].replace("\\", "/").rsplit("/", 1)[-1]} == {"f0.png", "copy.png"}
    assert "skipped: 0" in capsys.readouterr().out.splitlines()


def test_screen_missing_path_is_one_line_exit_2(tmp_path):
    missing = tmp_path / "nope"
    proc = subprocess.run([sys.executable, "-m", "napari_siamforensic.cli", "screen", str(missing),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"siamforensic: error: no such file or folder: {str(missing)!r}"]
    assert proc.stdout == ""
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, message", [
    (["--candidates", "0"], "--candidates: expected an integer >= 1, got 0"),
    (["--threshold", "-1"], "--threshold: expected a positive number, got -1.0"),
    (["--mode", "sideways"], "--mode: invalid choice"),
])
def test_screen_bad_options_are_one_line(figures, argv, message, capsys):
    assert main(["screen", str(figures)] + argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("siamforensic: error: ") and message in err[0]


def test_screen_out_that_is_a_file_is_refused(figures, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["screen", str(figures), "--out", str(tmp_path / "file")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"siamforensic: error: --out {str(tmp_path / 'file')!r} exists and is not a folder"]


@pytest.mark.parametrize("embedding, stored", [("basis", 6), ("all", 16)])
def test_screen_pose_embedding_and_index_reach_the_screen(figures, model_file, tmp_path, capsys, embedding, stored):
    out = tmp_path / "r"
    assert main(["screen", str(figures), "--model", model_file, "--out", str(out), "--pose-embedding", embedding,
                 "--index", "flat", "--localize", "0", "--device", "cpu", "--precision", "fp32",
                 "--no-progress"]) == 0
    doc = json.loads((out / "report.json").read_text())
    assert doc["info"]["pose_embedding"] == embedding and doc["info"]["stored_poses"] == stored
    assert f"poses: dihedral+invert ({embedding})" in capsys.readouterr().out
    csv = pd.read_csv(out / "pairs.csv")
    assert {csv.loc[0, "source_a"].replace("\\", "/").rsplit("/", 1)[-1],
            csv.loc[0, "source_b"].replace("\\", "/").rsplit("/", 1)[-1]} == {"f0.png", "copy.png"}


def test_screen_bad_pose_embedding_is_one_line(figures, capsys):
    assert main(["screen", str(figures), "--pose-embedding", "half"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--pose-embedding: invalid choice" in err[0]


def test_screen_compile_reaches_the_screen_and_is_refused_with_a_scheduler(figures, model_file, tmp_path,
                                                                            capsys, monkeypatch):
    import napari_siamforensic.screening as screening

    seen = {}
    real = screening.iter_screen

    def spy(*args, **kwargs):
        seen.update(kwargs)
        kwargs["compile"] = False         # the option's plumbing is what is tested here
        return real(*args, **kwargs)

    monkeypatch.setattr(screening, "iter_screen", spy)
    assert main(["screen", str(figures), "--model", model_file, "--out", str(tmp_path / "r"), "--compile",
                 "--localize", "0", "--device", "cpu", "--precision", "fp32", "--no-progress"]) == 0
    assert seen["compile"] is True
    capsys.readouterr()
    assert main(["screen", str(figures), "--compile", "--scheduler", "tcp://127.0.0.1:1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["siamforensic: error: --compile is not supported with --scheduler (the workers embed eagerly)"]


def _screen_with_spy(figures, model_file, tmp_path, monkeypatch, flag):
    """Runs `siamforensic screen` with ``flag``; returns the keyword arguments `iter_screen` got
    and the output folder."""
    import napari_siamforensic.screening as screening

    seen = {}
    real = screening.iter_screen

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(screening, "iter_screen", spy)
    out = tmp_path / "r"
    assert main(["screen", str(figures), "--model", model_file, "--out", str(out), "--localize", "0",
                 "--device", "cpu", "--precision", "fp32", "--no-progress"] + flag) == 0
    return seen, out


@pytest.mark.parametrize("flag, expected", [([], True), (["--no-whiten"], False)])
def test_screen_no_whiten_reaches_the_screen(figures, model_file, tmp_path, monkeypatch, flag, expected):
    seen, out = _screen_with_spy(figures, model_file, tmp_path, monkeypatch, flag)
    assert seen["whiten"] is expected
    # a handful of figures is below the 512 stored vectors whitening needs: reported as not applied
    assert json.loads((out / "report.json").read_text())["info"]["whitened"] is False


@pytest.mark.parametrize("flag, expected", [([], True), (["--no-hub-correction"], False)])
def test_screen_no_hub_correction_reaches_the_screen(figures, model_file, tmp_path, monkeypatch, flag, expected):
    seen, out = _screen_with_spy(figures, model_file, tmp_path, monkeypatch, flag)
    assert seen["hub_correction"] is expected
    assert json.loads((out / "report.json").read_text())["info"]["hub_correction"] is expected


@pytest.mark.parametrize("flag, expected", [([], True), (["--no-verify"], False)])
def test_screen_no_verify_reaches_the_screen(figures, model_file, tmp_path, monkeypatch, flag, expected):
    seen, out = _screen_with_spy(figures, model_file, tmp_path, monkeypatch, flag)
    assert seen["verify"] is expected
    csv = pd.read_csv(out / "pairs.csv")
    assert csv["match"].notna().all() if expected else csv["match"].isna().all()


@pytest.mark.parametrize("flag, metric", [([], "l1"), (["--metric", "l2"], "l2")])
def test_screen_metric_reaches_the_screen(figures, model_file, tmp_path, monkeypatch, flag, metric):
    seen, out = _screen_with_spy(figures, model_file, tmp_path, monkeypatch, flag)
    assert seen["metric"] == metric
    assert json.loads((out / "report.json").read_text())["info"]["metric"] == metric


@pytest.mark.parametrize("flag, crops, layout, rows", [
    ([], "pixels", "pixels", 36), (["--crops", "features"], "features", "features", 36),
    (["--no-crops"], False, None, 0),
])
def test_screen_crops_reach_the_screen(figures, model_file, tmp_path, monkeypatch, flag, crops, layout, rows):
    seen, out = _screen_with_spy(figures, model_file, tmp_path, monkeypatch, flag)
    assert seen["crops"] == crops
    info = json.loads((out / "report.json").read_text())["info"]
    assert info["crop_layout"] == layout and info["crop_rows"] == rows


@pytest.mark.parametrize("layout", ["features", "pixels"])
def test_screen_crops_and_no_crops_are_refused_together(figures, capsys, layout):
    # an explicit --crops pixels (the default layout) contradicts --no-crops as much as features does
    assert main(["screen", str(figures), "--crops", layout, "--no-crops"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"siamforensic: error: --crops {layout} and --no-crops contradict each other: drop one"]


@pytest.mark.parametrize("flag, expected", [([], False), (["--overlap"], True)])
def test_screen_overlap_reaches_the_screen(figures, model_file, tmp_path, monkeypatch, flag, expected):
    seen, out = _screen_with_spy(figures, model_file, tmp_path, monkeypatch, flag)
    assert seen["overlap"] is expected
    assert json.loads((out / "report.json").read_text())["info"]["overlap"] is expected


@pytest.mark.parametrize("option, flag, passed, used", [
    ("wider", [], None, DEFAULT_WIDER), ("wider", ["--wider", "5"], 5, 5), ("wider", ["--wider", "0"], 0, 0),
    ("wider", ["--no-verify"], None, 0),
    ("texture", [], None, DEFAULT_TEXTURE), ("texture", ["--texture", "4"], 4, 4),
    ("texture", ["--texture", "0"], 0, 0), ("texture", ["--no-verify"], None, 0)])
def test_screen_wider_and_texture_reach_the_screen(figures, model_file, tmp_path, monkeypatch, capsys, option, flag,
                                                   passed, used):
    """``--wider`` and ``--texture``: not given, the screen's default is used (DEFAULT_WIDER /
    DEFAULT_TEXTURE with the pixel check, none without it); given, as given; the report says
    which, and the summary prints it."""
    seen, out = _screen_with_spy(figures, model_file, tmp_path, monkeypatch, flag)
    assert seen[option] == passed
    info = json.loads((out / "report.json").read_text())["info"]
    assert info[option] == used
    printed = capsys.readouterr().out
    phrase = {"wider": "wider search", "texture": "texture neighbours"}[option]
    assert (phrase in printed) is bool(used)
    if used:
        assert {"wider": f"wider search ({used} more neighbours per item)",
                "texture": f"texture neighbours ({used} per item): {info['texture_pairs']} pairs"}[option] in printed


def test_screen_texture_help_names_the_default_and_no_verify_refuses_it(figures, model_file, tmp_path, capsys):
    assert main(["screen", "--help"]) == 0
    assert f"Default: {DEFAULT_TEXTURE} (0 with --no-verify); --texture 0" in " ".join(capsys.readouterr().out.split())
    assert main(["screen", str(figures), "--model", model_file, "--out", str(tmp_path / "r"),
                 "--texture", "5", "--no-verify", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--texture needs the pixel check" in err and not (tmp_path / "r").exists()


def test_screen_wider_help_names_the_default(capsys):
    assert main(["screen", "--help"]) == 0
    assert f"Default: {DEFAULT_WIDER} (0 with --no-verify)" in " ".join(capsys.readouterr().out.split())


def test_screen_wider_without_the_pixel_check_is_refused(figures, model_file, tmp_path, capsys):
    assert main(["screen", str(figures), "--model", model_file, "--out", str(tmp_path / "r"),
                 "--wider", "5", "--no-verify", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--wider needs the pixel check" in err and not (tmp_path / "r").exists()


@pytest.mark.parametrize("flag, expected", [([], False), (["--gate-nearest"], True)])
def test_screen_gate_nearest_reaches_the_screen(figures, model_file, tmp_path, monkeypatch, capsys, flag, expected):
    """``--gate-nearest``: off unless given; the report's info says so, and the summary prints how
    many nearest pairs the gate kept from the full check."""
    seen, out = _screen_with_spy(figures, model_file, tmp_path, monkeypatch, flag)
    assert seen["gate_nearest"] is expected
    info = json.loads((out / "report.json").read_text())["info"]
    assert info["gate_nearest"] is expected
    printed = capsys.readouterr().out
    assert ("gate on the nearest pairs:" in printed) is expected
    if expected:
        assert f"gate on the nearest pairs: {info['nearest_pairs_gated']} not alike" in printed


def test_screen_gate_nearest_without_the_pixel_check_is_refused(figures, model_file, tmp_path, capsys):
    assert main(["screen", str(figures), "--model", model_file, "--out", str(tmp_path / "r"),
                 "--gate-nearest", "--no-verify", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--gate-nearest needs the pixel check" in err and not (tmp_path / "r").exists()
