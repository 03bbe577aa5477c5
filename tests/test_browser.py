"""Build the book, serve it on 127.0.0.1, and read it in headless Chromium as a reader would:
answer quiz questions and see their feedback; no JavaScript errors on any chapter page.

Chromium comes from Debian's packages (.ci/run installs it). Without it these tests are
skipped on a reader's machine, but fail in CI (CI=true), where they must run.
"""
import functools
import http.server
import os
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


MATHJAX_CDN = "https://cdn.jsdelivr.net/npm/mathjax@3/"
MATHJAX_LOCAL = ROOT / "tests" / "browser" / "node_modules" / "mathjax"


def serve_offline(route):
    """Pages load from the local server; MathJax, which the book takes from a CDN, from the copy
    that tests/browser/package.json pins (npm ci --prefix tests/browser). Anything else from the
    network is refused, so a page that needs more than that shows up as an error."""
    url = route.request.url
    if url.startswith("http://127.0.0.1"):
        return route.continue_()
    if url.startswith(MATHJAX_CDN):
        local = MATHJAX_LOCAL / url[len(MATHJAX_CDN):].split("?")[0]
        if local.is_file():
            return route.fulfill(path=str(local))
    return route.abort()


@pytest.fixture(scope="module")
def mathjax():
    if not (MATHJAX_LOCAL / "es5" / "tex-mml-chtml.js").is_file():
        if os.environ.get("CI"):
            pytest.fail("MathJax for the browser test is missing: .ci/run runs npm ci --prefix tests/browser")
        pytest.skip("run `npm ci --prefix tests/browser` (or make setup) to install the browser test's MathJax")


def open_page(browser, url):
    """Open ``url``; return the page and the list that collects its JavaScript errors."""
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
    page.on("console", lambda message: errors.append(f"console: {message.text}") if message.type == "error" else None)
    page.route("**/*", serve_offline)
    page.goto(url, wait_until="networkidle")
    return page, errors


def test_the_book_builds_without_warnings(built_book):
    assert (built_book / "index.html").exists()
    for page in CHAPTER_PAGES:
        assert (built_book / page).exists(), page


def test_quiz_answers_show_their_feedback(browser, server, mathjax):
    page, errors = open_page(browser, f"{server}/chapters/normalization/05_quiz_and_exercises.html")
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
    assert errors == []
    page.close()


@pytest.mark.parametrize("path", CHAPTER_PAGES)
def test_chapter_pages_have_no_javascript_errors_and_alt_text_everywhere(browser, server, mathjax, path):
    page, errors = open_page(browser, f"{server}/{path}")
    page.wait_for_timeout(300)  # let deferred scripts run
    assert errors == [], errors
    for image in page.locator("main img").all():
        assert (image.get_attribute("alt") or "").strip(), f"an image without alt text on {path}"
    page.close()


@pytest.mark.parametrize("path", CHAPTER_PAGES)
def test_pages_that_cite_list_their_references(built_book, path):
    html = (built_book / path).read_text(encoding="utf-8")
    if "footnote-reference" in html:
        assert 'class="footnote-list' in html, f"{path} cites papers but shows no reference list"
