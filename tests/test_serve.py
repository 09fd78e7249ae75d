"""serve.py: the draw-and-classify page in a real browser (headless Chromium), clear answers
to bad input over HTTP, and the page kept answering drawings under a stream of hostile
requests."""
import io
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

import numpy as np
import pytest
from PIL import Image

import serve
from conftest import ROOT, assert_user_error, png_header, refusal, run_script

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
    assert small.json["sure"] is (small.json["top"][0]["probability"] >= 0.5)  # the default
    for min_confidence, sure in ((0.0, True), (1.01, False)):
        strict = serve.create_app(str(work / "out" / "best.keras"),
                                  min_confidence=min_confidence).test_client()
        assert post(strict, png_bytes((255 * x[0]).reshape(56, 56).astype(np.uint8))
                    ).json["sure"] is sure
    big = post(app, png_bytes(np.zeros((100, 100), np.uint8)))
    assert big.status_code == 400 and "over the limit of 5,000" in big.json["error"]
    app = serve.create_app(str(work / "out" / "best.keras"), max_upload_mb=0.001).test_client()
    assert post(app, b"\0" * 2000).status_code == 413


def drawing_bytes():
    """What the page sends: its 280x280 canvas as a PNG, black strokes on a transparent
    background (here a "1", as wide as the page's pen)."""
    canvas = np.zeros((280, 280, 4), np.uint8)
    canvas[40:240, 133:147, 3] = 255
    return png_bytes(canvas, "RGBA")


def test_requests_from_other_sites_are_refused(client):
    """Any page the user visits can send requests to 127.0.0.1: those its browser marks as
    from another site, or whose Origin is not the page's, are refused with one line."""
    drawing = drawing_bytes()
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"},
                    {"Origin": "http://localhost:9999"}, {"Origin": "http://["},
                    {"Sec-Fetch-Site": "cross-site"},
                    {"Sec-Fetch-Site": "same-site", "Origin": "http://localhost"}):
        reply = client.post("/predict", data={"image": (io.BytesIO(drawing), "a.png")},
                            headers=headers, content_type="multipart/form-data")
        assert reply.status_code == 403, headers
        assert "another site" in reply.json["error"] and "\n" not in reply.json["error"]
        # the page itself holds no answer: a link to it from another site opens it
        assert client.get("/", headers=headers).status_code == 200, headers
    # a site whose name its owner made lead to 127.0.0.1 (DNS rebinding): same-origin to itself
    rebound = client.post("/predict", data={"image": (io.BytesIO(drawing), "a.png")},
                          base_url="http://evil.example:8000", content_type="multipart/form-data",
                          headers={"Origin": "http://evil.example:8000",
                                   "Sec-Fetch-Site": "same-origin"})
    assert rebound.status_code == 403 and "Host: evil.example:8000" in rebound.json["error"]
    # the page itself, as browsers send it, and a tool that sends neither header (curl)
    mine = {"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"}
    for headers in (mine, {}):
        reply = client.post("/predict", data={"image": (io.BytesIO(drawing), "a.png")},
                            headers=headers, content_type="multipart/form-data")
        assert reply.status_code == 200 and reply.json["top"], headers
    assert client.get("/", headers={"Sec-Fetch-Site": "none"}).status_code == 200  # typed in
    assert client.get("/", base_url="http://[::1]:8000").status_code == 200


