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
def browser():
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (scripts/setup.sh dev installs it)")
        pytest.skip("chromium is not installed: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:  # one per process: a second sync_playwright() cannot run beside it
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


def _open(browser, url):
    pg = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(url)
    pg.wait_for_selector("#compare-btn", timeout=60_000)
    pg.js_errors = errors
    try:
        yield pg
    finally:
        pg.close()


@pytest.fixture(scope="module")
def page(browser, app_url):
    yield from _open(browser, app_url)


@pytest.fixture(scope="module")
def minilm_page(browser, minilm_app_url):
    yield from _open(browser, minilm_app_url)


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


def test_highlight_reads_as_running_text(page):
    """The answer is marked in place: on the line of the text before it, with no gap before the punctuation after it."""
    page.fill("#passage textarea", "It has a famous library. Grace Hopper was born in Boston in 1906. Many people "
                                   "visit it every summer. The winters there are long and cold.")
    page.fill("#question input, #question textarea", "When was Grace Hopper born?")
    page.click("#compare-btn")
    _wait_result(page, "Grace Hopper was born")
    geo = page.evaluate("""() => {
        const field = document.querySelector('#hl-fp32-cpu .textfield');
        const chip = field.querySelector('.token.highlighted');
        const walker = document.createTreeWalker(field, NodeFilter.SHOW_TEXT);
        let before = null, after = null, node;
        while ((node = walker.nextNode())) {
            // the passage's own text only: Gradio also puts white-space nodes between its span elements
            if (chip.contains(node) || !node.textContent.length || !node.parentElement.classList.contains('text')) continue;
            if (chip.compareDocumentPosition(node) & Node.DOCUMENT_POSITION_PRECEDING) before = node;
            else if (!after) after = node;
        }
        const rect = (n, i) => { const r = document.createRange(); r.setStart(n, i); r.setEnd(n, i + 1);
                                 return r.getBoundingClientRect(); };
        const c = chip.querySelector('.text') || chip;
        const b = rect(before, before.textContent.length - 1), a = rect(after, 0), k = c.getBoundingClientRect();
        return {display: getComputedStyle(field).display, chip: chip.innerText.trim(), afterChar: after.textContent[0],
                sameLine: Math.abs(b.top - k.top) < 8, gapAfter: a.left - k.right};
    }""")
    assert geo["display"] == "block" and geo["chip"] == "1906"
    assert geo["sameLine"], geo  # the chip does not start a new line
    assert geo["afterChar"] == "." and geo["gapAfter"] < 6, geo  # no space before the full stop


def _inspect(pg, k: int) -> None:
    """On the Inspect tab: set K, press Inspect, wait for the summary and the three plots."""
    pg.get_by_role("tab", name="Inspect").click()
    pg.fill("#keep-k input[type=number]", str(k))
    pg.locator("#keep-k input[type=number]").press("Enter")
    pg.click("#inspect-btn")
    pg.wait_for_function("() => (document.querySelector('#inspect-summary') || {}).innerText?.includes('INT8')",
                         timeout=120_000)
    for plot in ("#plot-heatmap", "#plot-depth", "#plot-tokens"):
        pg.wait_for_selector(f"{plot} .js-plotly-plot", timeout=30_000)


def test_inspect_tab_draws_its_plots(page):
    ex_passage = "It has a famous library. Grace Hopper was born in Boston in 1906. Many people visit it every summer."
    page.get_by_role("tab", name="Compare").click()
    page.fill("#passage textarea", ex_passage)
    page.fill("#question input, #question textarea", "Where was Grace Hopper born?")
    _inspect(page, 2)
    assert "Boston" in page.locator("#inspect-summary").inner_text()
    heat = page.locator("#plot-heatmap").inner_text()
    assert "FFN in" in heat and "layer 1" in heat
    assert "p(start)" in page.locator("#plot-tokens").inner_text()
    table = page.locator("#mixed-table").inner_text()  # Gradio's Dataframe rows are not plain <tr>s
    lines = [ln.strip() for ln in table.splitlines() if ln.strip()]
    assert "FP32" in lines and "INT8" in lines and "INT8, 2 least precise in FP32" in lines
    assert lines.count("Boston") == 3
    assert not page.js_errors, page.js_errors


@pytest.mark.minilm
def test_readme_screenshot(minilm_page):
    """MiniLM-QA (real pretrained weights) with the static card; saved to assets/ when QUANTQA_UPDATE_SCREENSHOT=1."""
    pg = minilm_page
    pg.get_by_role("tab", name="Compare").click()
    pg.fill("#passage textarea", "The museum opened a new wing last spring. Grace Hopper was born in Boston in 1906, "
                                 "and she later worked as a computer scientist. Many people visit it every summer.")
    pg.fill("#question input, #question textarea", "Where was Grace Hopper born?")
    pg.click("#compare-btn")
    _wait_result(pg, "Grace Hopper was born")
    for v in ("fp32-cpu", "int8-cpu"):
        assert "“Boston”" in pg.locator(f"#card-{v}").inner_text()
    static = pg.locator("#card-int8-static-cpu").inner_text()
    assert "INT8 static" in static and ("“Boston”" in static or "Not available" in static)
    assert "minilm" in pg.locator("#header").inner_text()
    if os.environ.get("QUANTQA_UPDATE_SCREENSHOT") == "1":
        pg.screenshot(path=str(ROOT / "assets" / "screenshot.png"), full_page=True)


@pytest.mark.minilm
def test_readme_inspect_screenshot(minilm_page):
    """Marie Curie (the app's second example): on MiniLM-QA, INT8 changes a low-confidence answer."""
    pg = minilm_page
    pg.get_by_role("tab", name="Compare").click()
    second = json.loads((ROOT / "assets" / "examples.json").read_text(encoding="utf-8"))[1]
    pg.get_by_text(second["passage"][:40]).first.click()
    _inspect(pg, 8)
    assert "output.dense" in pg.locator("#inspect-summary").inner_text()  # FFN out: the least precise here
    assert "INT8, 8 least precise in FP32" in pg.locator("#mixed-table").inner_text()
    pg.wait_for_timeout(1000)
    if os.environ.get("QUANTQA_UPDATE_SCREENSHOT") == "1":
        pg.screenshot(path=str(ROOT / "assets" / "inspect.png"), full_page=True)
    assert not pg.js_errors, pg.js_errors
