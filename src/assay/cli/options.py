"""Flags that several commands share (the model file and its data, threads, device), their
checks in the flags' own words, and the one function that loads and wraps a model from
them."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ..errors import AssayValueError


def threads(text: str) -> int | str:
    if text == "auto":
        return text
    if text.isascii() and text.isdigit() and int(text) > 0:
        return int(text)
    raise argparse.ArgumentTypeError(f"{text!r}: give a positive number of threads or 'auto'")


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """Options that describe a model file and its data, shared by every command."""
    parser.add_argument("--arch", help="zoo architecture for weight-only files (mlp, small_cnn, "
                                       "lenet, resnet; default: none)")
    parser.add_argument("--bounds", nargs=2, type=float, metavar=("LOW", "HIGH"),
                        default=(0.0, 1.0), help="valid input range (default 0 1)")
    parser.add_argument("--mean", type=float, nargs="+",
                        help="per-channel normalisation mean, 1 or one per channel, applied "
                             "inside the model wrapper (default: none)")
    parser.add_argument("--std", type=float, nargs="+",
                        help="per-channel normalisation std, positive (default: none)")
    parser.add_argument("--data-dir", type=Path, help="data directory (default $ASSAY_DATA_DIR)")


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
    low, high = args.bounds
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


def load_data_flag(flag: str, spec: str, args: argparse.Namespace, *,
                   default_split: str = "test"):
    """``load_data(spec)``; a spec that does not load is refused naming ``flag``."""
    from ..core.data import load_data

    try:
        return load_data(spec, data_root=args.data_dir, default_split=default_split)
    except AssayValueError as err:
        raise AssayValueError(f"{flag} {spec}: {err}") from err


def model_from_args(args: argparse.Namespace, data, *, num_classes: int | None = None):
    """The wrapped model that --model (or, without it, a fresh --arch zoo model seeded by
    --seed) and --bounds/--mean/--std describe, for inputs like ``data``'s, and the
    report's model info (the file's sha256). ``num_classes`` None reads the class count
    off the model's output (an audit may show a model more classes than the data has)."""
    from ..core import zoo
    from ..core.model import ModelWrapper
    from ..core.model_io import describe_file, load_network

    info: dict = {}
    if args.model is not None:
        net, _ = load_network(args.model, arch=args.arch, input_shape=data.input_shape,
                              num_classes=data.num_classes)
        name = args.model.name
        info = {"file": describe_file(args.model)}
    elif args.arch:
        # eval mode: a fresh model was not "handed over in train mode"
        net = zoo.build(args.arch, input_shape=data.input_shape, num_classes=data.num_classes,
                        seed=args.seed).eval()
        name = f"{args.arch} (untrained)"
    else:
        raise AssayValueError("name the model with --model PATH or a zoo architecture with "
                              "--arch.")
    model = ModelWrapper(net, num_classes=num_classes, input_shape=data.input_shape,
                         bounds=tuple(args.bounds), mean=args.mean, std=args.std, name=name)
    return model, info


def to_device(model, device: str):
    """``model`` on --device, or the flag refused in one line."""
    import torch

    try:
        return model.to(torch.device(device))
    except (RuntimeError, AssertionError) as err:
        raise AssayValueError(f"--device {device!r} is not usable here "
                              f"({str(err).strip().splitlines()[0]}).") from err
