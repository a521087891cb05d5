"""Every public function refuses bad input with a ValueError/TypeError that names the problem."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import napari_siamforensic as sf
from napari_siamforensic.core.devices import resolve_device
from napari_siamforensic.core.model import SiameseNet
from napari_siamforensic.core.scoring import ForensicModel

from .conftest import SMALL_MODEL, scene

GOOD = scene(0, 64)


@pytest.fixture(scope="module")
def model(device):
    net = SiameseNet(SMALL_MODEL)
    net.reset_parameters(torch.Generator().manual_seed(0))
    return ForensicModel(net, device)


def nan_image():
    a = scene(1, 32).astype(np.float32)
    a[3, 4] = np.nan
    return a


def inf_image(sign=1):
    a = scene(1, 32).astype(np.float64)
    a[-1, -1] = sign * np.inf
    return a


# (bad image, error type, what the message must say)
BAD_IMAGES = {
    "empty-0x0": (np.zeros((0, 0)), ValueError, "smaller than the minimum"),
    "empty-0x40": (np.zeros((0, 40)), ValueError, "smaller than the minimum"),
    "nan": (nan_image(), ValueError, "NaN or infinite"),
    "inf": (inf_image(), ValueError, "NaN or infinite"),
    "-inf": (inf_image(-1), ValueError, "NaN or infinite"),
    "bool": (np.ones((32, 32), bool), TypeError, "boolean"),
    "complex": (np.ones((32, 32), np.complex64), TypeError, "dtype complex64"),
    "strings": (np.full((32, 32), "a"), TypeError, "dtype"),
    "objects": (np.full((32, 32), None, object), TypeError, "dtype"),
    "scalar": (np.float32(3.0), ValueError, "must be 2D"),
    "1d": (np.zeros(64), ValueError, "must be 2D"),
    # (32, 32, 2) is not a colour image; a bare array of that shape reads as a stack of 32 x 2 px
    # planes for training, so either message is right
    "hw2": (np.zeros((32, 32, 2)), ValueError, "must be 2D|32 x 2 px"),
    "5d": (np.zeros((2, 2, 2, 2, 2)), ValueError, "must be 2D"),
    "1px": (np.zeros((1, 1)), ValueError, "1 x 1 px"),
    "15px": (np.zeros((15, 15)), ValueError, "15 x 15 px"),
    "15x200": (np.zeros((15, 200)), ValueError, "smaller than the minimum 16 x 16"),
    "rgb-15px": (np.zeros((15, 40, 3)), ValueError, "15 x 40 px"),
    "path": ("figure.png", TypeError, "path"),
    "none": (None, TypeError, "dtype object|None"),
}


def calls(model, cfg):
    """Each public entry point, with the image under test in one of its image arguments."""
    return {
        "embed": lambda im: model.embed([GOOD, im]),
        "distance-a": lambda im: model.distance([im], [GOOD]),
        "distance-b": lambda im: model.distance([GOOD], [im]),
        "same_probability": lambda im: model.same_probability([im], [GOOD]),
        "pairwise": lambda im: model.pairwise([GOOD, im]),
        "weighted_embed": lambda im: model.weighted_embed([im]),
        "train": lambda im: sf.train([GOOD, im], cfg),
        "iter_train": lambda im: next(sf.iter_train([im], cfg)),
    }


ENTRY_POINTS = ["embed", "distance-a", "distance-b", "same_probability", "pairwise", "weighted_embed",
                "train", "iter_train"]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("bad", list(BAD_IMAGES), ids=list(BAD_IMAGES))
def test_bad_images_are_refused_everywhere(model, small_train_config, entry, bad):
    image, error, message = BAD_IMAGES[bad]
    if entry in ("train", "iter_train") and bad == "path":
        pytest.skip("a path is a valid training source (tested with unreadable files below)")
    with pytest.raises(error, match=message) as info:
        calls(model, small_train_config)[entry](image)
    text = str(info.value)
    # the message says what is accepted, too
    assert ("expected" in text or "accepted" in text or "must" in text), text


def test_message_names_the_argument_and_position(model):
    with pytest.raises(ValueError, match=r"`images_b\[1\]`"):
        model.distance([GOOD, GOOD], [GOOD, nan_image()])
    with pytest.raises(ValueError, match=r"`images\[2\]`"):
        model.embed([GOOD, GOOD, np.zeros((8, 8))])


@pytest.mark.parametrize("entry", ["embed", "pairwise", "distance", "train"])
def test_empty_lists_are_refused(model, small_train_config, entry):
    fn = {"embed": lambda: model.embed([]), "pairwise": lambda: model.pairwise([]),
          "distance": lambda: model.distance([], []), "train": lambda: sf.train([], small_train_config)}[entry]
    with pytest.raises(ValueError, match="empty|no training images"):
        fn()


def test_an_empty_stack_is_refused(model):
    with pytest.raises(ValueError, match="empty"):
        model.embed(np.zeros((0, 32, 32)))


def test_mismatched_pair_counts(model):
    with pytest.raises(ValueError, match="2 images but `images_b` has 1"):
        model.distance([GOOD, GOOD], [GOOD])
    with pytest.raises(ValueError, match="counts must match"):
        model.same_probability([GOOD], [GOOD, GOOD, GOOD])


def test_not_an_image_container(model):
    with pytest.raises(TypeError, match="sequence of image arrays"):
        model.embed({"a": GOOD})
    with pytest.raises(TypeError, match="sequence of image arrays"):
        model.embed(42)
    with pytest.raises(TypeError, match="could not be turned into an array|dtype"):
        model.embed([[np.zeros(20), np.zeros(30)]])      # ragged


# --------------------------------------------------------------------------- devices

@pytest.mark.parametrize("name, message", [("tpu", "unknown device 'tpu'"), ("gpu0", "unknown device"),
                                           ("meta", "unsupported device 'meta'"), ("", "unknown device")])
def test_unknown_devices(name, message, tmp_path, train_images, small_train_config, model):
    with pytest.raises(ValueError, match=message):
        resolve_device(name)
    with pytest.raises(ValueError, match=message):
        ForensicModel(model.net, name)
    with pytest.raises(ValueError, match=message):
        sf.train(train_images[:2], small_train_config.replace(device=name))
    path = model.save(tmp_path / "m.safetensors")
    with pytest.raises(ValueError, match=message):
        sf.load_model(path, device=name)


def test_absent_accelerators_and_wrong_kinds():
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
    else:
        with pytest.raises(ValueError, match="CUDA device"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")
    with pytest.raises(TypeError, match="device"):
        resolve_device(0)
    with pytest.raises(TypeError, match="device"):
        sf.TrainConfig(device=0)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")


# --------------------------------------------------------------------------- files

def test_unreadable_files(tmp_path, small_train_config):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG nonsense")
    with pytest.raises(ValueError, match="could not read.*broken.png"):
        sf.train([str(broken)], small_train_config)
    with pytest.raises(ValueError, match="no such image file"):
        sf.train([str(tmp_path / "absent.png")], small_train_config)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match="holds no image files"):
        sf.train(str(empty), small_train_config)
    tiny = tmp_path / "tiny.png"
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tiny)
    with pytest.raises(ValueError, match="tiny.png.*smaller than the minimum"):
        sf.train([str(tiny), GOOD], small_train_config)
    with pytest.raises(ValueError, match="no such file"):
        sf.load_model(tmp_path / "absent.safetensors")


# --------------------------------------------------------------------------- configs

@pytest.mark.parametrize("changes, error, field", [
    ({"steps": 0}, ValueError, "steps"),
    ({"steps": -3}, ValueError, "steps"),
    ({"steps": 2.5}, TypeError, "steps"),
    ({"steps": True}, TypeError, "steps"),
    ({"steps": "10"}, TypeError, "steps"),
    ({"batch_size": 1}, ValueError, "batch_size"),
    ({"lr": 0.0}, ValueError, "lr"),
    ({"lr": 100.0}, ValueError, "lr"),
    ({"lr": float("nan")}, ValueError, "lr"),
    ({"optimizer": "rmsprop"}, ValueError, "optimizer"),
    ({"momentum": 1.5}, ValueError, "momentum"),
    ({"weight_decay": -0.1}, ValueError, "weight_decay"),
    ({"seed": -1}, ValueError, "seed"),
    ({"precision": "fp16"}, ValueError, "precision"),
    ({"patch_size": 64}, ValueError, "patch_size"),
    ({"hard_negative_fraction": 1.5}, ValueError, "hard_negative_fraction"),
    ({"p_deform_negative": -0.5}, ValueError, "p_deform_negative"),
    ({"validation_triplets": -1}, ValueError, "validation_triplets"),
    ({"eval_every": 0}, ValueError, "eval_every"),
    ({"checkpoint_every": 0}, ValueError, "checkpoint_every"),
    ({"deform": {"p_none": 0.1}}, TypeError, "deform"),
    ({"model": None}, TypeError, "model"),
])
def test_invalid_train_config_values(changes, error, field):
    with pytest.raises(error, match=field):
        sf.TrainConfig(**changes)


@pytest.mark.parametrize("changes, error, field", [
    ({"input_size": 100}, ValueError, "input_size"),
    ({"channels": ()}, ValueError, "input_size|channels"),
    ({"channels": (8, 0)}, ValueError, "channels"),
    ({"hidden": 0}, ValueError, "hidden"),
    ({"embedding_dim": -1}, ValueError, "embedding_dim"),
    ({"alpha_init": 0.0}, ValueError, "alpha_init"),
])
def test_invalid_model_config_values(changes, error, field):
    with pytest.raises(error, match=field):
        sf.ModelConfig(**changes)


def test_wrong_argument_kinds(train_images, small_train_config, model, tmp_path):
    with pytest.raises(TypeError, match="TrainConfig"):
        next(sf.iter_train(train_images, {"steps": 2}))
    with pytest.raises(TypeError, match="progress"):
        sf.train(train_images, small_train_config, progress=3)
    with pytest.raises(ValueError, match="dtype"):
        model.save(tmp_path / "m.safetensors", dtype="bfloat16")
    with pytest.raises(ValueError, match="batch_size"):
        list(model.iter_embed([GOOD], batch_size=0))
