"""Configuration dataclasses with validation and a JSON round-trip.

``ModelConfig`` fixes the architecture, ``DeformConfig`` the synthetic manipulations,
``TrainConfig`` the training run. All are frozen; make a changed copy with
:func:`dataclasses.replace` (or the ``replace`` method).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from typing import Any

from .._validation import check_interval, check_positive_int, check_range


class _JsonMixin:
    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.to_dict() if isinstance(v, _JsonMixin) else (list(v) if isinstance(v, tuple) else v)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        if not isinstance(data, dict):
            raise TypeError(f"{cls.__name__}.from_dict expects a dict, got {type(data).__name__}")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; known: {sorted(known)}")
        kwargs = {}
        for name, value in data.items():
            default = known[name].default_factory() if known[name].default_factory is not dataclasses.MISSING \
                else known[name].default
            if isinstance(default, _JsonMixin):
                value = type(default).from_dict(value)
            elif isinstance(default, tuple) and isinstance(value, list):
                value = tuple(value)
            kwargs[name] = value
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{cls.__name__}: not valid JSON ({exc})") from None
        return cls.from_dict(data)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class ModelConfig(_JsonMixin):
    """Architecture of one branch (DESIGN.md section 2).

    Input ``(B, 1, input_size, input_size)`` -> 4 residual blocks with ``channels`` -> flatten
    -> FC ``hidden`` -> BN -> FC ``embedding_dim``.
    """

    input_size: int = 128
    channels: tuple = (16, 32, 64, 128)
    hidden: int = 1024
    embedding_dim: int = 128
    alpha_init: float = 1.0 / 128

    def __post_init__(self):
        check_positive_int(self.input_size, "input_size", 16)
        n = len(self.channels)
        if n < 1 or self.input_size % (2 ** n):
            raise ValueError(f"`input_size` ({self.input_size}) must be divisible by 2**len(channels) "
                             f"= {2 ** n}")
        for c in self.channels:
            check_positive_int(c, "channels[i]")
        check_positive_int(self.hidden, "hidden")
        check_positive_int(self.embedding_dim, "embedding_dim")
        check_range(self.alpha_init, "alpha_init", 1e-6, 10.0)
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))


@dataclass(frozen=True)
class DeformConfig(_JsonMixin):
    """The synthetic manipulations that make a "same" partner (DESIGN.md section 2 and issue 3).

    Every family has a probability ``p_<family>``; 0 switches it off. Ranges are ``(low, high)``.
    Geometric moves are expressed on the 256 px source patch and fused into one warp into the
    128 px output; photometric ones act on the 128 px crop with intensities in [0, 1].
    Clutter (``p_text``, ``p_box``, ``p_scalebar``, ``p_erase``) is drawn on anchor, same and
    different alike.
    """

    p_none: float = 0.1
    # geometric (authors' code, version 2, plus what real figure re-use shows)
    p_reflect: float = 0.5          # then left-right and up-down each with p=0.5
    p_rot90: float = 0.25           # a quarter turn k in {1, 2, 3}
    p_perspective: float = 0.5
    perspective_px: float = 20.0    # each corner moved by an integer in [-px, px)
    p_similarity: float = 0.5
    rotation_deg: tuple = (-45.0, 45.0)
    scale: tuple = (0.4, 2.5)       # log-uniform
    translate_px: float = 20.0
    p_crop: float = 0.3
    crop_fraction: tuple = (0.6, 1.0)   # side of the kept part, relative to the output
    p_stretch: float = 0.3          # anisotropic scaling: a non-square crop squashed to a square
    stretch: tuple = (0.6, 1.6)     # width / height ratio of the change, log-uniform
    # photometric
    p_jpeg: float = 0.5
    jpeg_quality: tuple = (10.0, 50.0)
    p_gamma: float = 0.5
    gamma: tuple = (0.5, 2.0)       # log-uniform
    p_levels: float = 0.3
    levels_black: tuple = (0.0, 0.25)   # input black point
    levels_white: tuple = (0.7, 1.0)    # input white point
    p_local_edit: float = 0.5
    edit_radius: tuple = (0.05, 0.2)    # disc radius relative to the side
    edit_ramp_px: float = 10.0
    edit_multiply: tuple = (1.5, 2.0)
    p_invert: float = 0.1
    p_noise: float = 0.2
    noise_sigma: tuple = (0.005, 0.05)
    p_blur: float = 0.2
    blur_sigma: tuple = (0.5, 1.5)
    # clutter on all three images of a triplet
    p_text: float = 0.25
    p_box: float = 0.25
    p_scalebar: float = 0.1
    p_erase: float = 0.2            # 1-3 filled rectangles (black, white or the median gray)
    erase_area: tuple = (0.03, 0.1)     # area of each rectangle, relative to the image

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name.startswith("p_"):
                check_range(v, f.name, 0.0, 1.0)
        check_range(self.perspective_px, "perspective_px", 0.0, 64.0)
        check_range(self.translate_px, "translate_px", 0.0, 64.0)
        check_range(self.edit_ramp_px, "edit_ramp_px", 0.0, 64.0)
        bounds = {
            "rotation_deg": (-180.0, 180.0), "scale": (0.1, 4.0), "crop_fraction": (0.2, 1.0),
            "jpeg_quality": (1.0, 100.0), "gamma": (0.1, 10.0), "levels_black": (0.0, 0.5),
            "levels_white": (0.5, 1.0), "edit_radius": (0.0, 0.5), "edit_multiply": (0.0, 10.0),
            "noise_sigma": (0.0, 1.0), "blur_sigma": (0.0, 5.0), "stretch": (0.25, 4.0),
            "erase_area": (0.0, 0.5),
        }
        for name, (lo, hi) in bounds.items():
            object.__setattr__(self, name, check_interval(getattr(self, name), name, lo, hi))

    @classmethod
    def paper(cls) -> "DeformConfig":
        """The authors' version-2 deformations only (no extras)."""
        return cls(p_rot90=0.0, scale=(0.5, 1.5), p_crop=0.0, p_levels=0.0, p_invert=0.0,
                   p_noise=0.0, p_blur=0.0, p_scalebar=0.0, p_stretch=0.0, p_erase=0.0)

    @classmethod
    def geometric_only(cls) -> "DeformConfig":
        """``SN[G]``: geometric deformations only (the paper's ablation)."""
        return cls(p_jpeg=0.0, p_gamma=0.0, p_levels=0.0, p_local_edit=0.0, p_invert=0.0,
                   p_noise=0.0, p_blur=0.0, p_erase=0.0)

    @classmethod
    def none(cls) -> "DeformConfig":
        """No deformation at all (the "same" image is the anchor); clutter off too."""
        return cls(**{f.name: 0.0 for f in fields(cls) if f.name.startswith("p_") and f.name != "p_none"})


