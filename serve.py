"""A page on your own machine to draw a character and see what the model reads.

    python serve.py                                   # out/best.keras on http://127.0.0.1:8000
    python serve.py --checkpoint=runs/a/best.keras --port=8080

Draw on the canvas with a mouse, a pen or a finger: the model's best guesses update as you draw,
and beside them the 56x56 binary image the model actually saw, so that you see how your drawing
was framed. An image file can be uploaded instead. Drawings and uploads are turned into the
model's input by framing.py, which frames predict.py's files, image folders and the exported
model's images too (one way of framing for all), in memory: the server writes
no files and serves only the page in web/.

It is built on Flask: a small, well-kept library whose development server is enough for one
person on 127.0.0.1, with request-size limits and a test client built in, and nothing to build.
Any web page the user visits can send requests to 127.0.0.1 too: requests from other sites are
refused, and a few images are framed at once (large ones one at a time, apart from the
drawings); more are answered "busy" at once, so that no flood of uploads holds up the page.
"""
import base64
import io
import ipaddress
import os
import sys
import threading
from urllib.parse import urlsplit

import numpy as np

from common import UserError, configure, run
import classes
import data_format
import framing
import inference

CHECKPOINT = "out/best.keras"  # a model written by train.py
HOST = "127.0.0.1"             # where to listen: 127.0.0.1 is this machine only
PORT = 8000                    # the port of the page
MAX_UPLOAD_MB = 5.0            # uploads of more megabytes than this are refused
MAX_PIXELS = 40_000_000        # images of more pixels (width x height) are refused undecoded
LABELS = "auto"                # class names: auto (by the checkpoint's data), none, or a PATH
TOP = 3                        # how many best guesses the page shows
MIN_CONFIDENCE = 0.5           # below this probability the page says "not sure" over its guesses
LARGE_PIXELS = 1_000_000       # uploads of more pixels are framed one at a time, apart from
                               # the smaller ones (a drawing: 280 x 280), never holding them up
SMALL_SLOTS = 2                # how many smaller uploads are framed at once; past that (or a
                               # second large one) the answer is "busy", at once

WEB_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "web")
_FIXED = ("WEB_DIR",)  # not a setting: the page ships with the code
_RANGES = {"PORT": "[0, 65535]", "MAX_UPLOAD_MB": "(0, inf)", "MAX_PIXELS": "[1, inf)",
           "TOP": "[1, inf)", "MIN_CONFIDENCE": "[0, 1]", "LARGE_PIXELS": "[0, inf)",
           "SMALL_SLOTS": "[1, inf)"}  # check_values


def png_data_url(pixels):
    """A 56x56 0/1 image as a PNG data URL, for the page to show what the model saw."""
    from PIL import Image
    buffer = io.BytesIO()
    Image.fromarray((pixels.reshape(data_format.SIDE, data_format.SIDE) * 255).astype(np.uint8)
                    ).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def read_image(raw, min_stroke=None, max_pixels=MAX_PIXELS):
    """Upload bytes -> the model's input (3136 pixels 0/1, strokes at least `min_stroke`
    pixels wide), or a UserError saying why not (one over `max_pixels` is not decoded)."""
    pixels = framing.read_image_file(raw, "the upload", min_stroke, max_pixels=max_pixels)
    if not pixels.any():
        raise UserError("the image is empty: draw a character first")
    return pixels


