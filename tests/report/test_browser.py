"""report.html in a real headless browser (Debian's chromium and chromedriver through
selenium): every image loads with a non-zero size, the page logs no console error and loads
nothing from outside its own file.

`.ci/run` installs chromium and chromium-driver, so in CI (``CI`` set) a missing browser is a
failure; elsewhere the test is skipped with the reason and the install line.
"""

from __future__ import annotations

import os
import shutil

import pytest

from graphpai.report.html import write_study_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
INSTALL = "apt-get install chromium chromium-driver; pip install selenium (the dev extra)"


def _need(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; .ci/run installs it ({INSTALL})")
    pytest.skip(f"{reason}: {INSTALL}")


@pytest.fixture(scope="module")
def browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _need("selenium is not installed")
    if not CHROMIUM or not DRIVER:
        _need("no headless browser here (chromium and chromedriver not on PATH)")
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium's manager downloads nothing
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1280,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


_IMAGES = """
return Array.from(document.images).map(img => {
  const box = img.getBoundingClientRect();
  return {alt: img.alt, complete: img.complete, natural: [img.naturalWidth, img.naturalHeight],
          shown: [box.width, box.height], local: img.src.startsWith('data:')};
});
"""

_RESOURCES = """
return performance.getEntriesByType('resource').map(e => e.name);
"""


def check_page(driver, page):
    driver.get(page.resolve().as_uri())
    assert driver.title
    images = driver.execute_script(_IMAGES)
    assert images, "the page shows no image"
    for img in images:
        assert img["complete"], img
        assert min(img["natural"]) > 0 and min(img["shown"]) > 0, img
        assert img["local"], img  # inline: the page is self-contained
    assert driver.execute_script(_RESOURCES) == []  # nothing else fetched
    errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []
    # readable on a laptop screen: no horizontal scroll of the whole page
    width = driver.execute_script("return document.documentElement.scrollWidth")
    assert width <= driver.execute_script("return window.innerWidth")
    return images


def test_study_page_in_a_browser(browser, full_table, tmp_path):
    for r in full_table:  # a trained study: the accuracy section too
        r["best_test_acc"] = 0.1 if r["channel_disconnected"] else 0.9 - 0.1 * r[
            "log10_compression"] - 0.01 * r["seed"] * (r["method"] == "rpi")
    page = write_study_report(full_table, tmp_path / "study", params={"model": "resnet20"})
    images = check_page(browser, page)
    names = {img["alt"] for img in images}
    assert {"functional_ratio", "npb_plane", "spectral_means", "accuracy_vs_compression",
            "metric_accuracy_log10_paths"} <= names
    assert len(images) == len(list((tmp_path / "study" / "figures").glob("*.png")))


def test_mask_page_in_a_browser(browser, tmp_path):
    pytest.importorskip("torch")
    from graphpai.cli import main

    for name, method in (("a", "rpi"), ("b", "mica")):
        assert main(["prune", "--model", "mlp", "--method", method, "--compression", "100",
                     "--masks-out", str(tmp_path / f"{name}.pt"), "--quiet"]) == 0
    assert main(["report", "--model", "mlp", "--masks", str(tmp_path / "a.pt"), "--masks",
                 str(tmp_path / "b.pt"), "--out", str(tmp_path / "rep")]) == 0
    images = check_page(browser, tmp_path / "rep" / "report.html")
    assert len(images) == 6  # bars, spectrum and degree histograms per mask


def test_a_broken_image_is_caught(browser, tmp_path):
    """The check fails on a page whose image does not load (the test can fail)."""
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><head><title>x</title></head><body>'
                    '<img alt="bad" src="data:image/png;base64,AAAA"></body></html>')
    with pytest.raises(AssertionError):
        check_page(browser, page)


def test_a_console_error_is_caught(browser, tmp_path):
    import base64

    from graphpai.report.figures import _new_figure
    from graphpai.report.html import figure_png

    fig, ax = _new_figure(1, 1)
    data = base64.b64encode(figure_png(fig, dpi=20)).decode()
    page = tmp_path / "noisy.html"
    page.write_text(f'<!DOCTYPE html><html><head><title>x</title></head><body><img alt="ok" '
                    f'src="data:image/png;base64,{data}"><script>console.error("boom")</script>'
                    '</body></html>')
    with pytest.raises(AssertionError, match="boom"):
        check_page(browser, page)
