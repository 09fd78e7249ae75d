"""What the two-convolution limit costs: train.py's whole recipe with model.py's teacher.

    python bench/deeper.py --data=../shared/data/letters26-dev.npz --seed=1 --out_dir=out-deeper
    python evaluate.py --checkpoint=out-deeper/best.keras --split=val

`python train.py --network=teacher` with the training compute of both networks printed first:
everything but the network is train.py's (split, augmentation, the size rule, schedule, early
stopping, checkpoints, resuming), so its validation accuracy compares directly with a
`python train.py` run of the same data and seed. --teacher_widths sets the network's depth.
"""
import dataclasses
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from common import configure, pick, run  # noqa: E402
import augment  # noqa: E402
import data_format  # noqa: E402
import model  # noqa: E402
import train  # noqa: E402
from bench.speed import training_flops_per_image  # noqa: E402  (the count speed.py reports)


def main(argv=None):
    settings = configure(vars(train), vars(model), vars(augment), argv=argv, positional="DATA")
    model.parse_widths(settings.teacher_widths)  # a mistake answers before TensorFlow loads
    sizes = pick(settings, vars(model))
    ours, deeper = (training_flops_per_image(model.build(data_format.NUM_CLASSES, **{
        **sizes, "network": network})) for network in ("classifier", "teacher"))
    print(f"training FLOPs per image: {deeper / 1e6:.0f} million for the teacher, "
          f"{ours / 1e6:.0f} million for the classifier ({deeper / ours:.1f}x)", flush=True)
    train.run_training(dataclasses.replace(settings, network="teacher"))  # whatever --network


if __name__ == "__main__":
    run(main)
