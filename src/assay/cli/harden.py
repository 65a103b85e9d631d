"""``assay harden adversarial|smoothing|fairness|dp`` and ``assay compress``: the flags,
their checks before any work, and the calls of :func:`assay.workflows.harden` and
:func:`assay.workflows.compress`.

    assay harden adversarial --arch lenet --data mnist:train --method fast --eps 0.3 \\
        --epochs 10 --out lenet-at.safetensors
    assay compress --model lenet.safetensors --arch lenet --data mnist:train --prune 0.9 \\
        --out lenet-pruned.safetensors
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

from ..errors import AssayValueError
from .options import (add_model_options, check_model_options, data_options, model_from_args,
                      to_device)

log = logging.getLogger("assay")


def add_harden_parser(commands) -> None:
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
    fairness = methods.add_parser("fairness", help="training that narrows a group gap "
                                                   "(reweighing, a fairness regulariser)")
    fairness.add_argument("--attribute", required=True, metavar="NAME",
                          help="the training data's sensitive attribute whose groups the "
                               "training evens out (required; e.g. sex)")
    fairness.add_argument("--method", choices=("reweighing", "regularised"),
                          default="reweighing",
                          help="reweighing (Kamiran & Calders 2012: weights that make the "
                               "label independent of the group) or regularised (cross-entropy "
                               "plus --lam times the batch's group gap) (default: %(default)s)")
    fairness.add_argument("--constraint", choices=("demographic_parity", "equalized_odds"),
                          default="demographic_parity",
                          help="the gap the regulariser penalises (default: %(default)s)")
    fairness.add_argument("--lam", type=float, default=1.0,
                          help="the regulariser's weight, >= 0 (default: %(default)s)")
    dp = methods.add_parser("dp", help="DP-SGD (Abadi et al. 2016) to a claimed (epsilon, "
                                        "delta), the noise calibrated by the accountant",
                            description="Differentially private training: per-sample "
                                        "gradients clipped and noised, Poisson-sampled batches "
                                        "of expected size --batch-size. The sampling and the "
                                        "noise are drawn from the operating system, not from "
                                        "--seed: noise replayed from a known seed protects "
                                        "nothing.")
    dp.add_argument("--epsilon", type=float, required=True,
                    help="the privacy budget, > 0 (required; no default)")
    dp.add_argument("--delta", type=float, required=True,
                    help="the failure probability, in (0, 1), e.g. 1e-5 (required; below "
                         "1 / the number of training samples)")
    dp.add_argument("--clip", type=float, default=1.0, metavar="C",
                    help="the per-sample gradient norm bound, > 0 (default: %(default)s)")
    dp.add_argument("--noise-multiplier", type=float, metavar="SIGMA",
                    help="the noise's standard deviation over --clip, > 0; refused when it "
                         "spends more than --epsilon (default: the smallest that meets "
                         "--epsilon)")
    dp.add_argument("--accountant", choices=("rdp", "pld"), default="rdp",
                    help="rdp (Renyi DP, Mironov 2017) or pld (privacy loss distributions, "
                         "tighter), both by Google's dp-accounting (default: %(default)s)")
    backdoor = methods.add_parser("backdoor", help="remove a backdoor with clean data "
                                                   "(Neural Cleanse unlearning, Fine-Pruning)")
    backdoor.add_argument("--method", choices=("nc-unlearn", "fine-pruning", "anp"),
                          default="nc-unlearn",
                          help="nc-unlearn (Wang et al. 2019: fine-tune with the trigger "
                               "Neural Cleanse reconstructs, labels kept), fine-pruning (Liu "
                               "et al. 2018: prune the last convolution's dormant channels, "
                               "then fine-tune) or anp (Wu & Wang 2021: prune the neurons "
                               "that adversarial neuron perturbations expose, no fine-tuning; "
                               "--epochs is not used) (default: %(default)s)")
    for sub in (adversarial, smoothing, fairness, dp, backdoor):
        _common(sub)
        sub.add_argument("--report", type=Path,
                         help="before/after report directory (default: OUT's name + '-report' "
                              "beside OUT)")
        sub.add_argument("--plan", type=Path, help="TOML plan for both audits (default: "
                                                   "accuracy and the defence's own check: "
                                                   "robustness, certified robustness or "
                                                   "fairness)")


def add_compress_parser(commands) -> None:
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
    _common(compress)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, metavar="PATH",
                        help="the model file (default: none; --arch then builds a fresh zoo "
                             "model)")
    parser.add_argument("--data", metavar="SPEC", required=True,
                        help="training data, e.g. mnist:train or train.npz (required)")
    parser.add_argument("--eval-data", metavar="SPEC",
                        help="evaluation data (default: the test split of --data, 1000 points)")
    add_model_options(parser)
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


def run(args: argparse.Namespace) -> int:
    from .._paths import ensure_writable_dir, ensure_writable_file
    from ..audit.runner import preflight

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
    defence, plan = None, None
    if args.command == "harden":
        ensure_writable_dir(_report_dir(args), "--report")
        defence, plan = _defence_and_plan(args)
    train, test = _data(args)
    check_model_options(args, train.input_shape)
    model, info = model_from_args(args, train, num_classes=train.num_classes, range_of=(test,))
    to_device(model, args.device)
    preflight(model, test, plan, train_data=train)
    if args.command == "harden" and args.defence == "fairness":
        for split in (train, test):  # refused now, not after the training
            split.attribute(args.attribute)
    if args.command == "harden" and args.defence == "dp":
        from ..defenses.dp import validate_private_model

        validate_private_model(model)  # a BatchNorm is refused now, not after the audit
    if args.command == "compress":
        return _compress(args, model, info, train, test)
    return _harden(args, model, info, defence, plan, train, test)


def _check_numbers(args: argparse.Namespace) -> None:
    """Refuse a numeric flag out of range in the flag's own words."""
    rules = [("--epochs", args.epochs, 1, False), ("--batch-size", args.batch_size, 1, False),
             ("--seed", args.seed, 0, False), ("--lr", args.lr, 0, True)]
    if args.command == "harden" and args.defence == "adversarial":
        rules += [("--eps", args.eps, 0, True), ("--steps", args.steps, 1, False),
                  ("--beta", args.beta, 0, False), ("--alpha", args.alpha, 0, True),
                  ("--ramp-epochs", args.ramp_epochs, 0, False)]
    elif args.command == "harden" and args.defence == "smoothing":
        rules.append(("--sigma", args.sigma, 0, True))
    elif args.command == "harden" and args.defence == "dp":
        rules += [("--epsilon", args.epsilon, 0, True), ("--clip", args.clip, 0, True),
                  ("--noise-multiplier", args.noise_multiplier, 0, True)]
        if not (math.isfinite(args.delta) and 0 < args.delta < 1):
            raise AssayValueError(f"--delta {args.delta:g}: must be in (0, 1), e.g. 1e-5.")
    elif args.command == "harden" and args.defence == "fairness":
        rules.append(("--lam", args.lam, 0, False))
    elif args.command == "compress" and args.prune is not None and not 0 <= args.prune < 1:
        raise AssayValueError(f"--prune {args.prune:g}: the fraction of weights zeroed must be "
                              "in [0, 1).")
    for flag, value, low, strict in rules:
        if value is not None and not (math.isfinite(value) and (
                value > low if strict else value >= low)):
            raise AssayValueError(f"{flag} {value:g}: must be "
                                  f"{'>' if strict else '>='} {low}.")


