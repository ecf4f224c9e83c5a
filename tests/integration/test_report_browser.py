"""The HTML report in a real browser: headless Chromium loads it without console errors and
renders every chart. Skipped when no Chromium is installed."""

import re
import shutil
import subprocess

import pytest

from fastprof import report
from report_fixtures import gpu_sweep, gpu_sweep_doc  # noqa: F401
from sampler_fixtures import fake_nvml_path  # noqa: F401

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def _browser():
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no chromium binary found (apt-get install chromium)")


def _headless(browser, *args, tmp_path):
    cmd = [browser, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--disable-extensions",
           "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
           *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_report_renders_in_chromium(gpu_sweep, tmp_path):  # noqa: F811
    browser = _browser()
    page = tmp_path / "report.html"
    report.write_html(gpu_sweep, str(page), source="sweep.json")
    n_images = len(re.findall(r"<img ", page.read_text()))
    assert n_images == 18  # per configuration 4 (with the host breakdown) x 4, and 2 sweep charts

    dom = _headless(browser, "--dump-dom", page.as_uri(), tmp_path=tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    # The browser parsed the whole document: every chart and section is in its DOM.
    assert len(re.findall(r"<img ", dom.stdout)) == n_images
    assert dom.stdout.count("<h2>Configuration ") == 5 and "</body></html>" in dom.stdout.replace("\n", "")
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console
    # A network request would be logged as a failed load: nothing is fetched.
    assert "ERR_" not in dom.stderr and "net::" not in dom.stderr, dom.stderr[-2000:]

    shot = tmp_path / "report.png"
    run = _headless(browser, f"--screenshot={shot}", "--window-size=1280,4000", "--hide-scrollbars", page.as_uri(),
                    tmp_path=tmp_path)
    assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # A rendered page with charts is far from blank: many distinct colours in the screenshot.
    from matplotlib import image

    pixels = image.imread(str(shot))
    assert pixels.shape[0] >= 4000 and pixels.shape[1] >= 1280
    colours = {tuple((p * 255).astype(int)) for p in pixels[::7, ::7, :3].reshape(-1, 3)}
    assert len(colours) > 50
