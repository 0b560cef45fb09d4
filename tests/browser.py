"""Headless Chromium for the tests that look at pages as a person would (web GUI, campaign report).

Debian's ``chromium`` is started as root with the flags this closed-network machine needs (no sandbox,
no background networking, a fresh profile). :func:`render` returns the DOM after scripts ran and can
keep a PNG screenshot as a test artifact (``test-artifacts/``).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"

_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
]


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def require_chromium() -> str:
    """The browser executable, or skip the test with the reason."""
    path = chromium_path()
    if path is None:
        pytest.skip("headless chromium not installed (apt-get install -y chromium)")
    return path


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="aso-chromium-") as profile:
        return subprocess.run(
            [require_chromium(), *_FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def render(
    url: str,
    screenshot: str | Path | None = None,
    size: tuple[int, int] = (1280, 1000),
    timeout: float = 90,
) -> str:
    """Load ``url`` in headless Chromium; return the rendered DOM, optionally saving a screenshot.

    Parameters
    ----------
    url
        ``http://127.0.0.1:PORT/...`` or ``file:///...``.
    screenshot
        A PNG path (relative paths go under ``test-artifacts/``).
    """
    common = [f"--window-size={size[0]},{size[1]}", "--virtual-time-budget=5000"]
    dom = _run([*common, "--dump-dom", url], timeout)
    if dom.returncode != 0 or not dom.stdout.strip():
        raise RuntimeError(f"chromium could not render {url}: {dom.stderr.strip()[-500:]}")
    if screenshot is not None:
        shot = Path(screenshot)
        if not shot.is_absolute():
            shot = ARTIFACTS / shot
        shot.parent.mkdir(parents=True, exist_ok=True)
        res = _run([*common, f"--screenshot={shot}", url], timeout)
        if not shot.is_file() or shot.stat().st_size == 0:
            raise RuntimeError(f"chromium wrote no screenshot of {url}: {res.stderr.strip()[-500:]}")
    return dom.stdout
