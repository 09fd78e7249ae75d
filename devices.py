"""Where train.py trains: the CPU or one GPU, several GPUs (MirroredStrategy), or several
processes or machines (MultiWorkerMirroredStrategy, when TF_CONFIG is set)."""
import importlib.metadata
import json
import os

from common import UserError, lazy_import

keras = lazy_import("keras")  # loaded on first use (common.lazy_import)
tf = lazy_import("tensorflow")

# Keras releases (major.minor) under which mend_keras_for_multiworker has passed the two-worker
# test; requirements.txt admits only these.
MENDED_KERAS = ("3.15",)


def check_keras_for_multiworker(version=None):
    """A UserError if this Keras (or `version`) is not one that the multi-worker mend is
    known to work with."""
    version = version or importlib.metadata.version("keras")  # without importing it
    if ".".join(version.split(".")[:2]) not in MENDED_KERAS:
        raise UserError(f"TF_CONFIG is set, but multi-worker training is tested only with "
                        f"Keras {', '.join(MENDED_KERAS)} (this is {version}): install "
                        f"the versions in requirements.txt, or unset TF_CONFIG")


def distribution_strategy(distribute):
    """Where the model's variables live and who computes the batches (see --distribute).
    Made before anything else starts TensorFlow's runtime: collective ops need that order."""
    if distribute == "auto" and os.environ.get("TF_CONFIG"):
        check_keras_for_multiworker()
        return tf.distribute.MultiWorkerMirroredStrategy()
    several_gpus = len(tf.config.list_physical_devices("GPU")) > 1
    if distribute == "mirrored" or (distribute == "auto" and several_gpus):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def worker_role(distribute):
    """(is_chief, description) of this process in the multi-worker cluster that TF_CONFIG
    describes when --distribute=auto (True, "" when it trains alone). Read from TF_CONFIG
    itself, as TensorFlow reads it, so that it is known before TensorFlow starts."""
    try:
        config = json.loads(os.environ.get("TF_CONFIG") or "{}") if distribute == "auto" else {}
        task_type, task_id = config["task"]["type"], int(config["task"].get("index", 0))
        cluster = config["cluster"]
    except (ValueError, KeyError, TypeError):
        return True, ""
    chief = task_type == "chief" or ("chief" not in cluster and task_type == "worker"
                                     and task_id == 0)
    return chief, f"{task_type} {task_id}{' (chief)' if chief else ''}"


def describe_devices(strategy):
    gpus = tf.config.list_physical_devices("GPU")
    where = (f"{len(gpus)} GPU(s): {', '.join(gpu.name for gpu in gpus)}" if gpus
             else f"CPU ({os.cpu_count()} cores)")
    if strategy is not tf.distribute.get_strategy():
        name = ("MultiWorkerMirroredStrategy"
                if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
                else type(strategy).__name__)
        where += f"; {strategy.num_replicas_in_sync} replica(s) with {name}"
    return where


def mend_keras_for_multiworker(model, strategy, image_shape, num_classes):
    """Keras 3 (3.15 and its nightly at least) cannot run fit() under MultiWorkerMirroredStrategy
    (keras-team/keras#20585), for two reasons mended here, and only when that strategy is used:
    - before training it averages a whole distributed batch across workers to build the model,
      which that strategy refuses: the model is built here from a symbolic batch instead;
    - it averages each step's scalar loss and metrics "along axis 0", which scalars lack:
      they are averaged across workers as they are."""
    from keras.src.backend.tensorflow import trainer as keras_tf_trainer
    images = keras.KerasTensor((None, *image_shape), "float32")
    labels = keras.KerasTensor((None, num_classes), "float32")
    with strategy.scope():
        model._symbolic_build(data_batch=(images, labels))
    model._maybe_symbolic_build = lambda *args, **kwargs: None
    reduce_per_replica = keras_tf_trainer.reduce_per_replica
    if getattr(reduce_per_replica, "mended", False):
        return  # a second training in the same process: mended already

    def reduce_scalars_too(values, strategy, reduction="auto"):
        if reduction in ("auto", "mean"):
            return keras.tree.map_structure(
                lambda value: strategy.reduce("MEAN", value, axis=None), values)
        return reduce_per_replica(values, strategy, reduction)
    reduce_scalars_too.mended = True
    keras_tf_trainer.reduce_per_replica = reduce_scalars_too