PRECISIONS = ("auto", "fp32", "bf16")
POSES = ("none", "dihedral", "dihedral+invert")
OPTIMIZERS = ("adam", "sgd")


@dataclass(frozen=True)
class TrainConfig(_JsonMixin):
    """One training run. Defaults favour fast CPU training; ``TrainConfig.paper()`` is the paper's.

    Attributes
    ----------
    steps, batch_size : int
        Optimiser steps and triplets per step.
    optimizer : {"adam", "sgd"}
        ``"sgd"`` uses ``momentum`` (the paper: momentum 0.9, lr 1e-5).
    precision : {"auto", "fp32", "bf16"}
        ``"auto"``: bf16 autocast where the device runs it fast (CUDA, CPUs with AVX512-BF16),
        fp32 elsewhere.
    hard_negative_fraction : float
        Share of "different" images cut from another region of the anchor's own source image
        (the paper's own suggestion); the rest come from other sources. Only a source at least
        7/4 ``patch_size`` long on one side (448 px for 256 px patches) has room for one; the
        others give ordinary negatives, and ``iter_train`` warns how many do.
    group_negative_fraction : float
        Of the remaining negatives, the share taken from another image of the anchor's group
        (its folder, or the ``groups`` label given to ``iter_train``): different images of the
        same kind, the hard negatives the paper names as its weakness.
    p_deform_negative : float
        Probability that the "different" image is deformed too, so deformation alone is no cue.
    negative_poses : {"none", "dihedral", "dihedral+invert"}
        Train against the scoring-time pose minimum: each "different" image is embedded in these
        poses (no gradient) and the pose closest to its anchor is the one trained on. A model
        scored with ``distance(..., poses=P)`` takes the minimum of f over P, which pulls every
        negative closer; mining the same poses in training pushes negatives apart in all of
        them. Costs one extra forward pass per pose and negative ("dihedral+invert": 16), 3-4x
        the step time on a CPU. The validation accuracy then uses the same pose minimum. The
        anchors, copies and mined negatives are then batch-normalised together, as one batch
        (see ``core.train.branch_embeddings`` for why).
    checkpoint_dir : str or None
        Where ``checkpoint.safetensors`` is written every ``checkpoint_every`` steps and at the end.
    """

    steps: int = 1000
    batch_size: int = 64
    lr: float = 3e-4
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    channels_last: bool = True
    patch_size: int = 256
    hard_negative_fraction: float = 0.5
    group_negative_fraction: float = 0.3
    p_deform_negative: float = 0.5
    negative_poses: str = "none"
    validation_triplets: int = 256
    eval_every: int = 100
    checkpoint_every: int = 200
    checkpoint_dir: str | None = None
    deform: DeformConfig = field(default_factory=DeformConfig)
    model: ModelConfig = field(default_factory=ModelConfig)

    def __post_init__(self):
        check_positive_int(self.steps, "steps")
        check_positive_int(self.batch_size, "batch_size", 2)
        check_range(self.lr, "lr", 1e-9, 10.0)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"`optimizer` must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        check_range(self.momentum, "momentum", 0.0, 0.999)
        check_range(self.weight_decay, "weight_decay", 0.0, 1.0)
        check_positive_int(self.seed, "seed", 0)
        if not isinstance(self.device, str):
            raise TypeError(f"`device` must be a string such as 'auto', 'cpu', 'cuda', 'mps', got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"`precision` must be one of {PRECISIONS}, got {self.precision!r}")
        if not isinstance(self.deform, DeformConfig):
            raise TypeError("`deform` must be a DeformConfig")
        if not isinstance(self.model, ModelConfig):
            raise TypeError("`model` must be a ModelConfig")
        check_positive_int(self.patch_size, "patch_size", self.model.input_size)
        check_range(self.hard_negative_fraction, "hard_negative_fraction", 0.0, 1.0)
        check_range(self.group_negative_fraction, "group_negative_fraction", 0.0, 1.0)
        check_range(self.p_deform_negative, "p_deform_negative", 0.0, 1.0)
        if self.negative_poses not in POSES:
            raise ValueError(f"`negative_poses` must be one of {POSES}, got {self.negative_poses!r}")
        check_positive_int(self.validation_triplets, "validation_triplets", 0)
        check_positive_int(self.eval_every, "eval_every")
        check_positive_int(self.checkpoint_every, "checkpoint_every")

    @classmethod
    def paper(cls, **changes) -> "TrainConfig":
        """The paper's schedule: batch 128, 20k steps, momentum SGD 0.9, lr 1e-5, its deformations."""
        base = dict(steps=20000, batch_size=128, optimizer="sgd", momentum=0.9, lr=1e-5,
                    hard_negative_fraction=0.0, group_negative_fraction=0.0, p_deform_negative=0.0, deform=DeformConfig.paper())
        base.update(changes)
        return cls(**base)
