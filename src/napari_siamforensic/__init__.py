"""napari-siamforensic: a forensic siamese network for finding re-used images and for
scribble segmentation, as a Python library and a napari plugin.

Importing this package never imports napari or Qt.
"""
from .core.config import DeformConfig, ModelConfig, TrainConfig
from .core.deform import Clutter, Deformer, deform_images
from .core.scoring import ForensicModel, calibrate, calibrate_pixels, load_model
from .core.segment import Segmenter
from .core.train import TrainReport, iter_train, train
from .screening import ScreenResult, iter_screen, screen

__version__ = "0.1.0"

__all__ = [
    "DeformConfig",
    "ModelConfig",
    "TrainConfig",
    "Deformer",
    "Clutter",
    "deform_images",
    "ForensicModel",
    "load_model",
    "calibrate",
    "calibrate_pixels",
    "Segmenter",
    "screen",
    "iter_screen",
    "ScreenResult",
    "TrainReport",
    "iter_train",
    "train",
    "__version__",
]
