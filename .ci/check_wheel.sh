#!/usr/bin/env bash
# Is the package installable as users install it? (issue 6, "Installable as users install it")
#
#   .ci/check_wheel.sh            # from the repository root, with the dev venv active
#
# Builds the wheel and sdist (python -m build) into a temporary folder, runs twine check on
# both, checks that the wheel carries the npe2 manifest, the sample data module and the default
# weights, runs `npe2 validate`, then installs the wheel in a FRESH venv (torch pinned first, so
# pip takes the local CPU wheel, then the wheel + pyqt5 + napari) and checks there that
# `npe2 list` shows the plugin and that a real napari viewer (under xvfb-run; never
# the offscreen Qt platform) opens each of our dock widgets. Slow (a fresh venv with torch and
# napari): not part of .ci/run; run it before a release.
set -euo pipefail

cd "$(dirname "$0")/.."
python=${PYTHON:-python}
work=$(mktemp -d "${TMPDIR:-/tmp}/siamforensic-wheel.XXXXXX")
trap 'rm -rf "$work"' EXIT
step() { printf '\n== %s\n' "$*"; }
fail() { printf 'check_wheel: FAILED: %s\n' "$*" >&2; exit 1; }

weights=src/napari_siamforensic/weights/default.safetensors
weights_untracked=""
[ -f "$weights" ] || fail "$weights is missing: the wheel must carry the default weights (commit them first)"
if ! git ls-files --error-unmatch "$weights" >/dev/null 2>&1; then
    weights_untracked=1
    echo "check_wheel: WARNING: $weights is on disk but not committed; a clean checkout would build" \
         "a wheel WITHOUT the default weights. The checks go on with the file on disk, then fail." >&2
fi

step "python -m build (wheel and sdist) into $work/dist"
"$python" -m build --outdir "$work/dist" . >"$work/build.log" 2>&1 || { tail -40 "$work/build.log"; fail "python -m build"; }
wheel=$(ls "$work"/dist/*.whl)
sdist=$(ls "$work"/dist/*.tar.gz)
ls -l "$work/dist"

step "twine check"
"$python" -m twine --version >/dev/null 2>&1 || "$python" -m pip install -q twine
"$python" -m twine check --strict "$wheel" "$sdist"

step "the wheel's contents"
"$python" - "$wheel" <<'EOF'
import sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
need = ["napari_siamforensic/napari.yaml", "napari_siamforensic/_sample_data.py",
        "napari_siamforensic/weights/default.safetensors"]
missing = [n for n in need if n not in names]
for n in need:
    print(("missing " if n in missing else "ok      ") + n)
entry = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
ep = zipfile.ZipFile(sys.argv[1]).read(entry[0]).decode() if entry else ""
print(("ok      " if "napari.manifest" in ep else "missing ") + "napari.manifest entry point")
sys.exit(1 if missing or "napari.manifest" not in ep else 0)
EOF

step "npe2 validate napari-siamforensic"
npe2 validate napari-siamforensic

step "fresh venv: torch==2.13.0, then the wheel + pyqt5 + napari"
python3 -m venv "$work/venv"
vpy="$work/venv/bin/python"
"$vpy" -m pip install -q --upgrade pip
"$vpy" -m pip install -q torch==2.13.0
"$vpy" -m pip install -q "$wheel" pyqt5 napari

step "npe2 list (fresh venv)"
"$work/venv/bin/npe2" list | tee "$work/npe2-list.txt"
grep -q "napari-siamforensic" "$work/npe2-list.txt" || fail "npe2 list does not show napari-siamforensic"

step "open every widget in a real viewer (fresh venv, xvfb-run)"
cd "$work"      # import the installed wheel, not the checkout's src/
xvfb-run -a "$vpy" - <<'EOF'
import napari
from npe2 import PluginManager

pm = PluginManager.instance()
pm.discover()
manifest = pm.get_manifest("napari-siamforensic")
names = [w.display_name for w in manifest.contributions.widgets]
assert names, "the manifest lists no widgets"
viewer = napari.Viewer(show=False)
for name in names:
    dock, widget = viewer.window.add_plugin_dock_widget("napari-siamforensic", name)
    print(f"ok      widget {name!r}: {type(widget).__name__}")
for key in ("planted-duplicates", "scribble-nuclei"):
    before = len(viewer.layers)
    viewer.open_sample("napari-siamforensic", key)
    print(f"ok      sample {key!r}: {len(viewer.layers) - before} layers")
import napari_siamforensic
print("installed from", napari_siamforensic.__file__)
viewer.close()
EOF

if [ -n "$weights_untracked" ]; then
    fail "$weights is not committed (see the warning above); everything else passed"
fi
step "check_wheel: all checks passed"
