"""``assay harden adversarial|smoothing`` and ``assay compress``: make a new model from a
model, write it, and (for harden) audit the model before and after in one report.

    assay harden adversarial --arch lenet --data mnist:train --method fast --eps 0.3 \\
        --epochs 10 --out lenet-at.safetensors
    assay compress --model lenet.safetensors --arch lenet --data mnist:train --prune 0.9 \\
        --out lenet-pruned.safetensors
"""

from __future__ import annotations

import argparse
import copy
import logging
import math
from pathlib import Path
from typing import Callable

from .errors import AssayValueError

log = logging.getLogger("assay")


def add_harden_parser(commands, model_options: Callable[[argparse.ArgumentParser], None]) -> None:
    harden = commands.add_parser(
        "harden", help="train a more robust model and audit it before and after",
        description="Train a hardened copy of a model, write it, and write one report with the "
                    "audits of the model before and after (and the change of every metric).")
    methods = harden.add_subparsers(dest="defence", required=True, metavar="DEFENCE")
    adversarial = methods.add_parser("adversarial", help="adversarial training (PGD-AT, TRADES, "
                                                         "fast FGSM)")
    adversarial.add_argument("--method", choices=("pgd", "trades", "fast"), default="pgd",
                             help="pgd (Madry et al. 2018), trades (Zhang et al. 2019) or fast "
                                  "(FGSM with a random start, Wong et al. 2020) (default: "
                                  "%(default)s)")
    adversarial.add_argument("--eps", type=float, required=True,
                             help="training radius, > 0 (required; no default)")
    adversarial.add_argument("--norm", choices=("linf", "l2"), default="linf",
                             help="the norm of the radius (default: %(default)s)")
    adversarial.add_argument("--steps", type=int,
                             help="attack steps, pgd and trades only (default: 10)")
    adversarial.add_argument("--beta", type=float,
                             help="TRADES weight of the robust term, trades only (default: 6.0)")
    adversarial.add_argument("--alpha", type=float,
                             help="FGSM step, fast only (default: 1.25 * --eps)")
    adversarial.add_argument("--ramp-epochs", type=float, default=0.0, metavar="E",
                             help="grow the radius linearly from 0 to --eps over the first E "
                                  "epochs (default 0: full radius from the start; from scratch "
                                  "on MNIST at eps 0.3, 2 epochs let PGD-AT learn)")
    smoothing = methods.add_parser("smoothing", help="Gaussian noise augmentation for "
                                                     "randomized smoothing (Cohen et al. 2019)")
    smoothing.add_argument("--sigma", type=float, default=0.25,
                           help="Gaussian noise level, > 0 (default: %(default)s)")
    for sub in (adversarial, smoothing):
        _common(sub, model_options)
        sub.add_argument("--report", type=Path,
                         help="before/after report directory (default: OUT's name + '-report' "
                              "beside OUT)")
        sub.add_argument("--plan", type=Path, help="TOML plan for both audits (default: "
                                                   "accuracy and the defence's robustness check)")


def add_compress_parser(commands, model_options: Callable[[argparse.ArgumentParser], None]) -> None:
    compress = commands.add_parser(
        "compress", help="prune, quantize or distill a model and write the new one",
        description="Write a compressed copy of a model: magnitude pruning, int8 quantization "
                    "(written as TorchScript) or distillation into a zoo architecture.")
    how = compress.add_mutually_exclusive_group(required=True)
    how.add_argument("--prune", type=float, metavar="AMOUNT",
                     help="magnitude pruning: the fraction of weights zeroed, in [0, 1) "
                          "(default: no pruning)")
    how.add_argument("--quantize", choices=("int8",),
                     help="post-training int8 quantization (default: none)")
    how.add_argument("--distill", metavar="ARCH",
                     help="train this zoo architecture (mlp, small_cnn, lenet, resnet) as the "
                          "student of the model (default: none)")
    compress.add_argument("--structured", action="store_true",
                          help="with --prune: prune whole filters by L1 norm, per layer "
                               "(default: single weights)")
    compress.add_argument("--static", action="store_true",
                          help="with --quantize: static int8 quantization calibrated on --data "
                               "(default: dynamic)")
    _common(compress, model_options)