def test_a_few_images_are_framed_at_once_the_rest_answered_busy(trained_digits, monkeypatch):
    """Images over --large_pixels are framed one at a time, the others --small_slots at a time,
    each kind apart: one more is answered 503 "busy" at once, and a large one being framed
    never holds up a drawing."""
    work, x, _ = trained_digits
    app = serve.create_app(str(work / "out" / "best.keras"), large_pixels=20_000, small_slots=1)
    large = png_bytes(np.kron(255 * x[0].reshape(56, 56), np.ones((4, 4), np.uint8)))  # 224 x 224
    small = png_bytes((255 * x[1]).reshape(56, 56).astype(np.uint8))
    drawing = drawing_bytes()  # 280 x 280: 78,400 pixels, over 20,000
    entered = {large: threading.Event(), small: threading.Event()}
    release = threading.Event()
    read_image = serve.read_image

    def held(raw, *args):  # the framing of `large` and `small` waits for `release`
        if raw in entered:
            entered[raw].set()
            assert release.wait(60)
        return read_image(raw, *args)
    monkeypatch.setattr(serve, "read_image", held)
    replies = {}

    def send_held(data):
        replies[data] = post(app.test_client(), data)
    senders = [threading.Thread(target=send_held, args=(data,)) for data in (large, small)]
    try:
        senders[0].start()
        assert entered[large].wait(60)  # a large image is being framed:
        busy = post(app.test_client(), drawing)  # another is answered at once,
        assert busy.status_code == 503 and busy.json["error"].startswith("busy: ")
        assert "20,000 pixels" in busy.json["error"]
        other = png_bytes((255 * x[3]).reshape(56, 56).astype(np.uint8))
        assert post(app.test_client(), other).status_code == 200  # a small one is not held up
        senders[1].start()
        assert entered[small].wait(60)  # now the one small slot is taken too:
        busy = post(app.test_client(), png_bytes((255 * x[2]).reshape(56, 56).astype(np.uint8)))
        assert busy.status_code == 503 and busy.json["error"].startswith("busy: ")
    finally:
        release.set()
        for sender in senders:
            if sender.ident:  # (started)
                sender.join(60)
    assert replies[large].status_code == replies[small].status_code == 200
    assert post(app.test_client(), drawing).status_code == 200  # the slots were given back


def test_a_host_on_the_network_is_warned_about(trained_digits, monkeypatch, capsys):
    import werkzeug.serving

    class Server:  # stands for the development server: serve_forever returns at once
        port = 8000

        def serve_forever(self):
            pass
    monkeypatch.setattr(werkzeug.serving, "make_server", lambda *args, **kwargs: Server())
    checkpoint = str(trained_digits[0] / "out" / "best.keras")
    serve.main([checkpoint, "--host=0.0.0.0"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: --host=0.0.0.0 "), lines
    assert "development server" in lines[0] and "one person" in lines[0]
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):  # this machine only
        serve.main([checkpoint, f"--host={host}"])
        assert capsys.readouterr().err == "", host


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
def served(trained_digits, tmp_path_factory):
    """serve.py started as a user starts it, on a free port; yields (its address, its
    process). Its log (a line a request) goes to a file outside its folder: a pipe nobody
    reads would stop it once full."""
    work, _, _ = trained_digits
    folder = tmp_path_factory.mktemp("served")
    log = tmp_path_factory.mktemp("served-log") / "stderr.txt"
    with open(log, "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "serve.py"), str(work / "out" / "best.keras"),
             "--host=127.0.0.1", "--port", "0", "--top=2", "--min_confidence=0.999"], cwd=folder, stdout=subprocess.PIPE,
            stderr=stderr, text=True)
    line = process.stdout.readline()
    address = re.search(r"http://\S+", line)
    if not address:
        process.kill()
        pytest.fail(f"serve.py did not start: {line}{log.read_text()[-2000:]}")
    yield address.group(0), process
    process.terminate()
    process.wait(timeout=30)
    assert os.listdir(folder) == []  # the server wrote nothing


@pytest.fixture
def server(served):
    """The address of serve.py, started as a user starts it."""
    return served[0]


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                    reason="needs Debian's chromium and chromium-driver (.ci/run installs them)")
def test_drawing_in_a_real_browser(server, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.common.exceptions import StaleElementReferenceException
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
        # (an answer can redraw the list while it is read: read it again then)
        WebDriverWait(browser, 60, ignored_exceptions=[StaleElementReferenceException]).until(
            lambda driver: top_guess(driver) == "1:1")

        def verdict_fits(driver):  # under --min_confidence the page says so over its guesses
            best = float(driver.find_element(By.CSS_SELECTOR, "#top li").get_attribute(
                "data-probability"))
            verdict = driver.find_element(By.ID, "verdict").text
            return verdict == ("not sure; best guesses:" if best < 0.999 else "")
        WebDriverWait(browser, 30, ignored_exceptions=[StaleElementReferenceException]).until(
            verdict_fits)
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


def send(address, data, headers=None):
    """POSTs `data` to the page's /predict as its form does (urllib: no package needed);
    (status, the JSON answer, seconds)."""
    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.png"'
            f'\r\nContent-Type: application/octet-stream\r\n\r\n').encode() + data + \
        f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(address + "predict", body, {
        "Content-Type": f"multipart/form-data; boundary={boundary}", **(headers or {})})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            status, text = reply.status, reply.read()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read()
    return status, json.loads(text), time.perf_counter() - start


