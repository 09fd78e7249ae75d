"""train.py's recipe: the network it trains (or the distiller that holds it), with its optimiser,
learning-rate schedule and the per-epoch state that makes a resumed run exact. Functions of the
settings only; train.py runs them.
"""
import math

from common import lazy_import, pick
import data_format
import inference
import model
import run_state
import transfer

keras = lazy_import("keras")  # loaded on first use: importing train.py must not load them
tf = lazy_import("tensorflow")


def require_resolved(settings):
    if settings.lr_schedule == "auto" or settings.augment_epochs < 0:
        raise ValueError("settings left at auto: resolve them first with "
                         "train.resolve(settings, number_of_training_images)")


def plateau_learning_rate(history, settings):
    """The learning rate after the epochs in `history` under --lr_schedule=plateau: times
    --lr_drop_factor after every --lr_drop_patience epochs without a better epoch. Worked out
    from the history alone, so a resumed run drops exactly when the uninterrupted one would."""
    rate, best, waited = settings.learning_rate, None, 0
    for row in history:
        if best is None or run_state.score(row) > run_state.score(best):
            best, waited = row, 0
        else:
            waited += 1
            if waited >= settings.lr_drop_patience:
                rate, waited = rate * settings.lr_drop_factor, 0
    return rate


def epoch_state(history, settings, network):
    """A Keras callback that sets before each epoch the learning rate of a plateau schedule
    (from the history) and the random stream of `network`'s dropout masks, which depends on
    (--seed, epoch) only. Keras does not save the dropout generators' state, so without this a
    resumed run would replay epoch 1's. (The class is made here, when training starts: its
    base is Keras's, and importing train.py must not load TensorFlow.)"""

    class EpochState(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if settings.lr_schedule == "plateau":
                self.model.optimizer.learning_rate.assign(
                    plateau_learning_rate(history, settings))
            dropouts = [layer for layer in network.layers
                        if isinstance(layer, keras.layers.Dropout)]
            for index, layer in enumerate(dropouts):
                state = layer.seed_generator.state
                state.assign(tf.constant([settings.seed * 100 + index, epoch << 20], state.dtype))

    return EpochState()


def new_model(settings, steps_per_epoch=1, build_network=None,
              num_classes=data_format.NUM_CLASSES):
    """The network (model.py's --network, with the sizes in `settings`, unless `build_network`
    takes the number of classes and makes another) with `num_classes` outputs, compiled with
    this recipe's optimiser and loss."""
    require_resolved(settings)
    network = (build_network(num_classes) if build_network else
               model.build(num_classes, **pick(settings, vars(model))))
    compile_network(network, settings, optimizer_of(settings, steps_per_epoch))
    return network


def compile_network(network, settings, optimizer):
    network.compile(optimizer=optimizer, metrics=["accuracy"], loss=keras.losses
                    .CategoricalCrossentropy(label_smoothing=settings.label_smoothing))


def optimizer_of(settings, steps_per_epoch, first_epoch=0):
    """The recipe's optimiser, new, for training from `first_epoch` (0-based) on: a cosine
    decay then starts where the one from epoch 0 would be, and decays to 0 at the end."""
    rate = settings.learning_rate
    if settings.lr_schedule == "cosine":
        rate *= 0.5 * (1 + math.cos(math.pi * first_epoch / settings.epochs))
        rate = keras.optimizers.schedules.CosineDecay(
            rate, (settings.epochs - first_epoch) * steps_per_epoch)
    return (keras.optimizers.AdamW(rate, weight_decay=settings.weight_decay)
            if settings.weight_decay else keras.optimizers.Adam(rate))


def frozen_until(settings):
    """Until which epoch the convolutions stay as --init_from gave them."""
    return min(settings.freeze_epochs, settings.epochs) if settings.init_from else 0


def network_and_trainer(settings, resume_path, epochs_done, steps_per_epoch, num_classes,
                        build_network, starting_point, example):
    """(the network, the model that fit() trains): the network itself, or with --teacher a
    keras.distillation.Distiller that holds it and the teacher. Restored from the resume
    point after `epochs_done` epochs if there is one, else new, starting from --init_from's
    weights if given (`starting_point`: whether its head is kept); its convolutions frozen as
    they were in the last epoch done (the first, if none). `example`: a batch of images."""
    if not settings.teacher:
        if resume_path:
            return (keras.saving.load_model(resume_path),) * 2
        network = new_model(settings, steps_per_epoch, build_network, num_classes)
    else:
        network = model.build(num_classes, **pick(settings, vars(model)))
    until = frozen_until(settings)
    transfer.set_frozen(network, 0 < until and epochs_done <= until)
    if starting_point is not None and not resume_path:
        copied = transfer.start_from(network, inference.load_network(settings.init_from),
                                     starting_point, settings.init_from)
        print(f"started from {settings.init_from}: {copied} layers' weights"
              f"{'' if starting_point else ', a new head for these classes'}", flush=True)
    if not settings.teacher:
        return network, network
    trainer = transfer.distiller(inference.load_network(settings.teacher), network,
                                 settings.distill_temperature, settings.label_weight,
                                 settings.label_smoothing, optimizer_of(settings, steps_per_epoch))
    if resume_path:
        transfer.restore(trainer, resume_path, example)
    return network, trainer