def _common(parser: argparse.ArgumentParser, model_options) -> None:
    parser.add_argument("--model", type=Path, metavar="PATH",
                        help="the model file (default: none; --arch then builds a fresh zoo "
                             "model)")
    parser.add_argument("--data", metavar="SPEC", required=True,
                        help="training data, e.g. mnist:train or train.npz (required)")
    parser.add_argument("--eval-data", metavar="SPEC",
                        help="evaluation data (default: the test split of --data, 1000 points)")
    model_options(parser)
    parser.add_argument("--epochs", type=int, default=10,
                        help="training epochs, >= 1 (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=1e-3,
                        help="Adam learning rate, the peak with --schedule cyclic (default: "
                             "%(default)s)")
    parser.add_argument("--schedule", choices=("constant", "cyclic"), default="constant",
                        help="learning-rate schedule: constant, or cyclic (0 up to --lr at "
                             "mid-training and back to 0; Wong et al. 2020) (default: "
                             "%(default)s)")
    parser.add_argument("--batch-size", type=int, default=128,
                        help="training batch size (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of a fresh model's weights and of the training "
                             "(default: %(default)s)")
    parser.add_argument("--out", type=Path, required=True,
                        help="the new model: .safetensors (weights; reload with --arch) or .pt "
                             "(TorchScript) (required)")
    parser.add_argument("--device", default="cpu",
                        help="torch device, e.g. cpu or cuda (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bars or log lines (default: show them)")


def run_command(args: argparse.Namespace) -> int:
    from ._paths import ensure_writable_dir, ensure_writable_file
    from .audit.runner import preflight
    from .cli import check_model_options

    if args.out.suffix not in (".safetensors", ".pt"):
        raise AssayValueError(f"--out {args.out}: write .safetensors (weights) or .pt "
                              "(TorchScript).")
    if args.command == "compress" and args.quantize and args.out.suffix == ".safetensors":
        raise AssayValueError(f"--out {args.out}: an int8 model cannot be written as weights; "
                              "use a .pt (TorchScript) path.")
    # Everything that can be refused is refused before the data is loaded and the training
    # starts: the flags, the output paths, the plan, then the model against the data.
    check_model_options(args)
    _check_numbers(args)
    ensure_writable_file(args.out, "--out")
    label, plan = None, None
    if args.command == "harden":
        ensure_writable_dir(_report_dir(args), "--report")
        label, plan = _plan(args)
    train, test = _data(args)
    check_model_options(args, train.input_shape)
    model, info = _model(args, train)
    preflight(model, test)
    if args.command == "compress":
        return _compress(args, model, info, train, test)
    return _harden(args, model, info, label, plan, train, test)


def _check_numbers(args: argparse.Namespace) -> None:
    """Refuse a numeric flag out of range in the flag's own words."""
    rules = [("--epochs", args.epochs, 1, False), ("--batch-size", args.batch_size, 1, False),
             ("--seed", args.seed, 0, False), ("--lr", args.lr, 0, True)]
    if args.command == "harden" and args.defence == "adversarial":
        rules += [("--eps", args.eps, 0, True), ("--steps", args.steps, 1, False),
                  ("--beta", args.beta, 0, False), ("--alpha", args.alpha, 0, True),
                  ("--ramp-epochs", args.ramp_epochs, 0, False)]
    elif args.command == "harden":
        rules.append(("--sigma", args.sigma, 0, True))
    elif args.prune is not None and not 0 <= args.prune < 1:
        raise AssayValueError(f"--prune {args.prune:g}: the fraction of weights zeroed must be "
                              "in [0, 1).")
    for flag, value, low, strict in rules:
        if value is not None and not (math.isfinite(value) and (
                value > low if strict else value >= low)):
            raise AssayValueError(f"{flag} {value:g}: must be "
                                  f"{'>' if strict else '>='} {low}.")


