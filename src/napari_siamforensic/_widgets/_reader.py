"""Open a SiamForensic model file (drag it onto napari, or File > Open): it becomes the model
every SiamForensic widget uses. No layer is added; napari gets the "handled" sentinel."""
from __future__ import annotations

from pathlib import Path

MODEL_FORMATS = ("napari-siamforensic.model", "napari-siamforensic.checkpoint")


def _is_our_model(path: str) -> bool:
    """True for a .safetensors file whose header says it is one of our models/checkpoints."""
    try:
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            return (f.metadata() or {}).get("format") in MODEL_FORMATS
    except Exception:     # noqa: BLE001 - not ours, not readable: let other readers try
        return False


def get_model_reader(path):
    """npe2 reader hook: a reader function for our model files, None for anything else."""
    if isinstance(path, list) or not str(path).endswith(".safetensors") or not _is_our_model(str(path)):
        return None
    return read_model


def read_model(path):
    from napari.utils.notifications import show_info

    from ._models import registry

    registry.load_file(path)
    show_info(f"Loaded model {Path(path).name}: the SiamForensic widgets use it now.")
    return [(None,)]
