"""The HTML report in a real browser: headless Chromium renders report.html to a screenshot.

Checks that the page a person opens shows the thumbnails (many distinct colours, large areas
of gray mid-tones, and the red and blue region boxes), not a blank or broken page. A report
without pairs, rendered the same way, is the contrast: it has the same gray header text, and
the thumbnails must add at least two 160 px thumbnails' worth of gray pixels to it.
Chromium comes from Debian's package (``apt-get install chromium``; .ci/run installs it);
without /usr/bin/chromium the test is skipped, saying so.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_siamforensic.screening import screen

from .conftest import scene8

CHROMIUM = Path("/usr/bin/chromium")
WIDTH, HEIGHT = 1200, 900

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="/usr/bin/chromium is absent: install Debian's 'chromium' package (apt-get install chromium) "
           "to render the HTML report in a real headless browser")


def _screenshot(html_path: Path, tmp_path: Path, name: str) -> np.ndarray:
    png = tmp_path / f"{name}.png"
    profile = tmp_path / f"profile-{name}"
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", f"--screenshot={png}", f"--window-size={WIDTH},{HEIGHT}",
           html_path.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert png.is_file(), f"chromium wrote no screenshot (exit {proc.returncode}): {proc.stderr[-2000:]}"
    return np.asarray(Image.open(png).convert("RGB"))


def _colours(rgb: np.ndarray) -> int:
    flat = rgb.reshape(-1, 3).astype(np.uint32)
    return len(np.unique((flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2]))


def _gray_pixels(rgb: np.ndarray) -> int:
    """Pixels of a neutral gray mid-tone (thumbnails; text adds only its anti-aliased edges)."""
    r, g, b = (rgb[..., i].astype(int) for i in range(3))
    return int(((r == g) & (g == b) & (r > 20) & (r < 235)).sum())


def test_report_renders_thumbnails_in_chromium(model, tmp_path):
    a = scene8(50, 160)
    arrays = [a, scene8(51, 160), scene8(52, 160), np.ascontiguousarray(a[:, ::-1])]
    res = screen(arrays, model, poses="dihedral", candidates=2, localize=2)
    assert len(res.thumbnails) >= 2
    page = res.to_html(tmp_path / "report.html")

    shot = _screenshot(page, tmp_path, "report")
    assert shot.shape[:2] == (HEIGHT, WIDTH)
    n = _colours(shot)
    assert n > 300, f"the rendered report has only {n} distinct colours: thumbnails not shown"
    gray = _gray_pixels(shot)
    # the same page without pairs has the same header (gray text, #555, which grows with every
    # key a screen reports in its info line): what the thumbnails add is the difference
    empty = res.__class__(res.items.iloc[:0], res.pairs.iloc[:0], res.skipped, res.info, {})
    empty_gray = _gray_pixels(_screenshot(empty.to_html(tmp_path / "empty.html"), tmp_path, "empty"))
    assert gray - empty_gray > 2 * 160 * 160, (
        f"the report has {gray} gray pixels, the same page without pairs {empty_gray}: not even the first pair's "
        "two thumbnails shown")
    # the region boxes are drawn in red (#e8112d) and blue (#1f77ff)
    r, g, b = (shot[..., i].astype(int) for i in range(3))
    assert ((r > 180) & (g < 80) & (b < 90)).sum() > 50, "no red region box on the screenshot"
    assert ((b > 200) & (r < 80) & (g > 80) & (g < 160)).sum() > 50, "no blue region box on the screenshot"
