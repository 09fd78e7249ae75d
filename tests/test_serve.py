"""serve.py: the draw-and-classify page in a real browser (headless Chromium), and clear
answers to bad input over HTTP."""
import io
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import serve
from conftest import ROOT, assert_user_error, refusal, run_script

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def client(trained_digits):
    work, _, _ = trained_digits
    return serve.create_app(str(work / "out" / "best.keras")).test_client()


def png_bytes(pixels, mode="L"):
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, "PNG")
    return buffer.getvalue()


def post(client, data, name="drawing.png"):
    return client.post("/predict", data={"image": (io.BytesIO(data), name)},
                       content_type="multipart/form-data")


def test_page_and_a_good_image(client, trained_digits):
    _, x, y = trained_digits
    page = client.get("/")
    assert page.status_code == 200 and b'<canvas id="canvas"' in page.data
    seven = x[y == 7][0].reshape(56, 56)
    reply = post(client, png_bytes(255 - 255 * seven))  # dark on light, like a scan
    assert reply.status_code == 200, reply.json
    assert [guess["name"] for guess in reply.json["top"]][0] == "7:7"
    assert len(reply.json["top"]) == 3
    seen = Image.open(io.BytesIO(__import__("base64").b64decode(
        reply.json["seen"].split(",", 1)[1])))
    np.testing.assert_array_equal(np.asarray(seen) > 0, seven > 0)  # what the model saw


def test_bad_input_gets_a_clear_answer(client):
    empty = post(client, png_bytes(np.zeros((280, 280), np.uint8), "RGBA"))
    assert empty.status_code == 400 and "empty" in empty.json["error"]
    junk = post(client, b"this is not an image")
    assert junk.status_code == 400 and "not a readable image" in junk.json["error"]
    huge = post(client, b"\0" * int((serve.MAX_UPLOAD_MB + 1) * 2 ** 20))
    assert huge.status_code == 413 and "over 5 MB" in huge.json["error"]
    missing = client.post("/predict", data={}, content_type="multipart/form-data")
    assert missing.status_code == 400 and "'image'" in missing.json["error"]
    # a small file that would decode to a giant image is refused before decoding
    buffer = io.BytesIO()
    Image.new("1", (8000, 8000)).save(buffer, "PNG")
    giant = post(client, buffer.getvalue())
    assert giant.status_code == 400 and "over the limit" in giant.json["error"]
    # only the page is served: no other file of the repository, however the path is spelt
    for path in ("/serve.py", "/web/../serve.py", "/%2e%2e/train.py", "/../../etc/passwd",
                 "/data/README.md"):
        assert client.get(path).status_code == 404, path
    assert client.get("/predict").status_code == 405


def test_settings_of_serve(trained_digits):
    work, x, y = trained_digits
    app = serve.create_app(str(work / "out" / "best.keras"), labels="none", top=2,
                           max_pixels=5000).test_client()
    small = post(app, png_bytes((255 * x[0]).reshape(56, 56).astype(np.uint8)))
    assert [g["name"] for g in small.json["top"]] == [str(g["label"]) for g in small.json["top"]]
    assert len(small.json["top"]) == 2
    big = post(app, png_bytes(np.zeros((100, 100), np.uint8)))
    assert big.status_code == 400 and "over the limit of 5,000" in big.json["error"]
    app = serve.create_app(str(work / "out" / "best.keras"), max_upload_mb=0.001).test_client()
    assert post(app, b"\0" * 2000).status_code == 413


def test_refused_at_start_with_one_line(tmp_path):
    assert_user_error(run_script("serve.py", "--checkpoint=missing.keras", cwd=tmp_path),
                      "not found")
    import keras
    other = keras.Sequential([keras.Input((10,)), keras.layers.Dense(3)])
    other.save(tmp_path / "other.keras")
    (tmp_path / "other.json").write_text(
        '{"data": {"source": "x", "source_sha256": "0", "seed": 0}}')
    assert "another project" in refusal(serve.main, f"--checkpoint={tmp_path / 'other.keras'}")


@pytest.fixture
def server(trained_digits, tmp_path_factory):
    """serve.py started as a user starts it, on a free port; yields its address."""
    work, _, _ = trained_digits
    folder = tmp_path_factory.mktemp("served")
    process = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "serve.py"), str(work / "out" / "best.keras"),
         "--host=127.0.0.1", "--port", "0", "--top=2"], cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    address = re.search(r"http://\S+", line)
    if not address:
        process.kill()
        pytest.fail(f"serve.py did not start: {line}{process.stderr.read()[-2000:]}")
    yield address.group(0)
    process.terminate()
    process.wait(timeout=30)
    assert os.listdir(folder) == []  # the server wrote nothing


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                    reason="needs Debian's chromium and chromium-driver (.ci/run installs them)")
def test_drawing_in_a_real_browser(server, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
                 "--window-size=1000,640"):
        options.add_argument(flag)
    browser = webdriver.Chrome(options=options,
                               service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    try:
        browser.get(server)
        canvas = browser.find_element(By.ID, "canvas")
        # a "1": one vertical stroke down the middle, drawn with the mouse
        draw = ActionChains(browser).move_to_element_with_offset(canvas, 0, -100).click_and_hold()
        for _ in range(10):
            draw.move_by_offset(0, 20)
        draw.release().perform()

        def top_guess(driver):
            guesses = driver.find_elements(By.CSS_SELECTOR, "#top li")
            return guesses[0].get_attribute("data-name") if len(guesses) == 2 else False  # --top
        # the page also answers while the stroke is drawn (a dot, half a stroke), and on a slow
        # machine such an answer can show first: wait for the answer to the whole stroke
        WebDriverWait(browser, 60).until(lambda driver: top_guess(driver) == "1:1")
        assert browser.find_element(By.ID, "seen").get_attribute("src").startswith(
            "data:image/png;base64,")
        shot = os.environ.get("SERVE_SCREENSHOT") or str(tmp_path / "page.png")
        browser.save_screenshot(shot)  # SERVE_SCREENSHOT=docs/serve.png: the README's picture
        assert Image.open(shot).size[0] >= 800

        browser.find_element(By.ID, "clear").click()
        assert browser.find_elements(By.CSS_SELECTOR, "#top li") == []
        upload = tmp_path / "blank.png"
        Image.new("L", (50, 50), 255).save(upload)  # a blank page: an empty image
        browser.find_element(By.ID, "file").send_keys(str(upload))
        WebDriverWait(browser, 60).until(
            lambda driver: "empty" in driver.find_element(By.ID, "error").text)
    finally:
        browser.quit()
