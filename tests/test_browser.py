"""A real browser (Debian's headless Chromium via Playwright) drives the page."""

import json
import os
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]


@pytest.fixture(scope="module")
def page(app_url):
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (scripts/setup.sh dev installs it)")
        pytest.skip("chromium is not installed: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.goto(app_url)
        pg.wait_for_selector("#compare-btn", timeout=60_000)
        pg.js_errors = errors
        try:
            yield pg
        finally:
            browser.close()


def _wait_result(pg, passage_snippet: str):
    """Wait until the cards show the result for the passage that contains `passage_snippet`.

    White space is ignored: the highlight widget splits the passage into spans around the answer.
    """
    pg.wait_for_function(
        """snip => { const a = document.querySelector('#agreement'); const h = document.querySelector('#hl-int8-cpu');
                     const squash = s => s.replace(/\\s+/g, '');
                     return a && a.innerText.includes('INT8') && h && squash(h.textContent).includes(squash(snip)); }""",
        arg=passage_snippet, timeout=120_000)


def test_first_example_three_cards_and_chart(page, tmp_path):
    first = json.loads((ROOT / "assets" / "examples.json").read_text(encoding="utf-8"))[0]
    page.get_by_text(first["passage"][:40]).first.click()  # the Examples table row
    from playwright.sync_api import expect

    expect(page.locator("#passage textarea")).to_have_value(first["passage"], timeout=30_000)
    expect(page.locator("#question input, #question textarea")).to_have_value(first["question"])
    page.click("#compare-btn")
    _wait_result(page, first["passage"][-30:])
    for v, label in [("fp32-cpu", "FP32 · CPU"), ("int8-cpu", "INT8 · CPU"), ("fp32-cuda", "FP32 · CUDA")]:
        card = page.locator(f"#card-{v}")
        assert card.is_visible() and label in card.inner_text()
    for v in ("fp32-cpu", "int8-cpu"):
        assert "ms median" in page.locator(f"#card-{v}").inner_text()
    assert "Not available" in page.locator("#card-fp32-cuda").inner_text() or "ms median" in page.locator("#card-fp32-cuda").inner_text()
    chart = page.locator("#latency-chart")
    assert chart.is_visible() and "FP32 · CPU" in chart.inner_text() and "INT8 · CPU" in chart.inner_text()
    assert "MiB" in page.locator("#sizes").inner_text()
    page.screenshot(path=str(tmp_path / "first-example.png"), full_page=True)
    assert not page.js_errors, page.js_errors


def test_html_in_passage_is_text_not_code(page, tmp_path):
    evil = ('<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"> '
            "<b>Ada Lovelace</b> was born in London in 1815.")
    page.fill("#passage textarea", evil)
    page.fill("#question input, #question textarea", "Where was Ada Lovelace born?")
    page.click("#compare-btn")
    _wait_result(page, "born in London in 1815")
    assert page.evaluate("window.__pwned") is None
    # shown as text (compare without white space: the widget adds some between its spans)
    shown = "".join(page.locator("#hl-int8-cpu .textfield").text_content().split())
    assert "".join('<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'.split()) in shown
    assert page.locator("#hl-fp32-cpu img").count() == 0
    # whatever the tiny model answers, the highlight is exactly the answer shown on the card
    card = page.locator("#card-int8-cpu").inner_text()
    answer = card.split("“", 1)[1].split("”", 1)[0] if "“" in card else ""
    highlighted = page.locator("#hl-int8-cpu .token.highlighted")
    if answer:
        assert highlighted.first.inner_text().strip() == answer.strip()
    else:
        assert highlighted.count() == 0


def test_readme_screenshot(page):
    """A run the tiny model can really answer; saved to assets/ when QUANTQA_UPDATE_SCREENSHOT=1."""
    page.fill("#passage textarea", "The museum opened a new wing last spring. Grace Hopper was born in Boston in "
                                   "1906. Many people visit it every summer.")
    page.fill("#question input, #question textarea", "When was Grace Hopper born?")
    page.click("#compare-btn")
    _wait_result(page, "Grace Hopper was born")
    assert "1906" in page.locator("#card-int8-cpu").inner_text()
    if os.environ.get("QUANTQA_UPDATE_SCREENSHOT") == "1":
        page.screenshot(path=str(ROOT / "assets" / "screenshot.png"), full_page=True)
