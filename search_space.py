"""tune.py's search space: each setting's range or choices as written at the top of tune.py
("low..high", "low..high log", "a|b|c"), checked against what train.py allows, and the values
an Optuna trial draws from it.
"""
import dataclasses

from common import UserError, check_values
import augment
import model
import train


def parse_range(name, spec, base):
    """("range", (low, high), log) or ("choices", values, False) for --`name`=spec, each value
    typed like the setting's and inside what train.py allows for it."""
    setting = name[len("search_"):]
    if not hasattr(base, setting):
        raise UserError(f"--{name}: train.py has no setting --{setting}")
    default = getattr(base, setting)
    text, log = spec.strip(), False
    if text.endswith(" log"):
        text, log = text[:-4].strip(), True
    parts = text.split("..") if ".." in text else text.split("|")
    if ".." in text and (len(parts) != 2 or isinstance(default, (bool, str))):
        raise UserError(f"--{name}={spec}: give a range low..high (numbers) or choices a|b|c")
    try:
        values = [typed(part.strip(), default) for part in parts]
    except ValueError:
        raise UserError(f"--{name}={spec}: each value should be like {default!r}") from None
    for value in values:  # train.py's own bounds, e.g. a dropout below 1
        try:
            check_values(dataclasses.replace(base, **{setting: value}), vars(train),
                         vars(model), vars(augment))
        except UserError as error:
            raise UserError(f"--{name}={spec}: {error}") from None
    if ".." not in text:
        if log:
            raise UserError(f"--{name}={spec}: ' log' goes with a range low..high")
        return "choices", values, False
    if not values[0] < values[1] or (log and values[0] <= 0):
        raise UserError(f"--{name}={spec}: the range needs low < high"
                        f"{' and low > 0 for a log scale' if log else ''}")
    return "range", values, log


def typed(text, default):
    """`text` as a value of the default's type (ValueError if it is none)."""
    if isinstance(default, bool):
        if text.lower() not in ("true", "false"):
            raise ValueError(text)
        return text.lower() == "true"
    return type(default)(text)


def suggest(trial, space):
    """{setting: value} for this trial, drawn by the study's sampler from the space."""
    values = {}
    for name, (kind, bounds, log) in space.items():
        if kind == "choices":
            values[name] = trial.suggest_categorical(name, bounds)
        elif isinstance(bounds[0], int):
            values[name] = trial.suggest_int(name, bounds[0], bounds[1], log=log)
        else:
            values[name] = trial.suggest_float(name, bounds[0], bounds[1], log=log)
    return values
