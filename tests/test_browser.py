"""The app and the report in a real browser: headless Chromium (Debian's package) driven by
Playwright, with every request that leaves the machine blocked and recorded."""
import shutil

import pytest

from clipft.commands.sample_data import make_catalogue
from conftest import free_port, run, tiny_finetune

pytestmark = [pytest.mark.slow, pytest.mark.browser]
pytest.importorskip("gradio", reason="the app needs Gradio: pip install 'clipft[app]'")
sync_api = pytest.importorskip("playwright.sync_api", reason="browser tests need the playwright package")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("no Chromium on this machine (Debian: apt-get install chromium)", allow_module_level=True)
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    data = make_catalogue(tmp / "cat", n=48, size=32, seed=5)
    tiny_finetune(data, tmp / "ft", tmp / "cache")
    return tmp


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        chromium.close()


def offline_page(browser, allowed: str):
    """A page whose requests outside ``allowed`` are aborted and recorded in ``page.outside``."""
    page = browser.new_page()
    page.outside = []

    def route(request_route):
        url = request_route.request.url
        if url.startswith(allowed) or url.startswith("data:"):
            request_route.continue_()
        else:
            page.outside.append(url)
            request_route.abort()

    page.route("**/*", route)
    return page


def test_the_app_labels_an_uploaded_photo_as_the_library_does(setup, browser, tmp_path):
    from clipft.commands.app import label_photo, load_labellers, open_photo, run_app

    labellers = load_labellers([setup / "ft"], ["color", "lid"], "clipft-tiny", None, "cpu")
    port = free_port()
    app = run_app(labellers, tmp_path / "examples", port=port, block=False)
    try:
        page = offline_page(browser, f"http://127.0.0.1:{port}")
        page.goto(f"http://127.0.0.1:{port}")
        photo = setup / "cat" / "images" / "00003.jpg"
        page.locator("#photo input[type=file]").set_input_files(str(photo))
        page.wait_for_selector("#photo :text('00003.jpg')")
        page.click("#label")
        page.wait_for_selector("#labels tr.rank1", timeout=60_000)
        shown = [row.split("\t") for row in page.inner_text("#labels").splitlines()[1:]]
        expected = label_photo(labellers["ft"], open_photo(photo))
        assert [r[1] for r in shown] == expected["value"].tolist()
        assert [float(r[2]) for r in shown] == pytest.approx(expected["probability"].round(3).tolist(), abs=1e-3)
        assert [r[3] if len(r) > 3 else "" for r in shown] == expected["status"].tolist()

        (tmp_path / "notes.jpg").write_text("not a photo")
        page.goto(f"http://127.0.0.1:{port}")
        page.locator("#photo input[type=file]").set_input_files(str(tmp_path / "notes.jpg"))
        page.wait_for_selector("#photo :text('notes.jpg')")
        page.click("#label")
        page.wait_for_selector("text=notes.jpg: not an image clipft can read", timeout=30_000)
        assert page.outside == []  # nothing left the machine
    finally:
        app.close()


def test_the_report_opens_offline_with_every_image(setup, browser, tmp_path):
    out = tmp_path / "report.html"
    run(["report", str(setup / "ft"), "--out", str(out)])
    page = offline_page(browser, "file://")
    page.goto(out.as_uri())
    images = page.eval_on_selector_all("img", "els => els.map(e => e.complete && e.naturalWidth > 0)")
    assert images and all(images)
    assert page.outside == []
    assert "fine-tuned" in page.inner_text("table")
