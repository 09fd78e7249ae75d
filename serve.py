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
"""
import base64
import io
import os

import numpy as np

from common import UserError, configure, run
import framing
import predict
import prepare_data

CHECKPOINT = "out/best.keras"  # a model written by train.py
HOST = "127.0.0.1"             # where to listen: 127.0.0.1 is this machine only
PORT = 8000                    # the port of the page
MAX_UPLOAD_MB = 5.0            # uploads of more megabytes than this are refused
MAX_PIXELS = 40_000_000        # images of more pixels (width x height) are refused undecoded
LABELS = "auto"                # class names: auto (by the checkpoint's data), none, or a PATH
TOP = 3                        # how many best guesses the page shows

WEB_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "web")
_FIXED = ("WEB_DIR",)  # not a setting: the page ships with the code


def png_data_url(pixels):
    """A 56x56 0/1 image as a PNG data URL, for the page to show what the model saw."""
    from PIL import Image
    buffer = io.BytesIO()
    Image.fromarray((pixels.reshape(prepare_data.SIDE, prepare_data.SIDE) * 255).astype(np.uint8)
                    ).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def read_image(raw, min_stroke=None, max_pixels=MAX_PIXELS):
    """Upload bytes -> the model's input (3136 pixels 0/1, strokes at least `min_stroke`
    pixels wide), or a UserError saying why not (one over `max_pixels` is not decoded)."""
    pixels = framing.read_image_file(raw, "the upload", min_stroke, max_pixels=max_pixels)
    if not pixels.any():
        raise UserError("the image is empty: draw a character first")
    return pixels


def create_app(checkpoint, labels=LABELS, top=TOP, max_upload_mb=MAX_UPLOAD_MB,
               max_pixels=MAX_PIXELS):
    """The Flask app for one checkpoint, loaded (and checked) once, before serving."""
    from flask import Flask, jsonify, request, send_from_directory
    model, record = predict.load_model(checkpoint)
    names = prepare_data.class_names(labels, record["data"])
    predict.evaluate.check_compatible(model, len(names))
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = int(max_upload_mb * 2 ** 20)

    @app.get("/")
    def page():
        return send_from_directory(WEB_DIR, "index.html")

    @app.post("/predict")
    def classify():
        upload = request.files.get("image")
        if upload is None:
            return jsonify(error="no image: send one as the form field 'image'"), 400
        try:
            pixels = read_image(upload.read(), predict.pen_width(record), max_pixels)
        except UserError as error:
            return jsonify(error=str(error)), 400
        probabilities = predict.predict_probabilities(pixels[None], checkpoint)[0]
        best = np.argsort(probabilities)[::-1][:top]
        return jsonify(top=[{"label": int(label), "name": names[label],
                             "probability": round(float(probabilities[label]), 4)}
                            for label in best],
                       seen=png_data_url(pixels))

    @app.errorhandler(413)
    def too_large(_):
        return jsonify(error=f"the upload is over {max_upload_mb:g} MB: send a smaller "
                             f"image"), 413

    return app


def main(argv=None):
    from werkzeug.serving import make_server
    settings = configure(globals(), positional="CHECKPOINT", argv=argv)
    app = create_app(settings.checkpoint, settings.labels, settings.top, settings.max_upload_mb,
                     settings.max_pixels)
    host, port = settings.host, settings.port
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
