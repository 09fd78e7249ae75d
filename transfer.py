"""What a training run takes from other trained models: a teacher whose softened outputs the
network learns from besides the labels (distillation, by Keras's own Distiller), and a model
whose weights it starts from (--init_from). The records are checked before TensorFlow loads.
"""
import os

from common import UserError, lazy_import
import classes
import inference
import run_state

keras = lazy_import("keras")  # loaded on first use: checking the records needs none


def checked_record(flag, path, data, out_dir):
    """The run record of the model that --`flag` names, refused (one line) if it is missing,
    is this run's own best.keras (which the run overwrites), or it or any model it learnt from
    was trained on this run's data file with another seed or split: it would have seen this
    run's validation or test images."""
    if not os.path.isfile(path):
        raise UserError(f"--{flag}={path}: no such file: pass the best.keras of a finished run")
    own = os.path.join(out_dir, "best.keras")
    if os.path.exists(own) and os.path.samefile(path, own):
        raise UserError(f"--{flag}={path} is the best.keras this run writes: copy it elsewhere "
                        f"or choose another --out_dir")
    record = inference.read_record(path)
    for seen in [record["data"], *lineage(record)]:
        if seen.get("source_sha256") == data["source_sha256"] and not run_state.same_data(
                seen, data):
            raise UserError(f"--{flag}={path} learnt from {data['source']} split with another "
                            f"seed or into other classes, so it has seen this run's validation "
                            f"and test images: use a model trained with this run's --seed")
    return record


def teacher_record(path, data, out_dir):
    """The run record of the teacher at `path`, refused unless it was trained on `data` (this
    run's fingerprint): the same images, seed and split."""
    record = checked_record("teacher", path, data, out_dir)
    if not run_state.same_data(record["data"], data):
        raise UserError(f"--teacher={path} was trained on other data, another seed or another "
                        f"split, so it may have seen this run's validation and test images: "
                        f"train a teacher with this run's --data and --seed (python train.py "
                        f"--network=teacher --out_dir=out/teacher)")
    return record


def lineage(record):
    """The data fingerprints of every model that the model of `record` learnt from."""
    settings = record.get("settings", {})
    return [seen for key in ("TEACHER_RUN", "INIT_RUN") if settings.get(key)
            for seen in [settings[key]["data"], *settings[key]["lineage"]]]


def source_summary(record):
    """What a run record keeps of a model it learnt from or started from: enough to name it,
    and the data of it and of every model it learnt from (for the check above)."""
    keys = ("source", "source_sha256", "seed", "split_sha256", "num_classes")
    return {"run_id": record.get("run_id"), "best_epoch": record.get("best_epoch"),
            "val_accuracy": record.get("val_accuracy"),
            "network": record.get("settings", {}).get("NETWORK", "classifier"),
            "data": {key: record["data"].get(key) for key in keys},
            "lineage": lineage(record)}


def logits_view(network, path="the model"):
    """The same network (its layers, shared) with the class scores before the softmax as its
    output: what LogitsDistillation softens."""
    try:
        return keras.Model(network.inputs, network.get_layer("logits").output)
    except ValueError:
        raise UserError(f"{path} has no logits layer (it was saved by an older version): "
                        f"train it again") from None


def distiller(teacher, student, temperature, label_weight, label_smoothing, optimizer):
    """A compiled keras.distillation.Distiller that trains `student` (model.py's network) on
    the labels (weight `label_weight`) and on the teacher's outputs softened by `temperature`
    (the rest). The loss is given as a KLDivergence instance: Keras 3.15 resolves its default,
    the string "kl_divergence", to a plain function, which LogitsDistillation then applies to
    the logits themselves instead of their softmax (a negative "divergence")."""
    trainer = keras.distillation.Distiller(
        teacher=logits_view(teacher, "--teacher"), student=logits_view(student),
        distillation_losses=keras.distillation.LogitsDistillation(
            temperature=temperature, loss=keras.losses.KLDivergence()),
        student_loss_weight=label_weight)
    compile_distiller(trainer, label_smoothing, optimizer)
    return trainer


def compile_distiller(trainer, label_smoothing, optimizer):
    trainer.compile(optimizer=optimizer, metrics=["accuracy"], loss=keras.losses
                    .CategoricalCrossentropy(from_logits=True, label_smoothing=label_smoothing))


def restore(trainer, resume_path, example):
    """Loads a resume point (the whole Distiller, saved with its optimiser) into a new
    Distiller of the same teacher and network. (Keras cannot rebuild a Distiller's
    compilation from the file, so the state is loaded into one compiled as before.)"""
    trainer(example)  # builds it
    trainer.optimizer.build(trainer.trainable_variables)
    trainer.load_weights(resume_path)


def start_record(path, data, out_dir):
    """The run record of the model to start from, and whether its head fits this run's
    classes: the same number of classes, named alike (by image folders or a -labels.txt
    beside the pickle, so not merely numbered), or the same data file."""
    record = checked_record("init_from", path, data, out_dir)
    theirs = record["data"]
    same_count = classes.num_classes_of(theirs) == classes.num_classes_of(data)
    named = theirs.get("class_names") and data.get("class_names")
    keep_head = same_count and (theirs.get("source_sha256") == data["source_sha256"] or bool(
        named and list(theirs["class_names"]) == list(data["class_names"])))
    return record, keep_head


def weighted_layers(network):
    return [layer for layer in network.layers if layer.weights]


def set_frozen(network, frozen):
    """Freezes (or thaws) the convolutions of `network` and their batch normalisations;
    returns whether any of them changed."""
    changed = False
    for layer in network.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.BatchNormalization)):
            changed |= layer.trainable == frozen
            layer.trainable = not frozen
    return changed


def start_from(network, source, keep_head, path):
    """Copies the weights of the trained model `source` into `network`, layer by layer in
    order, the head (the last layer with weights) too only if `keep_head`; returns how many
    layers were copied. Layers that differ in kind or shape are a clear error."""
    ours, theirs = weighted_layers(network), weighted_layers(source)
    if len(ours) != len(theirs) or any(
            type(a) is not type(b) or [w.shape for w in a.weights] != [w.shape for w in b.weights]
            for a, b in zip(ours[:-1], theirs[:-1])):
        raise UserError(f"--init_from={path} is another network or has other sizes than this "
                        f"run's ({len(theirs)} layers with weights against {len(ours)}): start "
                        f"from a model trained with the same --network and sizes")
    copied = ours if keep_head else ours[:-1]
    for mine, given in zip(copied, theirs):
        mine.set_weights(given.get_weights())
    return len(copied)
