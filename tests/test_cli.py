"""The ``siamforensic`` command: exit codes, --help, and each subcommand on tiny real inputs.

Everything runs in-process through ``main(argv)`` (one subprocess test checks the installed
console behaviour); trainings are 1-3 steps of 4 triplets on 128 px patches, on the CPU.
"""
from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from dataclasses import fields

import numpy as np
import pytest
from PIL import Image

import napari_siamforensic as sf
from napari_siamforensic.cli import main
from napari_siamforensic.core.config import DeformConfig
from napari_siamforensic.core.io import load_checkpoint
from napari_siamforensic.core.synthetic import generate_scene

SUBCOMMANDS = ("train", "score", "pairwise", "evaluate", "sheet", "demo")
TINY_TRAIN = ["--steps", "2", "--batch-size", "4", "--patch-size", "128", "--validation-triplets", "8",
              "--eval-every", "1", "--checkpoint-every", "1", "--device", "cpu", "--precision", "fp32",
              "--no-progress"]


def _save_png(path, image01):
    Image.fromarray(np.round(np.clip(image01, 0, 1) * 255).astype(np.uint8)).save(path)
    return str(path)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    """Three unrelated 192 px scenes and a left-right flip of the first, as 8-bit PNGs."""
    d = tmp_path_factory.mktemp("images")
    scenes = [generate_scene(kind, 7, (192, 192)) for kind in ("nuclei", "tissue", "blot")]
    for i, im in enumerate(scenes):
        _save_png(d / f"scene{i}.png", im)
    _save_png(d / "scene0_flipped.png", scenes[0][:, ::-1])
    return d


@pytest.fixture(scope="module")
def trained(tmp_path_factory, image_dir):
    """A 2-step training run through the CLI: (output folder, stdout)."""
    out = tmp_path_factory.mktemp("run")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["train", str(image_dir), "--out", str(out), *TINY_TRAIN])
    assert code == 0, buf.getvalue()
    return out, buf.getvalue()


def _assert_one_line_error(code, err):
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("siamforensic: error: ")
    assert "Traceback" not in err


# ------------------------------------------------------------------------------- help

def test_top_level_help_lists_the_subcommands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for cmd in SUBCOMMANDS:
        assert cmd in out


EXPECTED_OPTIONS = {
    "train": ["--out", "--steps", "--batch-size", "--lr", "--optimizer", "--seed", "--device", "--precision",
              "--patch-size", "--hard-negatives", "--checkpoint-every", "--eval-every", "--resume", "--init",
              "--deform-preset", "--validation-triplets", "--overwrite", "--no-progress"],
    "score": ["--model", "--poses", "--device", "--precision", "--json"],
    "pairwise": ["--model", "--poses", "--csv", "--threshold", "--device"],
    "evaluate": ["--model", "--poses", "--parents", "--n-per-family", "--seed", "--baselines", "--no-baselines",
                 "--out"],
    "sheet": ["--out", "--n", "--seed", "--deform-preset", "--patch-size"],
    "demo": ["--model", "--train", "--steps", "--batch-size", "--seed", "--poses", "--save-images"],
}


