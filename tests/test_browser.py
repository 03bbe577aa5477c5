"""Build the book, serve it on 127.0.0.1, and read it in headless Chromium as a reader with no
network would: answer quiz questions and see their feedback; on every chapter page, no request
beyond the local server (MathJax comes from the book's own files), formulas typeset, and no
JavaScript errors. A static check covers what every built page loads.

Chromium comes from Debian's packages (.ci/run installs it). Without it these tests are
skipped on a reader's machine, but fail in CI (CI=true), where they must run.
"""
import functools
import html.parser
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from lib.quiz import quiz_element_id

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CHAPTER_PAGES = sorted(p.relative_to(ROOT).with_suffix(".html").as_posix() for p in (ROOT / "chapters").rglob("*.ipynb")
                       if ".ipynb_checkpoints" not in p.parts)


def chromium_path():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is required in CI: .ci/run installs it with apt-get")
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    return path


@pytest.fixture(scope="module")
def built_book():
    """Build the book with warnings as errors (incremental: fast when nothing changed)."""
    jupyter_book = Path(sys.executable).parent / "jupyter-book"   # the one installed beside this Python
    result = subprocess.run([str(jupyter_book), "build", "-W", "--keep-going", str(ROOT)],
                            capture_output=True, text=True, cwd=ROOT)
    log = result.stdout + result.stderr
    warnings = [line for line in log.splitlines() if "WARNING:" in line or "ERROR:" in line]
    assert result.returncode == 0 and not warnings, "book build failed:\n" + "\n".join(warnings or log.splitlines()[-30:])
    return HTML


@pytest.fixture(scope="module")
def server(built_book):
    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(QuietHandler, directory=str(built_book))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser():
    executable = chromium_path()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


def open_page(browser, server, path):
    """Open ``path`` as a reader with no network would, and wait for MathJax to typeset it.

    Return the page, the list of its JavaScript errors, and the list of requests that tried
    to leave the local server: those are aborted, so a page that needs the network shows
    both an entry there and, usually, errors."""
    page = browser.new_page()
    errors, outside = [], []
    page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
    page.on("console", lambda message: errors.append(f"console: {message.text}") if message.type == "error" else None)

    def local_only(route):
        if route.request.url.startswith(server + "/"):
            return route.continue_()
        outside.append(route.request.url)
        return route.abort()

    page.route("**/*", local_only)
    page.goto(f"{server}/{path}", wait_until="networkidle")
    # window.MathJax is the page's configuration until MathJax loads, then MathJax itself.
    page.evaluate("async () => { if (window.MathJax && MathJax.startup) await MathJax.startup.promise; }")
    return page, errors, outside


def test_the_book_builds_without_warnings(built_book):
    assert (built_book / "index.html").exists()
    for page in CHAPTER_PAGES:
        assert (built_book / page).exists(), page


def test_quiz_answers_show_their_feedback(browser, server):
    page, errors, outside = open_page(browser, server, "chapters/normalization/05_quiz_and_exercises.html")
    assert outside == [], f"the quiz page asked the network for {outside}"
    quiz = page.locator(f"#{quiz_element_id('normalization')}")
    quiz.locator(".MCButton").first.wait_for(timeout=10_000)
    assert quiz.locator(".MultipleChoiceQn, .ManyChoiceQn").count() >= 8

    first_question = quiz.locator(".Quiz").nth(0)
    first_question.locator(".MCButton", has_text="Activation normalization").click()
    feedback = first_question.locator(".Feedback")
    assert "correct" in feedback.get_attribute("class")
    assert "no 'activation normalization'" in feedback.inner_text()

    second_question = quiz.locator(".Quiz").nth(1)
    second_question.locator(".MCButton", has_text="Batch norm and whitening were argued").click()
    feedback = second_question.locator(".Feedback")
    assert "incorrect" in feedback.get_attribute("class")
    assert "This is true" in feedback.inner_text()
    assert errors == [], errors
    page.close()


@pytest.mark.parametrize("path", CHAPTER_PAGES)
def test_chapter_pages_work_offline_with_their_math_typeset_and_alt_text_everywhere(browser, server, path):
    page, errors, outside = open_page(browser, server, path)
    page.wait_for_timeout(300)  # let deferred scripts run
    assert outside == [], f"{path} asked the network for {outside}"
    assert errors == [], errors
    # MathJax puts an mjx-container into every formula it typesets (Sphinx marks them .math).
    untypeset = page.locator("main .math:not(:has(mjx-container))")
    assert untypeset.count() == 0, f"formulas MathJax did not typeset on {path}: {untypeset.all_inner_texts()[:3]}"
    assert page.locator("mjx-merror").count() == 0, f"a TeX error on {path}"
    for image in page.locator("main img").all():
        assert (image.get_attribute("alt") or "").strip(), f"an image without alt text on {path}"
    page.close()


