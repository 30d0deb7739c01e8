"""The web page in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright) against
`cyclegan serve`: a large photo is translated in tiles while the page shows the server's
progress, and the quality signal of a model exported with a threshold is shown. A screenshot
of the finished page is kept (its path is printed) for a person to look at."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from helpers import TESTS_PROFILE
from helpers.serving import ServerProcess, cli_main, shared_export, write_evaluation

CHROMIUM = Path("/usr/bin/chromium")
SETTINGS = ["--set", "serve.tile_above_pixels=16384", "--set", "serve.tile_size=128", "--set", "serve.tile_overlap=32"]
pytestmark = pytest.mark.slow     # trains, exports twice, starts a server and a browser


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from training.utils import sha256_file

    _, checkpoint, _ = shared_export(tmp_path_factory)
    root = tmp_path_factory.mktemp("page")
    # a threshold no image reaches: the AtoB model flags everything, so the page shows its warning
    metrics = write_evaluation(root / "eval", sha256_file(checkpoint), a=99.0, b=1.0)
    assert cli_main("export", "--checkpoint", str(checkpoint), "--out", str(root / "export"), "--metrics",
                    str(metrics), "--params", str(TESTS_PROFILE), "--no-progress") == 0
    proc = ServerProcess(str(root / "export"), root / "serve.log", *SETTINGS)
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


def photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    image = np.stack([xx / w, yy / h, 0.5 + 0.3 * np.sin(xx / 37.0 + yy / 53.0)], axis=-1)
    image += rng.normal(0, 0.03, image.shape)
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


def test_large_photo_with_progress_and_the_quality_warning(server, tmp_path):
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is not installed at /usr/bin/chromium (make system-deps)")
    from PIL import Image
    from playwright.sync_api import sync_playwright

    upload = tmp_path / "large.png"
    Image.fromarray(photo(900, 1200)).save(upload)
    progress = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})

            def seen(response):
                if "/v1/progress/" in response.url and response.status == 200:
                    progress.append(response.json())

            page.on("response", seen)
            page.goto(server.url + "/")
            assert page.is_checked("#quality-check")
            page.set_input_files("#file", str(upload))
            page.select_option("#direction", "AtoB")
            page.click("#go")
            # the bar appears once the server reports tile progress
            page.wait_for_selector("#progress", state="visible", timeout=120_000)
            status = page.inner_text("#status")
            assert "Translating in tiles… " in status or "Quality check… " in status
            page.screenshot(path=str(tmp_path / "page-progress.png"))
            page.wait_for_function("document.getElementById('output').complete && "
                                   "document.getElementById('output').naturalWidth > 0", timeout=240_000)
            size = page.evaluate("[document.getElementById('output').naturalWidth, "
                                 "document.getElementById('output').naturalHeight]")
            assert size == [1200, 900]
            status = page.inner_text("#status")
            assert "cyclegan-AtoB in " in status and " tiles in " in status
            assert page.get_attribute("#quality", "class") == "out-of-domain"
            warning = page.inner_text("#quality")
            assert warning.startswith("Out of domain: cycle PSNR ") and "below 99.00 dB" in warning
            assert page.is_hidden("#progress")
            time.sleep(0.2)
            shot = tmp_path / "page-large-photo.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    print(f"\nscreenshot: {shot}")   # pytest keeps the last runs' tmp_path folders
    # the page saw the server's progress part-way through a tiled translation
    partway = [r for r in progress if 0 < r["done"] < r["total"] and r["stage"] in ("translate", "quality")]
    assert partway, progress[-5:]
    assert all(r["total"] > 100 for r in partway)       # counted in tile calls, not one step
