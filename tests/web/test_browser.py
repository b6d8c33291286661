"""A real headless Chromium (Debian's, driven by Playwright) against a real `cbir serve`:
drop an image, see results, click one for "more like this". Never `playwright install`: it
downloads a browser of its own, which cannot work here; `make setup` installs chromium."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from tests.web.helpers import query_png

pytestmark = pytest.mark.browser
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
expect, sync_playwright = sync_api.expect, sync_api.sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]  # fmt: skip
TIMEOUT_MS = 15_000
# Kept after the run (pytest's temporary folders are rotated away), ignored by git.
SCREENSHOTS = Path(__file__).resolve().parents[2] / "runs" / "screenshots"


@pytest.fixture
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: `make setup` installs Debian's chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def drop_file(page, selector: str, data: bytes, name: str) -> None:
    """Drag and drop a file onto `selector`, as a person dropping it from their desktop."""
    transfer = page.evaluate_handle(
        """([b64, name]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type: "image/png" }));
            return transfer;
        }""",
        [base64.b64encode(data).decode(), name],
    )
    page.dispatch_event(selector, "dragenter", {"dataTransfer": transfer})
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


def paste_file(page, data: bytes, name: str) -> None:
    """Paste a file on the page, as a person pasting a copied image (Ctrl+V)."""
    page.evaluate(
        """([b64, name]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type: "image/png" }));
            document.dispatchEvent(new ClipboardEvent("paste", { clipboardData: transfer }));
        }""",
        [base64.b64encode(data).decode(), name],
    )


def test_drop_an_image_then_more_like_this(browser, live_server, screenshots):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    problems: list[str] = []  # console errors include CSP violations
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))

    page.goto(live_server.url)
    assert page.locator(".examples .card").count() >= 1

    assert page.locator(".about code").inner_text() == "gch"  # which extractor matches
    drop_file(page, "#dropzone", query_png(40), "dark-query.png")
    page.wait_for_selector('.query-summary[data-query-kind="upload"]')
    assert page.locator("#preview").is_visible()  # the query, previewed in the drop zone
    assert page.locator(".grid .card").count() == 10
    assert "dark-query.png" in page.locator(".query-summary h1").inner_text()
    assert "cosine similarity" in page.locator(".legend").inner_text()
    first_label = page.locator(".grid .card .chip").first.inner_text()
    assert first_label == "dark"
    upload_shot = screenshots / "test-upload-results.png"
    page.screenshot(path=upload_shot, full_page=True)

    # More results: the upload is sent again with an offset, the next page appended.
    page.locator("button.more-page").click()
    expect(page.locator(".grid .card")).to_have_count(18)  # the whole small collection
    assert page.locator(".grid .card .rank").nth(10).inner_text() == "#11"
    assert page.locator(".more-results").count() == 0  # nothing past the whole collection

    first_id = (
        page.locator(".grid .card a.more").first.get_attribute("title").removeprefix("More like ")
    )
    page.locator(".grid .card a.more").first.click()
    page.wait_for_selector('.query-summary[data-query-kind="id"]')
    assert first_id in page.locator(".query-summary h1").inner_text()
    assert f"id={first_id}" in page.url  # shareable, and the back button works
    assert "P@10" in page.locator(".precision").inner_text()
    assert page.locator(".grid .card.relevant").count() == 5  # the 5 other dark images

    page.select_option("#k-select", "5")
    expect(page.locator(".grid .card")).to_have_count(5)  # (the page's CSP forbids eval)
    assert page.locator(".grid .card.relevant").count() == 5
    more_shot = screenshots / "test-more-like-this.png"
    page.screenshot(path=more_shot, full_page=True)

    # Back: the upload's results again (they live in the history entry, no URL has them).
    page.go_back()
    page.wait_for_selector('.query-summary[data-query-kind="upload"]')
    assert "dark-query.png" in page.locator(".query-summary h1").inner_text()
    expect(page.locator(".grid .card")).to_have_count(18)
    assert page.locator(".query-summary .count").inner_text() == "18"
    assert page.locator("#k-select").input_value() == "10"  # the k of these results
    back_shot = screenshots / "test-back-desktop.png"
    page.screenshot(path=back_shot, full_page=True)

    # Paste an image: searched like a dropped one.
    paste_file(page, query_png(215, seed=3), "pasted.png")
    page.wait_for_selector(".query-summary h1 >> text=pasted.png")
    assert page.locator(".grid .card .chip").first.inner_text() == "light"
    assert problems == []
    print(f"\nscreenshots: {upload_shot} {more_shot} {back_shot}")


def test_file_picker_and_error_on_a_phone(browser, live_server, tmp_path, screenshots):
    page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2)
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(live_server.url)
    bad = tmp_path / "not-an-image.png"
    bad.write_bytes(b"this is text, not a picture")
    page.set_input_files("#image-input", str(bad))
    page.wait_for_selector(".notice.error")
    assert "not an image" in page.locator(".notice.error").inner_text()
    expect(page.locator("#preview")).to_be_hidden()  # no broken-image icon left behind

    # Too large: refused in the page before anything is sent.
    huge = tmp_path / "huge.png"  # a path, not a buffer: the browser reads it, nothing is copied
    huge.write_bytes(b"\0" * (17 * 2**20))
    page.set_input_files("#image-input", str(huge))
    page.wait_for_selector(".notice.error >> text=the limit is 16.0 MB")

    good = tmp_path / "light.png"
    good.write_bytes(query_png(215))
    page.set_input_files("#image-input", str(good))
    page.wait_for_selector(".grid .card")
    assert page.locator(".grid .card .chip").first.inner_text() == "light"
    # No sideways scrolling on a phone.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    shot = screenshots / "test-phone.png"
    page.screenshot(path=shot)

    page.locator(".grid .card a.more").first.click()
    page.wait_for_selector('.query-summary[data-query-kind="id"]')
    page.go_back()
    page.wait_for_selector('.query-summary[data-query-kind="upload"]')
    assert "light.png" in page.locator(".query-summary h1").inner_text()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    back_shot = screenshots / "test-back-phone.png"
    page.screenshot(path=back_shot, full_page=True)
    print(f"\nscreenshots: {shot} {back_shot}")
