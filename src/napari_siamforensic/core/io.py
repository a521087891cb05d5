"""Safe files: model weights and training checkpoints in safetensors, configs as JSON metadata.

Nothing is ever unpickled. A file that is not ours, truncated, corrupted or made for another
architecture raises ``ValueError`` saying which.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

from .config import ModelConfig, TrainConfig
from .model import SiameseNet

MODEL_FORMAT = "napari-siamforensic.model"
CHECKPOINT_FORMAT = "napari-siamforensic.checkpoint"
FORMAT_VERSION = "1"
NET_PREFIX = "net."


def atomic_save(tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str]) -> Path:
    """Write a safetensors file via a temporary file in the same folder and an atomic rename,
    so a crash never leaves a half-written file under ``path``."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}, tmp, metadata=metadata)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)   # mkstemp makes 0600; a model file is an ordinary file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors and the metadata of a safetensors file, or a ``ValueError`` saying why not."""
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"no such file: {str(p)!r}")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise ValueError(f"{str(p)!r} is not a readable safetensors file (truncated, corrupted or another "
                         f"format: {type(exc).__name__}: {exc}); expected a napari-siamforensic .safetensors "
                         "model or checkpoint") from None
    return tensors, meta


def net_state(net: SiameseNet, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in net.state_dict().items():
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        out[NET_PREFIX + k] = v
    return out


def build_net(tensors: dict[str, torch.Tensor], meta: dict[str, str], source: str) -> SiameseNet:
    """A ``SiameseNet`` from the ``net.*`` tensors and the model config in ``meta``."""
    fmt = meta.get("format")
    if fmt not in (MODEL_FORMAT, CHECKPOINT_FORMAT):
        raise ValueError(f"{source!r} is a safetensors file but not a napari-siamforensic model "
                         f"(metadata 'format' is {fmt!r}, expected {MODEL_FORMAT!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{source!r} has format version {meta.get('format_version')!r}; this version of "
                         f"napari-siamforensic reads version {FORMAT_VERSION!r}")
    try:
        config = ModelConfig.from_json(meta["model_config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{source!r}: the model configuration in its metadata is missing or invalid ({exc})") from None
    net = SiameseNet(config)
    expected = net.state_dict()
    state = {k[len(NET_PREFIX):]: v for k, v in tensors.items() if k.startswith(NET_PREFIX)}
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or extra or wrong:
        detail = "; ".join(s for s in (
            f"missing {missing[:4]}{'...' if len(missing) > 4 else ''}" if missing else "",
            f"unexpected {extra[:4]}{'...' if len(extra) > 4 else ''}" if extra else "",
            "wrong shapes " + ", ".join(f"{k}: {tuple(state[k].shape)} vs {tuple(expected[k].shape)}" for k in wrong[:4])
            if wrong else "") if s)
        raise ValueError(f"{source!r} does not match the architecture its metadata declares ({detail})")
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"{source!r} holds non-finite weights in {bad[:4]} (corrupted file)")
    net.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    return net


def model_metadata(net: SiameseNet, extra: dict | None = None, fmt: str = MODEL_FORMAT) -> dict[str, str]:
    meta = {"format": fmt, "format_version": FORMAT_VERSION, "model_config": net.config.to_json()}
    for k, v in (extra or {}).items():
        meta[k] = v if isinstance(v, str) else json.dumps(v)
    return meta


def save_checkpoint(path, net: SiameseNet, optimizer: torch.optim.Optimizer, generator: torch.Generator,
                    step: int, config: TrainConfig, info: dict | None = None) -> Path:
    """Everything a run needs to continue bit-for-bit: weights, optimiser state, RNG state, step."""
    tensors = net_state(net)
    opt_state = optimizer.state_dict()
    for pid, st in opt_state["state"].items():
        for name, value in st.items():
            if torch.is_tensor(value):
                tensors[f"optim.{pid}.{name}"] = value
    tensors["rng.state"] = generator.get_state()
    meta = model_metadata(net, {"train_config": config.to_json(), "step": str(int(step)),
                                "optim_param_groups": json.dumps(opt_state["param_groups"]),
                                "info": json.dumps(info or {})}, fmt=CHECKPOINT_FORMAT)
    return atomic_save(tensors, path, meta)


def load_checkpoint(path) -> dict:
    """Read a checkpoint: ``{"net", "optim_state", "rng_state", "step", "config", "info"}``."""
    tensors, meta = read_safetensors(path)
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{str(path)!r} is not a training checkpoint (format {meta.get('format')!r}); "
                         f"`resume` needs a checkpoint.safetensors written by training")
    net = build_net(tensors, meta, str(path))
    try:
        groups = json.loads(meta["optim_param_groups"])
        config = TrainConfig.from_json(meta["train_config"])
        step = int(meta["step"])
    except (KeyError, ValueError, TypeError) as exc:
        raise ValueError(f"{str(path)!r}: checkpoint metadata incomplete ({exc})") from None
    state: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    if "rng.state" not in tensors:
        raise ValueError(f"{str(path)!r}: checkpoint lacks its random-number state")
    return {"net": net, "optim_state": {"state": state, "param_groups": groups},
            "rng_state": tensors["rng.state"], "step": step, "config": config,
            "info": json.loads(meta.get("info", "{}"))}