def peak_memory_mb(pid):
    """The peak resident memory of a process (VmHWM), in MB, or None without /proc."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return next(int(line.split()[1]) / 1024 for line in status
                        if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return None


PEAK_MB = 2500  # the server's peak memory under attack: 1.84 GB here, 0.9 GB of it at rest
                # (docs/design.md, "The page"); framing every upload at once took 3.1 GB


def test_the_page_answers_drawings_while_hostile_requests_keep_coming(served):
    """For 20 s, three threads send what a hostile page or program could: 40-megapixel PNGs
    of a 1-pixel line (grey, and see-through colour), a file that would decode to 400
    megapixels, an EPS file, junk, and a drawing from another site. Meanwhile a drawing every
    half second is answered in under 2 s, each hostile request gets one line of JSON (or, for
    a big PNG that finds the large slot free, its guesses), and the server's memory peaks under
    PEAK_MB."""
    from PIL import ImageDraw
    address, process = served
    page = Image.new("L", (8000, 5000), 255)  # at the page's limit of 40 million pixels
    ImageDraw.Draw(page).line([(1500, 700), (3000, 4300), (4000, 1500), (5000, 4300),
                               (6500, 700)], fill=0)
    buffer = io.BytesIO()
    page.save(buffer, "PNG", compress_level=1)
    big_grey = buffer.getvalue()
    buffer = io.BytesIO()
    page.convert("RGBA").transpose(Image.Transpose.ROTATE_90).save(buffer, "PNG", compress_level=1)
    big_colour = buffer.getvalue()
    del page
    buffer = io.BytesIO()
    Image.new("L", (64, 64)).save(buffer, "EPS")
    hostile = [  # (what, the bytes, headers, the answers it may get, a word of the error)
        ("40 MP grey", big_grey, {}, {200, 503}, "busy"),
        ("EPS", buffer.getvalue(), {}, {400}, "not a readable image"),
        ("40 MP colour", big_colour, {}, {200, 503}, "busy"),
        ("bomb", png_header(20000, 20000), {}, {400}, "too many pixels"),
        ("junk", bytes(range(256)) * 64, {}, {400}, "not a readable image"),
        ("other site", drawing_bytes(), {"Origin": "http://evil.example"}, {403}, "another site"),
    ]
    drawing = drawing_bytes()
    assert send(address, drawing)[0] == 200  # (the first traces the framing: not timed)
    stop = time.monotonic() + 20
    answers = []

    def attack(first):
        for i in range(first, first + 400):  # at most 400 requests a thread
            if time.monotonic() > stop:
                return
            what, data, headers, _, _ = hostile[i % len(hostile)]
            try:
                answers.append((what, *send(address, data, headers)[:2]))
            except Exception as error:  # (no answer, or not JSON: fails below)
                answers.append((what, repr(error), None))
            time.sleep(0.02)
    attackers = [threading.Thread(target=attack, args=(first,)) for first in (0, 2, 4)]
    for attacker in attackers:
        attacker.start()
    drawn = []
    while time.monotonic() < stop:
        status, answer, seconds = send(address, drawing)
        drawn.append(seconds)
        assert status == 200 and answer["top"], (status, answer)
        time.sleep(0.5)
    for attacker in attackers:
        attacker.join(120)
    peak = peak_memory_mb(process.pid)
    counts = {}
    for what, status, answer in answers:
        counts[what, status] = counts.get((what, status), 0) + 1
        _, _, _, allowed, word = next(kind for kind in hostile if kind[0] == what)
        assert status in allowed, (what, status, answer)
        if status != 200:
            assert word in answer["error"] and "\n" not in answer["error"], (what, answer)
    print(f"drawings: {len(drawn)}, slowest {max(drawn):.2f} s; hostile answers: {counts}; "
          f"server's peak memory: {peak} MB")
    assert len(drawn) >= 20 and max(drawn) < 2.0, drawn
    assert counts.get(("40 MP grey", 200), 0) + counts.get(("40 MP colour", 200), 0) >= 2
    assert peak is None or peak < PEAK_MB, peak  # (no /proc: not measured)
