"""``assay attack backdoor``: train a backdoored model on a poisoned copy of a training set
(for exercises, and to test a scanner), write it beside its trigger, and report its clean
accuracy and attack success rate.

    assay attack backdoor --data mnist:train --attack badnets --target 3 --rate 0.1 \\
        --arch lenet --epochs 3 --out trojan.safetensors
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path

from ..errors import AssayValueError

log = logging.getLogger("assay")

ATTACK_NAMES = ("badnets", "blended", "wanet", "label_flip", "label_consistent")


def add_parser(commands) -> None:
    attack = commands.add_parser(
        "attack", help="make an attacked model (a backdoor) for exercises and scanner tests",
        description="Train a model on a poisoned copy of the training data and write it.")
    kinds = attack.add_subparsers(dest="kind", required=True, metavar="KIND")
    backdoor = kinds.add_parser("backdoor", help="poison the training data, train, write "
                                                 "the model and its trigger")
    backdoor.add_argument("--data", metavar="SPEC", required=True,
                          help="the training data, NAME[:SPLIT][:N] (SPLIT default train) or "
                               "an .npz path; images in [0, 1]")
    backdoor.add_argument("--eval-data", metavar="SPEC",
                          help="data for clean accuracy and attack success (default: NAME:"
                               "test:1000 of a named --data)")
    backdoor.add_argument("--attack", choices=ATTACK_NAMES, default="badnets",
                          help="badnets (Gu et al. 2017), blended (Chen et al. 2017), wanet "
                               "(Nguyen & Tran 2021) or label_flip (default: %(default)s)")
    backdoor.add_argument("--target", type=int, default=0,
                          help="the class triggered inputs go to (default: %(default)s)")
    backdoor.add_argument("--rate", type=float, default=0.1,
                          help="share of the training set poisoned, in (0, 1) (default: "
                               "%(default)s)")
    backdoor.add_argument("--epochs", type=int, default=10, help="default: %(default)s")
    backdoor.add_argument("--batch-size", type=int, default=128, help="default: %(default)s")
    backdoor.add_argument("--lr", type=float, default=1e-3,
                          help="Adam learning rate (default: %(default)s)")
    backdoor.add_argument("--seed", type=int, default=0,
                          help="poisoned samples, weights and shuffling (default: %(default)s)")
    backdoor.add_argument("--out", type=Path, required=True,
                          help="the model file to write (.safetensors or .pt); the trigger "
                               "goes beside it as OUT.trigger.json")
    backdoor.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    backdoor.add_argument("--quiet", action="store_true", help="no progress or log lines")
    backdoor.add_argument("--arch", help="the zoo architecture to train (mlp, small_cnn, "
                                         "lenet, resnet; required)")
    backdoor.add_argument("--data-dir", type=Path,
                          help="data directory (default $ASSAY_DATA_DIR)")


def run(args: argparse.Namespace) -> int:
    from .._paths import ensure_writable_file
    from ..attacks.poisoning import POISONING_ATTACKS, BackdoorAttack
    from ..core import zoo
    from ..core.data import load_data, parse_spec
    from ..core.inference import batched_predict
    from ..core.model_io import save_network
    from ..core.threads import threads_for
    from ..core.training import TrainConfig, fit
    from .options import to_device

    if args.out.suffix not in (".safetensors", ".pt"):
        raise AssayValueError(f"--out {args.out}: write .safetensors (weights) or .pt "
                              "(TorchScript).")
    if args.arch not in zoo.ARCHITECTURES:
        raise AssayValueError(f"--arch {args.arch}: name the zoo architecture to train, one "
                              f"of {', '.join(sorted(zoo.ARCHITECTURES))}.")
    for flag, value, low, strict in (("--epochs", args.epochs, 1, False),
                                     ("--batch-size", args.batch_size, 1, False),
                                     ("--lr", args.lr, 0, True), ("--seed", args.seed, 0, False)):
        if not (math.isfinite(value) and (value > low if strict else value >= low)):
            raise AssayValueError(f"{flag} {value:g}: must be {'>' if strict else '>='} {low}.")
    if not 0 < args.rate < 1:
        raise AssayValueError(f"--rate {args.rate:g}: the poisoned share must lie in (0, 1).")
    ensure_writable_file(args.out, "--out")
    trigger_path = args.out.with_name(args.out.name + ".trigger.json")
    train = load_data(args.data, data_root=args.data_dir, default_split="train")
    if not 0 <= args.target < train.num_classes:
        raise AssayValueError(f"--target {args.target}: {train.label} has classes 0.."
                              f"{train.num_classes - 1}.")
    eval_spec = args.eval_data
    if eval_spec is None:
        if args.data.endswith((".npz", ".csv")):
            raise AssayValueError("--data is a file: name the evaluation data with --eval-data.")
        eval_spec = f"{parse_spec(args.data)[0]}:test:1000"
    test = load_data(eval_spec, data_root=args.data_dir)
    settings: dict = {"rate": args.rate, "seed": args.seed, "target": args.target}
    if args.attack == "label_flip":  # the class before the target is flipped into it
        settings.update(mode="targeted", source=(args.target - 1) % train.num_classes)
    attack = POISONING_ATTACKS[args.attack](**settings)
    poisoned = attack.poison(train)
    net = zoo.build(args.arch, input_shape=train.input_shape, num_classes=train.num_classes,
                    seed=args.seed)
    to_device(net, args.device)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         seed=args.seed)
    with threads_for("auto", net, train.x, owner="attack backdoor"):
        fit(net, poisoned.data, config, show_progress=not args.quiet)
    clean = float((batched_predict(net, test.x).cpu() == test.y).float().mean())
    summary = {"attack": attack.name, "settings": attack.settings(), "target": poisoned.target,
               "poisoned": len(poisoned.poisoned), "clean_accuracy": clean}
    if isinstance(attack, BackdoorAttack):
        summary["attack_success_rate"] = attack.success_rate(net, test.x, test.y)
    save_network(net, args.out, test)
    trigger_path.write_text(json.dumps(summary, indent=2) + "\n")
    asr = summary.get("attack_success_rate")
    log.warning("wrote %s (clean accuracy %.4f%s) and %s", args.out, clean,
                "" if asr is None else f", attack success rate {asr:.4f}", trigger_path)
    return 0
