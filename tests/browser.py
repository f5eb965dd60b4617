"""Open built book pages in headless Chromium (Debian's chromium + chromium-driver) and check them.

Used by the end-to-end test. The pages are served by a local HTTP server, as a reader's own machine
or GitHub Pages would serve them; every host name other than the local server's address is made
unresolvable, so anything a page tries to fetch from the internet shows up as a console error.
"""
from __future__ import annotations

import contextlib
import functools
import http.server
import os
import re
import shutil
import threading
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from helpers.plots import COLUMN_PX  # the column width figures' text is sized for [CSS px]

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")

INSTALL_HINT = "install Debian's packages: apt-get install chromium chromium-driver"


def find_browser() -> tuple[str, str] | None:
    """Paths of the Chromium binary and of chromedriver, or None if either is missing."""
    browser = next((shutil.which(n) for n in CHROMIUM_NAMES if shutil.which(n)), None)
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # no request log in the test output
        pass

    def handle(self):
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError):  # the browser moved on before the reply ended
            pass


@contextlib.contextmanager
def serve(folder: Path):
    """Serve ``folder`` on 127.0.0.1 (a free port) for the duration of the block; yield the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class PageReport:
    """What one page showed in the browser."""

    url: str
    final_url: str = ""
    console_errors: list[str] = field(default_factory=list)
    n_images: int = 0
    broken_images: list[str] = field(default_factory=list)
    n_math: int = 0
    math_errors: int = 0
    nav_links: list[str] = field(default_factory=list)
    broken_links: list[str] = field(default_factory=list)
    screenshot: Path | None = None
    #: tables wider than the text column: (first row, table width, column width) [CSS px]
    wide_tables: list[tuple] = field(default_factory=list)
    #: (kind, matched text) of log, progress or repr text shown on the page
    log_text: list[tuple] = field(default_factory=list)
    #: figures shown narrower than helpers.plots assumes when it sizes their text (natural width,
    #: or the column width if smaller): (src, shown width, assumed width) [CSS px]
    small_figures: list[tuple] = field(default_factory=list)


_IMAGES_JS = """
return Array.from(document.images).map(i => [i.currentSrc || i.src, i.complete, i.naturalWidth]);
"""
_FIGURES_JS = """
const article = document.querySelector('article.bd-article') || document.querySelector('main') || document.body;
return Array.from(article.querySelectorAll('img')).filter(i => i.naturalWidth > 0)
  .map(i => [i.currentSrc || i.src, i.getBoundingClientRect().width, i.naturalWidth]);
"""
_NAV_JS = """
const sel = 'nav a[href], .bd-sidebar a[href], .prev-next-area a[href], .bd-header a[href]';
return Array.from(document.querySelectorAll(sel)).map(a => a.href);
"""
_TABLES_JS = """
const article = document.querySelector('article.bd-article') || document.querySelector('main') || document.body;
const column = article.getBoundingClientRect().width;
return Array.from(article.querySelectorAll('table')).map(t => {
  const head = t.querySelector('tr');
  return [(head ? head.innerText : '').replace(/\\s+/g, ' ').slice(0, 80), t.scrollWidth, column];
});
"""
_TEXT_JS = """
const article = document.querySelector('article.bd-article') || document.querySelector('main') || document.body;
const c = article.cloneNode(true);  // what the page shows as text and output, not as code
c.querySelectorAll('.cell_input').forEach(e => e.remove());
c.querySelectorAll('div[class*="highlight-"], code').forEach(e => { if (!e.closest('.cell_output')) e.remove(); });
return c.textContent;
"""
#: Text that is a log, a progress line or a Python repr, not prose: none of it may show on a page.
LOG_PATTERNS = {
    "Keras epoch log": r"\bEpoch \d+/\d+|\d+/\d+ - \d+m?s - loss",
    "progress line": r"\d+%\s+\d+%|\(\d+ of \d+ tasks|Dask dashboard: http|it/s\]|rendered \d+/\d+ spectra|member \d+/\d+ \(seed",
    "Python repr": r"PosixPath\(|object at 0x[0-9a-f]+|<keras\.|np\.float64\(|array\(\[",
    "log record": r"^(WARNING|INFO|DEBUG|ERROR):|Traceback \(most recent call last\)",
    "Markdown table shown as text": r"\|\s*[-—:]+\s*\|\s*[-—:]+\s*\|",
}
_MATH_JS = """
const done = arguments[arguments.length - 1];
const count = () => done([document.querySelectorAll('mjx-container').length,
                          document.querySelectorAll('mjx-merror').length]);
