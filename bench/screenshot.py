"""Screenshots of a page in a headless Chromium: how the report page's rendering is checked and shown."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from dejavu.files import atomic_path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def find_browser() -> str | None:
    """Returns the path of a headless-capable Chromium on PATH, or None."""
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def screenshot(page: Path, png: Path, size: tuple[int, int] = (1280, 3000)) -> Path:
    """Returns `png` after a headless browser rendered `page` into it at `size` (width, height) pixels."""
    browser = find_browser()
    if browser is None:
        raise FileNotFoundError(f"no browser to render {page} with: install chromium (apt-get install chromium)")
    with atomic_path(png) as tmp:
        # --no-sandbox: the sandbox refuses to start as root, as in containers and CI
        done = subprocess.run([browser, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
                               f"--screenshot={tmp}", f"--window-size={size[0]},{size[1]}",
                               Path(page).resolve().as_uri()], capture_output=True, text=True, timeout=300)
        if done.returncode != 0 or tmp.stat().st_size == 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise RuntimeError(f"{browser} could not render {page} (exit {done.returncode}): {last}")
    return png
