"""``report.html`` in a real headless browser: Chromium renders the page with its table, curve and contact sheets.

Skipped where no Chromium is installed (CI's clean clone); on Debian ``apt-get install chromium``. The screenshot
is kept under the test's tmp folder (``SKYRANK_SCREENSHOT_DIR`` copies it elsewhere, to look at it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skylink_model.report.page import write_report
from skylink_model.report.sheets import POSITIVE

BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome", "chrome") if shutil.which(b)), None)


def screenshot(html: Path, png: Path, width: int = 1280, height: int = 2400) -> Path:
    """Render ``html`` with headless Chromium into ``png`` (``width`` × ``height`` CSS pixels)."""
    cmd = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           f"--window-size={width},{height}", f"--screenshot={png}", html.resolve().as_uri()]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, timeout=120, env={**os.environ, "HOME": str(png.parent)})
    return png


@pytest.mark.skipif(BROWSER is None, reason="no Chromium installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(tiny_run, tmp_path):
    result = write_report([tiny_run["eval_json"]], tmp_path / "report", queries=2, select="best")
    png = screenshot(result.html, tmp_path / "report.png")
    if os.environ.get("SKYRANK_SCREENSHOT_DIR"):
        shutil.copy(png, Path(os.environ["SKYRANK_SCREENSHOT_DIR"]) / "report-screenshot.png")
    with Image.open(png) as img:
        assert img.size == (1280, 2400)
        pixels = np.asarray(img.convert("RGB")).reshape(-1, 3).astype(int)
    # The page is not blank, and the contact sheets' green frames were loaded and painted (the legend alone: ~256 px).
    assert (pixels.sum(axis=1) < 200).mean() > 0.001  # text and lines
    green = np.abs(pixels - np.array(POSITIVE)).max(axis=1) <= 12
    assert green.sum() > 2000, "no positive frame visible: the contact sheet images did not load"
    # The matplotlib curve's blue line is there too.
    blue = np.abs(pixels - np.array((31, 119, 180))).max(axis=1) <= 12
    assert blue.sum() > 100, "the R@K curve did not render"
