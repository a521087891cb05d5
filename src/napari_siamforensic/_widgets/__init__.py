"""The napari plugin's dock widgets: the only package that imports napari, qtpy or magicgui.

Widgets are thin adapters over the core library: they turn layers into arrays, start core
generators in thread workers (:mod:`._jobs`), show progress and write results to new layers.
The manifest (``napari.yaml``) names each widget's module directly, so importing this package
imports nothing heavy; ``from napari_siamforensic._widgets import TrainWidget`` still works.
"""
from importlib import import_module

_WIDGETS = {"TrainWidget": ".train", "DuplicatesWidget": ".duplicates", "SegmentWidget": ".segment"}

__all__ = list(_WIDGETS)


def __getattr__(name):
    if name in _WIDGETS:
        return getattr(import_module(_WIDGETS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