def _family_options():
    out = []
    for f in fields(DeformConfig):
        if f.name.startswith("p_") and f.name != "p_none":
            stem = f.name[2:].replace("_", "-")
            out += [f"--p-{stem}", f"--no-{stem}"]
        elif not f.name.startswith("p_"):
            out.append("--" + f.name.replace("_", "-"))
    return out


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help_of_every_subcommand_documents_its_options(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    expected = EXPECTED_OPTIONS[command] + (_family_options() if command in ("train", "sheet") else [])
    body = out.split("\n\n", 1)[1]         # after the usage block
    for opt in expected:
        # listed in the option descriptions (not only in the usage line), with help text after it
        entry = [ln for ln in body.splitlines() if ln.strip().startswith(opt + " ") or ln.strip() == opt]
        assert entry, f"{command} --help does not describe {opt}"
    assert "(default:" in out


def test_version(capsys):
    assert main(["--version"]) == 0
    assert sf.__version__ in capsys.readouterr().out


# ------------------------------------------------------------------------------- train

def test_train_writes_a_checkpoint_and_a_model_that_load(trained):
    out, stdout = trained
    model_path, ckpt_path = out / "model.safetensors", out / "checkpoint.safetensors"
    assert model_path.is_file() and ckpt_path.is_file()
    assert str(model_path) in stdout
    model = sf.load_model(str(model_path), device="cpu")
    assert model.embed(np.random.default_rng(0).random((64, 64))).shape == (1, 128)
    ckpt = load_checkpoint(ckpt_path)
    assert ckpt["step"] == 2
    assert ckpt["config"].batch_size == 4 and ckpt["config"].patch_size == 128


def test_train_refuses_to_overwrite_a_run_then_resumes_it(trained, image_dir, tmp_path, capsys):
    out, _ = trained
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.safetensors").write_bytes((out / "checkpoint.safetensors").read_bytes())
    code = main(["train", str(image_dir), "--out", str(run), *TINY_TRAIN])
    _assert_one_line_error(code, capsys.readouterr().err)
    assert load_checkpoint(run / "checkpoint.safetensors")["step"] == 2     # untouched
    # resume with a new total: only --steps changes, the rest comes from the checkpoint
    code = main(["train", str(image_dir), "--out", str(run), "--resume", str(run), "--steps", "3", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert load_checkpoint(run / "checkpoint.safetensors")["step"] == 3
    assert sf.load_model(str(run / "model.safetensors"), device="cpu").info.get("steps") == 3
    # changing anything else of the checkpoint's configuration is refused
    code = main(["train", str(image_dir), "--out", str(run), "--resume", str(run), "--steps", "4",
                 "--batch-size", "8", "--no-progress"])
    _assert_one_line_error(code, capsys.readouterr().err)


def test_ctrl_c_keeps_the_checkpoint_and_exits_130(image_dir, tmp_path, monkeypatch, capsys):
    from napari_siamforensic.core import train as train_module

    real_sample = train_module.TripletSampler.sample
    calls = {"n": 0}

    def interrupted_sample(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:             # validation set, step 1, step 2, then Ctrl-C in step 3
            raise KeyboardInterrupt
        return real_sample(self, *args, **kwargs)

    monkeypatch.setattr(train_module.TripletSampler, "sample", interrupted_sample)
    out = tmp_path / "run"
    code = main(["train", str(image_dir), "--out", str(out), *TINY_TRAIN, "--steps", "10"])
    assert code == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert [ln for ln in err.splitlines() if ln.strip()][-1].startswith("siamforensic: interrupted")
    assert "checkpoint kept" in err
    assert load_checkpoint(out / "checkpoint.safetensors")["step"] >= 2
    assert not (out / "model.safetensors").exists()


def test_train_negative_poses_reaches_the_config(image_dir, tmp_path):
    out = tmp_path / "run"
    code = main(["train", str(image_dir), "--out", str(out), *TINY_TRAIN, "--negative-poses", "dihedral"])
    assert code == 0
    assert load_checkpoint(out / "checkpoint.safetensors")["config"].negative_poses == "dihedral"


def test_pose_penalty_and_no_pixels_options(image_dir, capsys):
    img = sorted(image_dir.iterdir())[0]
    flipped = image_dir.parent / "flipped.png"
    Image.fromarray(np.asarray(Image.open(img))[:, ::-1].copy()).save(flipped)

    def score(*extra):
        assert main(["score", str(img), str(flipped), "--json", "--device", "cpu", *extra]) == 0
        return json.loads(capsys.readouterr().out)["distance"]

    raw = score("--poses", "none")
    assert score("--poses", "dihedral", "--pose-penalty", "0", "--no-pixels") == pytest.approx(0.0, abs=1e-4)
    assert score("--poses", "dihedral", "--pose-penalty", "0.5", "--no-pixels") == pytest.approx(min(raw, 0.5), abs=1e-4)
    assert score("--poses", "dihedral", "--pose-penalty", "10", "--no-pixels") == pytest.approx(raw, abs=1e-4)
    # the bundled model's pixel check finds the mirrored pixels whatever the pose penalty
    assert score("--poses", "dihedral", "--pose-penalty", "10") < 0.01 < raw
    assert main(["score", str(img), str(flipped), "--device", "cpu"]) == 0
    assert "with the pixel check" in capsys.readouterr().out
    assert main(["score", str(img), str(flipped), "--device", "cpu", "--no-pixels"]) == 0
    assert "pixel check" not in capsys.readouterr().out
    assert main(["score", str(img), str(flipped), "--pose-penalty", "-1"]) == 2
    assert "pose-penalty" in capsys.readouterr().err


def test_sigterm_stops_training_like_ctrl_c(image_dir, tmp_path, monkeypatch, capsys):
    import os
    import signal

    from napari_siamforensic.core import train as train_module

    real_sample = train_module.TripletSampler.sample
    calls = {"n": 0}

    def terminated_sample(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:             # validation set, step 1, step 2, then SIGTERM in step 3
            os.kill(os.getpid(), signal.SIGTERM)
        return real_sample(self, *args, **kwargs)

    monkeypatch.setattr(train_module.TripletSampler, "sample", terminated_sample)
    before = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "run"
    code = main(["train", str(image_dir), "--out", str(out), *TINY_TRAIN, "--steps", "10"])
    assert code == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and "checkpoint kept" in err
    assert 2 <= load_checkpoint(out / "checkpoint.safetensors")["step"] < 10
    assert not (out / "model.safetensors").exists()
    assert signal.getsignal(signal.SIGTERM) is before      # the handler is the caller's again


# ------------------------------------------------------------------------------- score, pairwise

def test_score_of_an_image_and_its_flip_is_a_duplicate_under_dihedral_poses(trained, image_dir, capsys):
    out, _ = trained
    a, b = str(image_dir / "scene0.png"), str(image_dir / "scene0_flipped.png")
    assert main(["score", a, b, "--model", str(out / "model.safetensors"), "--poses", "dihedral",
                 "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "verdict      duplicate" in text
    assert main(["score", a, b, "--model", str(out), "--poses", "dihedral", "--device", "cpu", "--json"]) == 0
    dihedral = json.loads(capsys.readouterr().out)
    assert dihedral["verdict"] == "duplicate" and dihedral["distance"] < 1e-3
    assert abs(dihedral["probability"] - 1 / (1 + np.exp(-(1 - dihedral["distance"])))) < 1e-6
    assert main(["score", a, b, "--model", str(out), "--poses", "none", "--device", "cpu", "--json"]) == 0
    raw = json.loads(capsys.readouterr().out)
    assert raw["distance"] > dihedral["distance"]          # the flip is only undone by the poses


def test_pairwise_prints_flags_and_writes_the_matrix(trained, image_dir, tmp_path, capsys):
    import pandas as pd

    out, _ = trained
    csv = tmp_path / "m.csv"
    assert main(["pairwise", str(image_dir), "--model", str(out), "--csv", str(csv), "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "scene0.png  <->  scene0_flipped.png" in text
    m = pd.read_csv(csv, index_col=0)
    assert m.shape == (4, 4)
    assert np.allclose(np.diag(m.to_numpy()), 0) and np.allclose(m.to_numpy(), m.to_numpy().T)


# ------------------------------------------------------------------------------- sheet, evaluate, demo

def test_sheet_writes_a_png_of_the_expected_size(image_dir, tmp_path, capsys):
    from napari_siamforensic.core.sheet import sheet_size

    path = tmp_path / "sub" / "sheet.png"
    assert main(["sheet", str(image_dir), "--out", str(path), "--n", "3", "--patch-size", "128",
                 "--device", "cpu", "--no-text"]) == 0
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size == (sheet_size(3)[1], sheet_size(3)[0]) == (72 + 3 * 128 + 4 * 4, 3 * 128 + 4 * 4)
        pixels = np.asarray(im)
    tile = pixels[4:4 + 128, 76:76 + 128]
    assert tile.std() > 5                                   # real image content, not a blank tile


def test_evaluate_runs_the_evaluation(trained, capsys):
    import importlib.util

    out, _ = trained
    code = main(["evaluate", "--model", str(out), "--n-parents", "2", "--parent-size", "256",
                 "--n-per-family", "1", "--baselines", "phash", "--poses", "none", "--device", "cpu"])
    captured = capsys.readouterr()
    if importlib.util.find_spec("napari_siamforensic.evaluation") is None:
        # an installation without the evaluation package says so in one line
        _assert_one_line_error(code, captured.err)
        assert "evaluation" in captured.err
        return
    assert code == 0, captured.err
    assert "siamforensic" in captured.out and "phash" in captured.out
    assert "triplet_acc" in captured.out


def test_demo_runs_headless_and_finds_the_mirrored_copy(capsys):
    assert main(["demo", "--train", "--steps", "2", "--batch-size", "4", "--device", "cpu", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "original  <-> flipped" in out and "planted duplicate" in out
    assert "found " in out


# ------------------------------------------------------------------------------- bad input

def _bad_inputs(image_dir, tmp_path):
    img = str(image_dir / "scene0.png")
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not an image at all")
    fake_model = tmp_path / "fake.safetensors"
    fake_model.write_bytes(b"\x00" * 64)
    return {
        "missing file": ["score", str(tmp_path / "missing.png"), img, "--model", str(fake_model)],
        "unreadable image": ["pairwise", img, str(garbage), "--model", str(fake_model)],
        "not a model": ["score", img, img, "--model", str(fake_model)],
        "no bundled model": ["score", img, img] if not _has_bundled_model() else ["score", img],
        "steps not a number": ["train", img, "--out", str(tmp_path / "o"), "--steps", "many"],
        "probability above 1": ["train", img, "--out", str(tmp_path / "o"), "--p-jpeg", "1.5"],
        "range refused by DeformConfig": ["sheet", img, "--out", str(tmp_path / "s.png"), "--scale", "3", "1"],
        "patch smaller than the net": ["train", img, "--out", str(tmp_path / "o"), "--patch-size", "64"],
        "unknown device": ["sheet", img, "--out", str(tmp_path / "s.png"), "--device", "tpu"],
        "unknown option": ["score", img, img, "--colour"],
        "empty folder": ["pairwise", str(tmp_path / "empty")],
        "no command": [],
    }


def _has_bundled_model() -> bool:
    from napari_siamforensic.core.scoring import default_weights_path

    return default_weights_path().is_file()


BAD = ("missing file", "unreadable image", "not a model", "no bundled model", "steps not a number",
       "probability above 1", "range refused by DeformConfig", "patch smaller than the net", "unknown device",
       "unknown option", "empty folder", "no command")


@pytest.mark.parametrize("case", BAD)
def test_bad_input_exits_2_with_one_line(case, image_dir, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    argv = _bad_inputs(image_dir, tmp_path)[case]
    code = main(argv)
    _assert_one_line_error(code, capsys.readouterr().err)


def test_console_script_bad_input_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "napari_siamforensic.cli", "score",
                           str(tmp_path / "nope.png"), str(tmp_path / "nope2.png")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"siamforensic: error: no such file or folder: "
                                                f"{str(tmp_path / 'nope.png')!r}"]
    assert proc.stdout == ""