def _report_dir(args: argparse.Namespace) -> Path:
    return args.report or args.out.with_name(args.out.stem + "-report")


def _defence_and_plan(args: argparse.Namespace):
    """The defence and the plan of both audits (validated here, before training)."""
    from ..audit.plan import load_plan
    from ..workflows import (AdversarialTraining, BackdoorRemoval, Defence, FairnessTraining,
                             GaussianAugmentation, PrivateTraining, harden_plan)

    defence: Defence
    if args.defence == "adversarial":
        defence = AdversarialTraining(eps=args.eps, method=args.method, norm=args.norm,
                                      steps=args.steps, beta=args.beta, alpha=args.alpha,
                                      ramp_epochs=args.ramp_epochs)
    elif args.defence == "fairness":
        defence = FairnessTraining(attribute=args.attribute, method=args.method,
                                   constraint=args.constraint, lam=args.lam)
    elif args.defence == "dp":
        defence = PrivateTraining(epsilon=args.epsilon, delta=args.delta,
                                  max_grad_norm=args.clip,
                                  noise_multiplier=args.noise_multiplier,
                                  accountant=args.accountant)
    elif args.defence == "backdoor":
        defence = BackdoorRemoval(method=args.method.replace("-", "_"))
    else:
        defence = GaussianAugmentation(sigma=args.sigma)
    return defence, load_plan(args.plan) if args.plan else harden_plan(defence)


def _data(args: argparse.Namespace):
    from ..core.data import load_data, parse_spec

    train = load_data(args.data, data_root=args.data_dir, default_split="train",
                      **data_options(args))
    spec = args.eval_data
    if spec is None:
        if args.data.endswith((".npz", ".csv")):
            raise AssayValueError(f"--data is an {args.data[-4:]} file: name the evaluation "
                                  "data with --eval-data.")
        spec = f"{parse_spec(args.data)[0]}:test:1000"
    return train, load_data(spec, data_root=args.data_dir, **data_options(args, train.schema))


def _config(args: argparse.Namespace):
    from ..core.training import TrainConfig

    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                       schedule=args.schedule, seed=args.seed)


def _harden(args, model, info, defence, plan, train, test) -> int:
    from ..workflows import harden

    result = harden(model, defence, train, test, out=args.out, report_dir=_report_dir(args),
                    config=_config(args), plan=plan, model_info=info,
                    show_progress=not args.quiet)
    log.warning("%s: wrote %s; before/after report in %s/comparison.html",
                result.after.status.upper(), args.out, _report_dir(args))
    return result.after.exit_code


def _compress(args, model, info, train, test) -> int:
    from ..workflows import compress

    kind = info.get("file", {}).get("format")
    if kind in ("torchscript", "export") and args.distill is None:
        flag = "--prune" if args.prune is not None else "--quantize"
        shown = {"torchscript": "TorchScript", "export": "torch.export"}[kind]
        raise AssayValueError(f"{flag} needs the model's layers, which a {shown} file holds "
                              "compiled; pass its weights (safetensors or a state_dict) with "
                              "--arch.")
    result = compress(model, train, test, out=args.out, prune=args.prune,
                      structured=args.structured, quantize=args.quantize, static=args.static,
                      distill=args.distill, config=_config(args), show_progress=not args.quiet)
    log.warning("wrote %s: accuracy %.4f -> %.4f, size %d -> %d bytes", args.out,
                result.accuracy_before, result.accuracy_after, result.size_before,
                result.size_after)
    return 0