if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
  MathJax.startup.promise.then(count, count);
} else { count(); }
"""


def open_driver(user_data_dir: Path):
    """A headless Chromium driven through chromedriver, with the console log switched on."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    found = find_browser()
    if found is None:
        raise RuntimeError("headless Chromium is not installed: " + INSTALL_HINT)
    browser, driver_path = found
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-quic", "--window-size=1280,1600",
                # nothing but the local server resolves: a page that needs the internet shows errors
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                f"--user-data-dir={user_data_dir}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver_path), options=opts)


def _settle(driver, timeout: float = 20.0) -> None:
    """Wait until the page (after any redirect) has loaded and shows its navigation."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(
        lambda d: d.execute_script("return document.readyState") == "complete"
        and d.execute_script("return document.querySelector('.bd-sidebar, nav') !== null"))


def _link_ok(url: str, cache: dict) -> bool:
    target = urllib.parse.urldefrag(url)[0]
    if target not in cache:
        try:
            with urllib.request.urlopen(target, timeout=10) as resp:  # noqa: S310 (local server only)
                cache[target] = resp.status == 200
        except OSError:
            cache[target] = False
    return cache[target]


def check_pages(html_dir: Path, pages: list[str], screenshot_dir: Path, work_dir: Path) -> list[PageReport]:
    """Open each page (path relative to ``html_dir``) in the browser and report what it showed.

    A screenshot of each page is written to ``screenshot_dir`` (``<page path with / as __>.png``).
    Navigation links pointing to the local server are fetched once each and must answer 200.
    """
    screenshot_dir.mkdir(parents=True, exist_ok=True)
    reports = []
    link_cache: dict = {}
    with serve(html_dir) as base:
        driver = open_driver(work_dir / "chromium-profile")
        try:
            driver.set_page_load_timeout(60)
            driver.set_script_timeout(60)
            for page in pages:
                rep = PageReport(url=base + page)
                driver.get(rep.url)
                _settle(driver)
                rep.final_url = driver.current_url
                rep.n_math, rep.math_errors = driver.execute_async_script(_MATH_JS)
                imgs = driver.execute_script(_IMAGES_JS)
                rep.n_images = len(imgs)
                rep.broken_images = [src for src, complete, width in imgs if not (complete and width > 0)]
                rep.nav_links = sorted({u for u in driver.execute_script(_NAV_JS) if u.startswith(base)})
                rep.broken_links = [u for u in rep.nav_links if not _link_ok(u, link_cache)]
                rep.console_errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
                rep.wide_tables = [tuple(t) for t in driver.execute_script(_TABLES_JS) if t[1] > t[2] + 1]
                rep.small_figures = [(src, shown, min(natural, COLUMN_PX)) for src, shown, natural
                                     in driver.execute_script(_FIGURES_JS) if shown < 0.98 * min(natural, COLUMN_PX)]
                text = driver.execute_script(_TEXT_JS)
                rep.log_text = [(kind, m.group(0)) for kind, pat in LOG_PATTERNS.items()
                                for m in [re.search(pat, text, re.MULTILINE)] if m]
                shot = screenshot_dir / (page.replace("/", "__").replace(".html", "") + ".png")
                driver.save_screenshot(str(shot))
                rep.screenshot = shot
                reports.append(rep)
        finally:
            driver.quit()
    return reports


def require_browser() -> bool:
    """Whether a missing browser must fail the tests (set ``REQUIRE_BROWSER=1``, as CI does)."""
    return os.environ.get("REQUIRE_BROWSER", "") not in ("", "0")