def _report_dir(args: argparse.Namespace) -> Path:
    return args.report or args.out.with_name(args.out.stem + "-report")


def _plan(args: argparse.Namespace):
    """The defence's label and the plan of both audits (validated here, before training)."""
    from .audit.plan import load_plan, plan_from_dict

    if args.defence == "adversarial":
        label = f"{args.method} adversarial training at {args.norm} eps={args.eps:g}"
        default_plan = {"checks": [{"name": "accuracy"}, {"name": "robustness", "params": {
            "norms": [args.norm], "eps": [0.0, args.eps / 2, args.eps], "mode": "quick"}}]}
    else:
        label = f"Gaussian augmentation at sigma={args.sigma:g}"
        default_plan = {"checks": [{"name": "accuracy"}, {"name": "certified_robustness",
                                                          "params": {"sigma": args.sigma}}]}
    plan = load_plan(args.plan) if args.plan else plan_from_dict(default_plan,
                                                                 source="<harden plan>")
    return label, plan


def _data(args: argparse.Namespace):
    from .core.data import load_data, parse_spec

    train = load_data(args.data, data_root=args.data_dir, default_split="train")
    spec = args.eval_data
    if spec is None:
        if args.data.endswith(".npz"):
            raise AssayValueError("--data is an .npz file: name the evaluation data with "
                                  "--eval-data.")
        spec = f"{parse_spec(args.data)[0]}:test:1000"
    return train, load_data(spec, data_root=args.data_dir)


def _model(args: argparse.Namespace, train):
    """The wrapped model on --device, and the report's model info (the file's sha256)."""
    import torch

    from .core import zoo
    from .core.loading import describe_file, load_network
    from .core.model import ModelWrapper

    info: dict = {}
    if args.model is not None:
        net, _ = load_network(args.model, arch=args.arch, input_shape=train.input_shape,
                              num_classes=train.num_classes)
        name = args.model.name
        info = {"file": describe_file(args.model)}
    elif args.arch:
        # eval mode: a fresh model was not "handed over in train mode"
        net = zoo.build(args.arch, input_shape=train.input_shape, num_classes=train.num_classes,
                        seed=args.seed).eval()
        name = f"{args.arch} (untrained)"
    else:
        raise AssayValueError("name the model with --model PATH or a zoo architecture with "
                              "--arch.")
    model = ModelWrapper(net, num_classes=train.num_classes, input_shape=train.input_shape,
                         bounds=tuple(args.bounds), mean=args.mean, std=args.std, name=name)
    try:
        return model.to(torch.device(args.device)), info
    except (RuntimeError, AssertionError) as err:
        raise AssayValueError(f"--device {args.device!r} is not usable here "
                              f"({str(err).strip().splitlines()[0]}).") from err


def _config(args: argparse.Namespace):
    from .core.training import TrainConfig

    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                       schedule=args.schedule, seed=args.seed)


