"""Honest confidence: a temperature that divides the class scores (fitted on the validation
split, so the argmax and the accuracy stay as they are), how well probabilities match how often
they are right (expected calibration error), and accuracy against coverage when the least sure
answers are withheld. calibrate_best keeps the temperature inside a best.keras by dividing its
logits layer's weights by it, so every copy and export of the model is calibrated.
"""
import json
import os

import numpy as np

from common import lazy_import, write_text_atomic
import inference
import run_state
import transfer

keras = lazy_import("keras")  # loaded on first use: the measures need none

BINS = 15  # equal-width confidence bins of the calibration error and reliability diagram
MIN_ERRORS = 10  # fewer validation errors than this cannot say how far to trust the model


def softmax(scores):
    shifted = scores - scores.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def scores_of(probabilities):
    """Class scores that give these probabilities back under softmax (the logits, up to a
    constant per image, which softmax ignores)."""
    return np.log(np.maximum(np.asarray(probabilities, np.float64), 1e-300))


def rescale(probabilities, temperature):
    """The probabilities after the scores behind `probabilities` are divided by
    `temperature`: rescale(p, 1 / T) gives back a calibrated model's probabilities as they
    were before its calibration with temperature T."""
    return softmax(scores_of(probabilities) / temperature)


def negative_log_likelihood(probabilities, labels):
    picked = np.asarray(probabilities, np.float64)[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.maximum(picked, 1e-300))))


def fit_temperature(scores, labels):
    """The temperature T > 0 that minimises the negative log-likelihood of softmax(scores / T)
    on (scores, labels): a search over log T, coarse then fine (the likelihood is smooth and
    has one minimum in T)."""
    scores = np.asarray(scores, np.float64)

    def loss(log_t):
        return negative_log_likelihood(softmax(scores / np.exp(log_t)), labels)

    grid = np.linspace(np.log(0.05), np.log(20.0), 61)  # a fit at an end: the end
    best = grid[np.argmin([loss(value) for value in grid])]
    step = grid[1] - grid[0]
    fine = np.linspace(best - step, best + step, 41)
    return float(np.exp(fine[np.argmin([loss(value) for value in fine])]))


def reliability(probabilities, labels, bins=BINS):
    """Per confidence bin of equal width: (lower edge, upper edge, images, mean confidence,
    accuracy), for the bins that hold images."""
    confidence = np.max(probabilities, axis=1)
    correct = np.argmax(probabilities, axis=1) == np.asarray(labels)
    index = np.minimum((confidence * bins).astype(int), bins - 1)
    rows = []
    for b in range(bins):
        inside = index == b
        if inside.any():
            rows.append((b / bins, (b + 1) / bins, int(inside.sum()),
                         float(confidence[inside].mean()), float(correct[inside].mean())))
    return rows


def expected_calibration_error(probabilities, labels, bins=BINS):
    """The images' average gap between confidence and accuracy, bin by bin (0: a model whose
    "0.9" is right 9 times in 10)."""
    total = len(labels)
    return float(sum(count * abs(confidence - accuracy)
                     for _, _, count, confidence, accuracy in reliability(probabilities, labels,
                                                                          bins)) / total)


def coverage(probabilities, labels, thresholds):
    """[(threshold, share of images answered, accuracy on them)]: answers below a threshold's
    confidence are withheld ("not sure")."""
    confidence = np.max(probabilities, axis=1)
    correct = np.argmax(probabilities, axis=1) == np.asarray(labels)
    rows = []
    for threshold in thresholds:
        kept = confidence >= threshold
        rows.append((threshold, float(kept.mean()),
                     float(correct[kept].mean()) if kept.any() else float("nan")))
    return rows


def record_of(scores, labels, temperature):
    """The record of a calibration: the temperature, and the calibration error and negative
    log-likelihood on (scores, labels) before and after it."""
    before, after = softmax(scores), softmax(np.asarray(scores, np.float64) / temperature)
    return {"temperature": temperature, "images": int(len(labels)),
            "ece_before": round(expected_calibration_error(before, labels), 5),
            "ece_after": round(expected_calibration_error(after, labels), 5),
            "nll_before": round(negative_log_likelihood(before, labels), 5),
            "nll_after": round(negative_log_likelihood(after, labels), 5)}


def calibrate_best(out_dir, x_val, y_val):
    """Fits the temperature of the best.keras in out_dir on the validation split and keeps it
    inside: the logits layer's weights divided by it (softmax(z / T) is then what the model
    gives, to every script and export), its record saying so. Once per model. Returns the
    record of the calibration, or a string saying why the model stays as it is: a network
    without a logits layer (an older version's), or too few errors to fit to (a temperature
    fitted to a handful of errors, or to none, would make every answer near-certain)."""
    path = os.path.join(out_dir, "best.keras")
    note = run_state.read_note(path)
    if note.get("calibration"):
        return note["calibration"]
    network = keras.saving.load_model(path)  # as train.py saved it (with its optimiser, if any)
    if "logits" not in [layer.name for layer in network.layers]:
        return "the network has no logits layer (an older version's)"
    scores = inference.probabilities(transfer.logits_view(network), x_val)
    errors = int(np.sum(scores.argmax(axis=1) != y_val))
    if errors < MIN_ERRORS:
        return (f"{errors} errors on the validation split are too few to fit a temperature to "
                f"(at least {MIN_ERRORS})")
    temperature = fit_temperature(scores, y_val)
    note["calibration"] = record_of(scores, y_val, temperature)
    logits = network.get_layer("logits")
    logits.set_weights([weights / temperature for weights in logits.get_weights()])
    run_state.save_with_note(network, path, note)
    record = run_state.read_json(os.path.join(out_dir, "best.json"))
    if record and record.get("run_id") == note["run_id"]:
        write_text_atomic(os.path.join(out_dir, "best.json"), json.dumps(
            {**record, "calibration": note["calibration"]}, indent=1) + "\n")
    return note["calibration"]
