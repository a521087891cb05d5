"""The engine never imports a GUI toolkit (DESIGN.md section 3): scripts, the CLI and CI
machines without a display must be able to use it."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import napari_siamforensic

GUI_MODULES = ("napari", "qtpy", "magicgui", "PyQt5", "PyQt6", "PySide2", "PySide6", "superqt", "vispy")
PACKAGE_DIR = Path(napari_siamforensic.__file__).parent
GUI_FREE_PACKAGES = ("core", "screening", "evaluation")     # everything but _widgets

PROBE = r"""
import importlib, json, pkgutil, sys
import napari_siamforensic
names = ["napari_siamforensic.cli"]
for pkg in PACKAGES:
    try:
        p = importlib.import_module("napari_siamforensic." + pkg)
    except ModuleNotFoundError as exc:
        if exc.name == "napari_siamforensic." + pkg:
            continue                       # that package does not exist (yet)
        raise
    names += [p.__name__] + [p.__name__ + "." + m.name for m in pkgutil.iter_modules(p.__path__)]
imported, failed = [], {}
for name in names:
    try:
        importlib.import_module(name)
        imported.append(name)
    except ImportError as exc:             # an optional third-party dependency that is not installed
        failed[name] = getattr(exc, "name", None) or str(exc)
gui = sorted(m for m in sys.modules if m.split(".")[0] in GUI)
print(json.dumps({"imported": imported, "failed": failed, "gui": gui}))
"""


def run_probe() -> dict:
    code = f"PACKAGES = {GUI_FREE_PACKAGES!r}\nGUI = {GUI_MODULES!r}\n" + PROBE
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_the_engine_pulls_no_gui_toolkit():
    result = run_probe()
    assert result["gui"] == [], f"GUI modules imported: {result['gui']}"
    # the probe really imported the engine: every core module, without failures
    core_files = sorted(p.stem for p in (PACKAGE_DIR / "core").glob("*.py") if p.stem != "__init__")
    imported_core = sorted(n.rsplit(".", 1)[-1] for n in result["imported"] if n.startswith("napari_siamforensic.core."))
    assert imported_core == core_files
    assert not any(n.startswith("napari_siamforensic.core") for n in result["failed"]), result["failed"]
    # a package may lack an optional dependency, but never because it reaches for a GUI toolkit
    assert not [n for n, missing in result["failed"].items() if str(missing).split(".")[0] in GUI_MODULES]


def test_public_import_alone_pulls_no_gui_toolkit():
    code = ("import sys, napari_siamforensic as sf; sf.TrainConfig(); "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {GUI_MODULES!r}))")
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def gui_imports_in(path: Path) -> list[str]:
    """Every import of a GUI toolkit in a source file, at any depth (lazy imports included)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module" \
                and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            names = [node.args[0].value]
        found += [f"{path.name}:{node.lineno} {n}" for n in names if n.split(".")[0] in GUI_MODULES]
    return found


def test_gui_free_sources_contain_no_gui_import_even_inside_functions():
    files = [p for pkg in GUI_FREE_PACKAGES for p in sorted((PACKAGE_DIR / pkg).rglob("*.py"))]
    assert len(files) >= 8
    offenders = [hit for p in files for hit in gui_imports_in(p)]
    assert offenders == []


def test_the_static_check_detects_gui_imports(tmp_path):
    """The checker above is not vacuous."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from qtpy.QtWidgets import QWidget\n    import napari\n"
                   "    importlib.import_module('magicgui')\n")
    assert len(gui_imports_in(bad)) == 3
