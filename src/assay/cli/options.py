"""Flags that several commands share (the model file and its data, threads, device), their
checks in the flags' own words, and the one function that loads and wraps a model from
them."""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

from ..errors import AssayValueError

log = logging.getLogger("assay")


def threads(text: str) -> int | str:
    if text == "auto":
        return text
    if text.isascii() and text.isdigit() and int(text) > 0:
        return int(text)
    raise argparse.ArgumentTypeError(f"{text!r}: give a positive number of threads or 'auto'")


def resource_count(text: str) -> float:
    """A finite number >= 0 of CPUs or GPUs (fractions allowed, as Ray takes them)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text!r}: give a number >= 0, e.g. 1 or 0.5")
    return value


def column_list(text: str) -> tuple[str, ...]:
    """``sex,race`` -> ``("sex", "race")``; an empty or repeated name is refused."""
    names = tuple(name.strip() for name in text.split(","))
    if not all(names) or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"{text!r}: give distinct column names separated by "
                                         "commas, e.g. sex,race")
    return names


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """Options that describe a model file and its data, shared by every command."""
    parser.add_argument("--arch", help="zoo architecture for weight-only files (mlp, small_cnn, "
                                       "lenet, resnet; default: none)")
    parser.add_argument("--bounds", nargs=2, type=float, metavar=("LOW", "HIGH"),
                        help="valid input range (default: 0 1 for images; for tabular data "
                             "the data's own range, training and evaluation data together)")
    parser.add_argument("--mean", type=float, nargs="+",
                        help="per-channel normalisation mean, 1 or one per channel, applied "
                             "inside the model wrapper (default: none)")
    parser.add_argument("--std", type=float, nargs="+",
                        help="per-channel normalisation std, positive (default: none)")
    parser.add_argument("--data-dir", type=Path, help="data directory (default $ASSAY_DATA_DIR)")
    parser.add_argument("--target", metavar="COLUMN",
                        help="the label column of a CSV --data (required for a CSV unless the "
                             "model file carries its tabular schema; default: none)")
    parser.add_argument("--sensitive", type=column_list, metavar="A,B",
                        help="sensitive attributes to keep beside the data: a CSV's columns, or "
                             "a choice among a data set's own (adult: sex,race; german: sex,age; "
                             "compas: sex,race,age_cat; an .npz's group_<name> arrays) "
                             "(default: a data set's own, none of a CSV's)")


def check_model_options(args: argparse.Namespace,
                        input_shape: tuple[int, ...] | None = None) -> None:
    """Refuse bad --arch (and compress's --distill), --bounds, --mean and --std in the
    flags' own words, before any work; with the data's ``input_shape``, also a --mean or
    --std of the wrong length."""
    from ..core.zoo import ARCHITECTURES

    for flag, arch in (("--arch", args.arch), ("--distill", getattr(args, "distill", None))):
        if arch is not None and arch not in ARCHITECTURES:
            raise AssayValueError(f"{flag} {arch}: unknown architecture; choose one of "
                                  f"{', '.join(sorted(ARCHITECTURES))}.")
    low, high = args.bounds if args.bounds is not None else (0.0, 1.0)
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise AssayValueError(f"--bounds {low:g} {high:g}: give two finite numbers LOW < HIGH, "
                              "the valid input range (e.g. --bounds 0 1).")
    for flag, values in (("--mean", args.mean), ("--std", args.std)):
        if values is None:
            continue
        shown = " ".join(f"{v:g}" for v in values)
        if not all(math.isfinite(v) for v in values):
            raise AssayValueError(f"{flag} {shown}: every value must be a finite number.")
        if flag == "--std" and min(values) <= 0:
            raise AssayValueError(f"--std {shown}: every value must be positive (the input "
                                  "is divided by it).")
        if input_shape is not None and len(values) not in (1, input_shape[0]):
            channels = input_shape[0]
            allowed = "1 value" if channels == 1 else (
                f"1 value or {channels} (one per channel, the first dimension)")
            raise AssayValueError(f"{flag} {shown}: {len(values)} values for inputs of shape "
                                  f"{tuple(input_shape)}; give {allowed}.")


def data_options(args: argparse.Namespace, schema=None) -> dict:
    """``load_data``'s tabular keywords: --target, --sensitive, and the schema that codes
    tabular rows: ``schema`` when given (the training data's), else the one --model's file
    carries (None for images, or a file without one)."""
    from ..core.model_io import schema_of_model_file

    model = getattr(args, "model", None)
    if schema is None and model is not None and model.is_file():
        schema = schema_of_model_file(model)
    return {"target": args.target, "sensitive": args.sensitive, "schema": schema}


def load_data_flag(flag: str, spec: str, args: argparse.Namespace, *,
                   default_split: str = "test", schema=None):
    """``load_data(spec)`` with the flags' :func:`data_options`; a spec that does not load
    is refused naming ``flag``."""
    from ..core.data import load_data

    try:
        return load_data(spec, data_root=args.data_dir, default_split=default_split,
                         **data_options(args, schema))
    except AssayValueError as err:
        raise AssayValueError(f"{flag} {spec}: {err}") from err


def resolve_bounds(args: argparse.Namespace, data, *others) -> tuple[float, float]:
    """--bounds, else for tabular data the range of its values in ``data`` and ``others``
    (the training and evaluation splits; None entries skipped), else 0 1 (images)."""
    if args.bounds is not None:
        return (float(args.bounds[0]), float(args.bounds[1]))
    if data.schema is None:
        return (0.0, 1.0)
    from ..core.tabular import value_range

    return value_range(data, *others)


def model_from_args(args: argparse.Namespace, data, *, num_classes: int | None = None,
                    range_of: tuple = ()):
    """The wrapped model that --model (or, without it, a fresh --arch zoo model seeded by
    --seed, with the tabular data's encoder) and --bounds/--mean/--std describe, for inputs
    like ``data``'s, and the report's model info (the file's sha256). ``num_classes`` None
    reads the class count off the model's output (an audit may show a model more classes
    than the data has). Tabular bounds without --bounds span ``data`` and ``range_of``."""
    from ..core import zoo
    from ..core.model import ModelWrapper
    from ..core.model_io import describe_file, load_network, schema_of_model_file

    info: dict = {}
    if args.model is not None:
        net, _ = load_network(args.model, arch=args.arch, input_shape=data.input_shape,
                              num_classes=data.num_classes)
        name = args.model.name
        info = {"file": describe_file(args.model)}
        if data.schema is not None and schema_of_model_file(args.model) is None:
            log.warning("%s carries no tabular schema: the data's categories were coded by "
                        "a schema fitted on the data itself, which must be how the model was "
                        "trained; save models with assay.core.model_io.save_network so the "
                        "coding travels with them", args.model)
    elif args.arch:
        # eval mode: a fresh model was not "handed over in train mode"
        net = zoo.build(args.arch, input_shape=data.input_shape, num_classes=data.num_classes,
                        seed=args.seed, schema=data.schema).eval()
        name = f"{args.arch} (untrained)"
    else:
        raise AssayValueError("name the model with --model PATH or a zoo architecture with "
                              "--arch.")
    model = ModelWrapper(net, num_classes=num_classes, input_shape=data.input_shape,
                         bounds=resolve_bounds(args, data, *range_of), mean=args.mean,
                         std=args.std, name=name)
    return model, info


def to_device(model, device: str):
    """``model`` on --device, or the flag refused in one line."""
    import torch

    try:
        return model.to(torch.device(device))
    except (RuntimeError, AssertionError) as err:
        raise AssayValueError(f"--device {device!r} is not usable here "
                              f"({str(err).strip().splitlines()[0]}).") from err