def is_loopback(host):
    """Whether a host name or address is this machine only: localhost, 127.x.x.x or ::1."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host.lower() == "localhost"


def other_site(headers, host=HOST):
    """Why a request (its headers) comes from a page of another site that the user's browser
    shows, or None. Browsers say so in Sec-Fetch-Site, older ones in Origin; and a Host that is
    not this machine's when serving on it is a site whose name now leads to 127.0.0.1 (DNS
    rebinding)."""
    site = headers.get("Sec-Fetch-Site")
    if site not in (None, "same-origin", "none"):
        return f"Sec-Fetch-Site: {site}"
    origin, requested = headers.get("Origin"), headers.get("Host", "")
    try:
        if origin is not None and urlsplit(origin).netloc.lower() != requested.lower():
            return f"Origin: {origin}"
        if is_loopback(host) and not is_loopback(urlsplit(f"//{requested}").hostname or ""):
            return f"Host: {requested}"
    except ValueError:  # (an address no browser would send, such as "http://[")
        return f"Origin: {origin}, Host: {requested}"
    return None


def create_app(checkpoint, labels=LABELS, top=TOP, max_upload_mb=MAX_UPLOAD_MB,
               max_pixels=MAX_PIXELS, large_pixels=LARGE_PIXELS, small_slots=SMALL_SLOTS,
               host=HOST, min_confidence=MIN_CONFIDENCE):
    """The Flask app for one checkpoint, loaded (and checked) once, before serving on `host`."""
    from flask import Flask, jsonify, request, send_from_directory
    record = inference.read_record(checkpoint)
    model = inference.load_network(checkpoint)
    names = classes.class_names(labels, record["data"])
    inference.check_compatible(model, len(names))
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = int(max_upload_mb * 2 ** 20)
    large, small = threading.Semaphore(1), threading.Semaphore(small_slots)

    @app.before_request
    def same_site_only():  # (the page itself may be opened from a link: it holds no answer)
        refused = request.path != "/" and other_site(request.headers, host)
        if refused:
            return jsonify(error=f"refused: a request from another site ({refused}); open the "
                                 f"page itself at the address serve.py printed"), 403
        return None

    @app.get("/")
    def page():
        return send_from_directory(WEB_DIR, "index.html")

    @app.post("/predict")
    def classify():
        upload = request.files.get("image")
        if upload is None:
            return jsonify(error="no image: send one as the form field 'image'"), 400
        raw = upload.read()
        try:
            with framing.opened(raw, "the upload", max_pixels) as image:  # its header only
                width, height = image.size
        except UserError as error:
            return jsonify(error=str(error)), 400
        slots = large if width * height > large_pixels else small
        if not slots.acquire(blocking=False):
            kind = f"images of over {large_pixels:,} pixels" if slots is large else "images"
            return jsonify(error=f"busy: framing other {kind}; send it again in a moment"), 503
        try:
            pixels = read_image(raw, inference.pen_width(record), max_pixels)
            probabilities = inference.probabilities(model, pixels[None])[0]
        except UserError as error:
            return jsonify(error=str(error)), 400
        finally:
            slots.release()
        best = np.argsort(probabilities)[::-1][:top]
        return jsonify(top=[{"label": int(label), "name": names[label],
                             "probability": round(float(probabilities[label]), 4)}
                            for label in best],
                       sure=bool(probabilities[best[0]] >= min_confidence),
                       seen=png_data_url(pixels))

    @app.errorhandler(413)
    def too_large(_):
        return jsonify(error=f"the upload is over {max_upload_mb:g} MB: send a smaller "
                             f"image"), 413

    return app


def main(argv=None):
    from werkzeug.serving import make_server
    settings = configure(globals(), positional="CHECKPOINT", argv=argv)
    host, port = settings.host, settings.port
    if not is_loopback(host):
        print(f"warning: --host={host} serves the page to the network, but Flask's development "
              f"server is meant for one person on this machine", file=sys.stderr, flush=True)
    app = create_app(settings.checkpoint, settings.labels, settings.top, settings.max_upload_mb,
                     settings.max_pixels, settings.large_pixels, settings.small_slots, host,
                     settings.min_confidence)
    try:
        server = make_server(host, port, app, threaded=True)
    except (OSError, SystemExit) as error:
        raise UserError(f"cannot listen on {host}:{port} ({error}): is it in use? try "
                        f"--port=8001") from None
    print(f"serving {settings.checkpoint} on http://{host}:{server.port}/ (Ctrl+C stops)",
          flush=True)
    server.serve_forever()


if __name__ == "__main__":
    run(main)
