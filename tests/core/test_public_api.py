"""The public surface (DESIGN.md section 4): names, signatures and that each one resolves.

Other parts of the project add names (``Segmenter``, ``screen``, ...), so the engine's names
are checked to be present rather than the list pinned exactly; every name in ``__all__`` must
resolve either way.
"""
from __future__ import annotations

import inspect
from importlib.metadata import version

import napari_siamforensic as sf
from napari_siamforensic.core import config, deform, scoring, train

ENGINE = {
    "DeformConfig": config.DeformConfig,
    "ModelConfig": config.ModelConfig,
    "TrainConfig": config.TrainConfig,
    "Deformer": deform.Deformer,
    "Clutter": deform.Clutter,
    "deform_images": deform.deform_images,
    "ForensicModel": scoring.ForensicModel,
    "load_model": scoring.load_model,
    "TrainReport": train.TrainReport,
    "iter_train": train.iter_train,
    "train": train.train,
}


def test_engine_names_are_exported_and_are_the_core_objects():
    for name, obj in ENGINE.items():
        assert name in sf.__all__, name
        assert getattr(sf, name) is obj, name
    assert "__version__" in sf.__all__


def test_every_exported_name_resolves_once():
    assert len(sf.__all__) == len(set(sf.__all__))
    for name in sf.__all__:
        assert hasattr(sf, name), f"napari_siamforensic.__all__ lists {name!r} but it does not exist"


def test_public_objects_are_documented():
    for name in sf.__all__:
        obj = getattr(sf, name)
        if callable(obj):
            assert inspect.getdoc(obj), f"{name} has no docstring"
    for method in ("embed", "distance", "same_probability", "pairwise", "save"):
        assert inspect.getdoc(getattr(sf.ForensicModel, method)), method


def test_version_matches_the_installed_distribution():
    assert sf.__version__ == version("napari-siamforensic")


def params(fn) -> list[str]:
    return [p for p in inspect.signature(fn).parameters if p != "self"]


def test_signatures_of_the_contract():
    assert params(sf.load_model)[:2] == ["path", "device"]
    sig = inspect.signature(sf.load_model)
    assert sig.parameters["path"].default is None and sig.parameters["device"].default == "auto"
    assert params(sf.ForensicModel.embed) == ["images"]
    assert params(sf.ForensicModel.distance)[:2] == ["images_a", "images_b"]
    assert params(sf.ForensicModel.same_probability)[:2] == ["images_a", "images_b"]
    assert params(sf.ForensicModel.pairwise)[:1] == ["images"]
    assert params(sf.ForensicModel.save)[:1] == ["path"]
    assert params(sf.train)[:2] == ["images", "config"] and "progress" in params(sf.train)
    assert params(sf.iter_train)[:2] == ["images", "config"]
    for fn in (sf.train, sf.iter_train):
        for opt in ("init", "resume"):
            assert inspect.signature(fn).parameters[opt].kind is inspect.Parameter.KEYWORD_ONLY
    assert inspect.isgeneratorfunction(sf.iter_train)


def test_train_report_fields():
    fields = set(sf.TrainReport.__dataclass_fields__)
    assert {"step", "steps", "loss", "triplet_accuracy", "seconds", "triplets_per_second",
            "checkpoint", "done", "model"} <= fields
    assert sf.TrainReport.__dataclass_params__.frozen