def _harden(args, model, info, label, plan, train, test) -> int:
    import dataclasses
    import time

    import torch

    from .audit.runner import run_audit
    from .core.inference import has_conv2d
    from .core.loading import describe_file
    from .report.compare import write_comparison

    hardened = _trainable_copy(model)
    hardened.findings = []  # its own audit inspects it; it was not handed over in train mode
    if hardened.device.type == "cpu" and has_conv2d(hardened):
        # the same function with faster CPU convolution kernels (forward + backward 1.3x on
        # the MNIST LeNet); _save writes contiguous tensors
        hardened.to(memory_format=torch.channels_last)
    progress = not args.quiet
    started = time.perf_counter()
    if args.defence == "adversarial":
        from .defenses.adversarial import adversarial_training

        result = adversarial_training(hardened, train, method=args.method, eps=args.eps,
                                      norm=args.norm, config=_config(args), steps=args.steps,
                                      beta=args.beta, alpha=args.alpha,
                                      ramp_epochs=args.ramp_epochs, show_progress=progress)
        if result.collapsed_at is not None:
            log.warning("catastrophic overfitting in epoch %d; the best epoch was kept",
                        result.collapsed_at + 1)
    else:
        from .core.training import fit
        from .defenses.smoothing import gaussian_augmentation_loss

        fit(hardened, train, _config(args), loss_fn=gaussian_augmentation_loss(args.sigma),
            show_progress=progress)
    seconds = time.perf_counter() - started
    hardened.name = f"{model.name} + {label}"
    _save(hardened.net, args.out, test)
    before = run_audit(model, test, plan, train_data=train, progress=progress, model_info=info)
    after = run_audit(hardened, test, plan, train_data=train, progress=progress,
                      model_info={"file": describe_file(args.out)})
    report = _report_dir(args)
    method = ({k: getattr(args, k) for k in ("method", "eps", "norm", "steps", "beta", "alpha",
                                             "ramp_epochs")}
              if args.defence == "adversarial" else {"sigma": args.sigma})
    write_comparison(before, after, report, title=f"Before and after {label}", training={
        "defence": args.defence, "method": method, "config": dataclasses.asdict(_config(args)),
        "seconds": round(seconds, 3)})
    log.warning("%s: wrote %s; before/after report in %s/comparison.html", after.status.upper(),
                args.out, report)
    return after.exit_code


def _trainable_copy(model):
    """A deep copy to train. A TorchScript module's deepcopy holds its parameters as
    non-leaf clones, which an optimizer refuses; they are made leaves again."""
    import torch

    hardened = copy.deepcopy(model)
    with torch.no_grad():
        for param in hardened.parameters():
            if not param.is_leaf:
                param.detach_().requires_grad_(True)
    if not any(p.requires_grad and p.is_floating_point() for p in hardened.parameters()):
        raise AssayValueError(f"{model.name}: the model has no trainable float parameters "
                              "(an int8 model?); harden the float model.")
    return hardened


def _compress(args, model, info, train, test) -> int:
    from .defenses.compression import distill, model_size_bytes, prune, quantize

    kind = info.get("file", {}).get("format")
    if kind in ("torchscript", "export") and args.distill is None:
        flag = "--prune" if args.prune is not None else "--quantize"
        shown = {"torchscript": "TorchScript", "export": "torch.export"}[kind]
        raise AssayValueError(f"{flag} needs the model's layers, which a {shown} file holds "
                              "compiled; pass its weights (safetensors or a state_dict) with "
                              "--arch.")
    if args.prune is not None:
        new = prune(model, args.prune, structure="structured" if args.structured
                    else "unstructured")
    elif args.quantize:
        new = quantize(model, "static" if args.static else "dynamic",
                       calibration=train if args.static else None)
    else:
        new = distill(model, args.distill, train, config=_config(args),
                      show_progress=not args.quiet)
    _save(new.net, args.out, test)
    before, after = _accuracy(model, test), _accuracy(new, test)
    log.warning("wrote %s: accuracy %.4f -> %.4f, size %d -> %d bytes", args.out, before,
                after, model_size_bytes(model), model_size_bytes(new))
    return 0


def _accuracy(model, data) -> float:
    from .metrics.accuracy import accuracy

    return accuracy(model.predict(data.x), data.y.to(model.device))


def _save(net, path: Path, example) -> None:
    """Weights as safetensors (no code in the file), or a TorchScript archive for .pt
    (the only way an int8 model keeps its packed weights)."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from .defenses.compression import is_quantized

        if is_quantized(net):
            raise AssayValueError(f"--out {path}: an int8 model cannot be written as weights; "
                                  "use a .pt (TorchScript) path.")
        from safetensors.torch import save_file

        save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()},
                  str(path))
        return
    net = copy.deepcopy(net).cpu().eval()  # a CPU copy: the caller's model stays on its device
    with torch.no_grad():
        traced = net if isinstance(net, torch.jit.ScriptModule) else torch.jit.trace(
            net, example.x[:2].cpu())
    torch.jit.save(traced, str(path))