def test_mathjax_typesets_with_its_own_fonts_from_the_book(browser, server):
    """The check above is empty on a page without formulas; this page has many."""
    page, errors, outside = open_page(browser, server, "chapters/normalization/02_batch_norm.html")
    assert outside == [], f"the page asked the network for {outside}"
    assert page.locator("main mjx-container").count() >= 10
    fonts = page.evaluate("() => Array.from(document.fonts).filter(f => f.status === 'loaded').map(f => f.family)")
    assert "MJXTEX-I" in fonts, f"MathJax's TeX italic font did not load: {fonts}"   # every variable is set in it
    assert errors == [], errors
    page.close()


def built_pages(built_book):
    """The book's HTML pages: everything but Sphinx's _static, _sources, _images (and hidden folders)."""
    return sorted(p for p in built_book.rglob("*.html")
                  if not any(part.startswith(("_", ".")) for part in p.relative_to(built_book).parts))


class ResourceLinks(html.parser.HTMLParser):
    """Collect the URLs a page loads: scripts, stylesheets, fonts (as <link>), images and frames."""
    ATTRIBUTES = {"script": "src", "link": "href", "img": "src", "iframe": "src", "source": "src",
                  "video": "src", "audio": "src", "embed": "src", "object": "data"}

    def __init__(self):
        super().__init__()
        self.urls = []

    def handle_starttag(self, tag, attrs):
        url = dict(attrs).get(self.ATTRIBUTES.get(tag))
        if url:
            self.urls.append(url)


def leaves_the_server(url):
    return re.match(r"(https?:)?//", url.strip(), re.IGNORECASE) is not None


CSS_URL = re.compile(r"""url\(\s*(['"]?)(.*?)\1\s*\)|@import\s+(['"])(.*?)\3""")


def test_built_pages_load_nothing_from_outside_the_book(built_book):
    """Statically, so that it holds for every page, also those the browser tests do not open:
    no script, stylesheet, font, image or frame from another server, and every one of the
    book's own is there. (Links the reader clicks, such as the repository's, may go anywhere.)"""
    problems = []
    pages = built_pages(built_book)
    assert built_book / "chapters" / "normalization" / "02_batch_norm.html" in pages
    for page in pages:
        parser = ResourceLinks()
        parser.feed(page.read_text(encoding="utf-8"))
        for url in parser.urls:
            if leaves_the_server(url):
                problems.append(f"{page.relative_to(built_book)} loads {url}")
            elif not url.startswith(("data:", "#")):
                target = (page.parent / url.split("#")[0].split("?")[0]).resolve()
                if not target.is_file():
                    problems.append(f"{page.relative_to(built_book)} loads {url}, which the build does not have")
    for stylesheet in (built_book / "_static").rglob("*.css"):
        for match in CSS_URL.finditer(stylesheet.read_text(encoding="utf-8", errors="replace")):
            url = match.group(2) or match.group(4) or ""
            if leaves_the_server(url):
                problems.append(f"{stylesheet.relative_to(built_book)} loads {url}")
    assert problems == [], "\n".join(problems)


def test_mathjax_is_served_from_the_book(built_book):
    page = (built_book / "chapters" / "normalization" / "02_batch_norm.html").read_text(encoding="utf-8")
    assert 'src="../../_static/mathjax/tex-mml-chtml.js' in page
    fonts = built_book / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2"
    assert (fonts / "MathJax_Math-Italic.woff").is_file()


@pytest.mark.parametrize("path", CHAPTER_PAGES)
def test_pages_that_cite_list_their_references(built_book, path):
    html = (built_book / path).read_text(encoding="utf-8")
    if "footnote-reference" in html:
        assert 'class="footnote-list' in html, f"{path} cites papers but shows no reference list"


def test_mathjax_gets_its_configuration_from_a_deferred_script_just_before_it(built_book):
    # An inline `window.MathJax = {...}` made jupyterquiz read MathJax.version before MathJax had
    # loaded, on slow loads ("Cannot read properties of undefined (reading '0')"): _ext/offline_mathjax.py
    for path in CHAPTER_PAGES:
        html = (built_book / path).read_text()
        assert "<script>window.MathJax = " not in html, path   # (jupyterquiz's own code mentions window.MathJax)
        config = html.index('<script defer="defer" src="../../_static/mathjax/config.js')
        assert config < html.index("_static/mathjax/tex-mml-chtml.js") < config + 200, path
