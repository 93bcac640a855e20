"""Browser check of the built book: every figure loads and no internal link is broken.

Serves ``_build/html`` on 127.0.0.1 only and drives Debian's headless Chromium through selenium and
``/usr/bin/chromedriver`` (nothing is downloaded). Run by ``make test`` right after the book build;
skipped, with the reason, when no book has been built or Chromium is missing (``make browser-deps``).
"""

from __future__ import annotations

import functools
import shutil
import tempfile
import threading
import urllib.error
import urllib.request
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urldefrag, urlparse

import pytest

from planner.paths import REPO_ROOT

HTML = REPO_ROOT / "_build" / "html"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1280,1600")

pytestmark = [
    pytest.mark.skipif(not (HTML / "index.html").exists(), reason="no built book in _build/html (run `make book`)"),
    pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                       reason="chromium/chromedriver missing (run `make browser-deps`)"),
]


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output clean
        pass


@pytest.fixture(scope="module")
def server():
    """The built book over HTTP on 127.0.0.1 (an ephemeral port), never on another interface."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(HTML)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="book-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _results_page() -> str:
    """One results chapter of whichever preset the book was built from."""
    pages = sorted(HTML.glob("results/*/notebooks/03_evaluate.html")) or sorted(HTML.glob("results/*/notebooks/*.html"))
    if not pages:
        pytest.fail(f"the built book in {HTML} has no results pages (results/<preset>/notebooks/*.html)")
    return pages[0].relative_to(HTML).as_posix()


def _load(browser, url: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    WebDriverWait(browser, 30).until(lambda d: d.execute_script(
        "return document.readyState === 'complete' && Array.from(document.images).every(i => i.complete)"))


def _check_page(browser, server: str, path: str) -> tuple[list[str], set[str]]:
    """Broken images on the page, and the internal link targets it holds."""
    _load(browser, f"{server}/{path}")
    broken = browser.execute_script(
        "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")
    hrefs = browser.execute_script("return Array.from(document.querySelectorAll('a[href]')).map(a => a.href)")
    internal = {urldefrag(h)[0] for h in hrefs if urlparse(h).netloc == urlparse(server).netloc}
    return broken, internal


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.parametrize("page", ["index.html", "results"])
def test_figures_load_and_links_resolve(browser, server, page):
    path = _results_page() if page == "results" else page
    broken, links = _check_page(browser, server, path)
    assert not broken, f"{path}: images that did not load: {broken}"
    if page == "results":
        n_images = browser.execute_script("return document.images.length")
        assert n_images > 0, f"{path}: a results chapter without a single figure"
    dead = sorted(link for link in links if _status(link) != 200)
    assert not dead, f"{path}: broken internal links: {dead}"


def test_index_leads_to_the_abstract(browser, server):
    _load(browser, f"{server}/index.html")
    assert "Abstract" in browser.find_element("tag name", "body").text, \
        f"index.html did not lead to the abstract (landed on {browser.current_url})"
