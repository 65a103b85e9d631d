"""``assay audit``: run a plan on a model and data (or the demo) and write the reports."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import AssayValueError
from .options import (add_model_options, check_model_options, data_options, load_data_flag,
                      model_from_args, resource_count, threads, to_device)

# The plan of `assay audit --model` without --plan. Its gates catch a useless model on
# any data (half of the majority-class guess's errors avoided) and one that any
# perturbation of a tenth of the [0, 1] input range breaks (the embedded digits' CNN:
# 0.53 at eps 0.1, 0 at 0.3).
DEFAULT_PLAN: dict[str, Any] = {"checks": [
    {"name": "accuracy", "gates": ["gain_over_chance >= 0.5"]},
    {"name": "robustness", "gates": ["robust_accuracy@linf=0.1 >= 0.3"]},
]}


# The plan of `assay audit --predictions` (and of tabular data) without --plan: the default
# accuracy gate, calibration, and the fairness check of every attribute (its four-fifths
# rule warns; gates are the user's).
PREDICTIONS_PLAN: dict[str, Any] = {"checks": [
    DEFAULT_PLAN["checks"][0], {"name": "calibration"}, {"name": "fairness"}]}  # in order


def add_parser(commands) -> None:
    audit = commands.add_parser(
        "audit", help="run an audit plan and write the reports",
        description="Run the plan's checks on a model and data; write report.html, "
                    "report.json, junit.xml and summary.md. Exit 0 when every gate passes, "
                    "1 when one fails, 2 on bad input.")
    source = audit.add_mutually_exclusive_group(required=True)
    source.add_argument("--demo", nargs="?", const="digits", choices=("digits", "adult"),
                        help="train a demo model (or read its weights from the cache) and "
                             "audit it: 'digits' (the default) a CNN on the embedded 8x8 "
                             "digits; 'adult' an MLP on UCI Adult from the data directory, "
                             "with fairness by sex and race")
    source.add_argument("--model", type=Path, metavar="PATH",
                        help="TorchScript, torch.export (.pt2), safetensors or state_dict file")
    source.add_argument("--predictions", type=Path, metavar="CSV",
                        help="audit any model's recorded outputs instead of a torch model: a "
                             "CSV with columns label, score (probability of class 1) or "
                             "score_0..score_K-1 or prediction, and the sensitive attributes "
                             "(the other columns, or those --sensitive names); runs the checks "
                             "that need only outputs: accuracy, calibration, conformal, "
                             "fairness (default plan: accuracy, calibration when there are "
                             "scores, fairness)")
    audit.add_argument("--data", metavar="SPEC",
                       help="NAME[:SPLIT][:N] (digits, mnist, fashion-mnist, cifar10, adult, "
                            "german, compas), an .npz path, or a .csv path (with --target)")
    audit.add_argument("--train-data", metavar="SPEC",
                       help="the model's training data, same forms as --data (SPLIT default "
                            "train): the members for privacy checks, the training set for "
                            "data-side defenses; recorded in the report with its hash "
                            "(default: none; the demo passes its own)")
    add_model_options(audit)
    accuracy_gate, robustness_gate = (c["gates"][0] for c in DEFAULT_PLAN["checks"])
    audit.add_argument(
        "--plan", type=Path,
        help="TOML plan; `assay checks` lists the checks, their parameters and the metrics a "
             f"gate can name. Default: accuracy, gated by '{accuracy_gate}' (the model avoids "
             "at least half the errors of always answering the most frequent class), and "
             "robustness (PGD-20, L-inf eps 0, 0.1, 0.3 in input units), gated by "
             f"'{robustness_gate}' (at least 30%% of the inputs keep their class under every "
             "perturbation of 0.1, a tenth of the [0, 1] range; a normally trained CNN on "
             "the embedded digits scores 0.53 there); for tabular data, accuracy, "
             "calibration and fairness instead of robustness. The demos have their own "
             "plans.")
    audit.add_argument("--out", type=Path, default=Path("assay-report"),
                       help="output directory (default ./assay-report)")
    audit.add_argument("--cache-dir", type=Path,
                       help="where finished checks are cached (default OUT/.cache)")
    audit.add_argument("--no-cache", action="store_true", help="recompute every check")
    audit.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    audit.add_argument("--threads", type=threads, default="auto", metavar="N|auto",
                       help="CPU threads per check (default auto: before each check, the "
                            "model is timed on one thread and on all of them and the faster "
                            "is taken, so a busy neighbour on a shared machine does not slow "
                            "small models many times over; results agree at float rounding, "
                            "pass N for runs that must agree bit for bit)")
    audit.add_argument("--executor", default="local", metavar="NAME",
                       help="what runs the checks and the pieces they fan out: local (default, "
                            "in this process, one after another) or ray (Ray tasks, on the "
                            "cluster at --ray-address or on a local Ray instance; needs the "
                            "extra assay[ray])")
    audit.add_argument("--ray-address", metavar="ADDR",
                       help="the Ray cluster's address (auto, HOST:6379 or ray://HOST:10001; "
                            "default: start a local Ray instance); with --executor ray")
    audit.add_argument("--ray-cpus", type=resource_count, default=1.0, metavar="N",
                       help="CPUs each Ray task asks for (default 1; more than 0)")
    audit.add_argument("--ray-gpus", type=resource_count, default=None, metavar="N",
                       help="GPUs each Ray task asks for (default 1 with --device cuda, else 0)")
    audit.add_argument("--quiet", action="store_true", help="no progress or log lines")


def run(args: argparse.Namespace) -> int:
    from ..audit.plan import load_plan, plan_from_dict
    from ..audit.runner import run_audit
    from ..report.writers import write_reports

    progress = not args.quiet
    executor = _executor(args)  # before any work: a missing Ray is exit 2 at once
    model_info: dict = {}
    if args.demo:
        from .demo import demo_inputs

        plan, cache_dir, (model, data, train_data) = demo_inputs(args, _output_dirs)
    elif args.predictions:
        plan, (model, data), model_info = _predictions_inputs(args)
        cache_dir, train_data = _output_dirs(args), None
    else:
        if not args.data:
            raise AssayValueError("--model needs --data SPEC (e.g. mnist:test:1000 or data.npz).")
        plan = load_plan(args.plan) if args.plan else None
        cache_dir = _output_dirs(args)
        model, data, train_data, model_info = _load_model_and_data(args)
        if plan is None:
            plan = plan_from_dict(_default_plan(data), source="<default plan>")
    to_device(model, args.device)
    result = run_audit(model, data, plan, train_data=train_data, cache_dir=cache_dir,
                       progress=progress, model_info=model_info, data_root=args.data_dir,
                       threads=args.threads, executor=executor)
    paths = write_reports(result, args.out)
    for line in _closing_lines(result):
        print(f"assay: {line}", file=sys.stderr)
    print(f"assay: {result.status.upper()} ({_gate_summary(result)}): reports in {args.out}/ "
          f"({', '.join(p.name for p in paths.values())})", file=sys.stderr)
    return result.exit_code


def _executor(args: argparse.Namespace):
    """The executor --executor names, built from the --ray-* flags; those flags without
    --executor ray are refused rather than ignored."""
    from ..audit.executors import EXECUTORS

    ray_flags = [flag for flag, value, default in (
        ("--ray-address", args.ray_address, None), ("--ray-cpus", args.ray_cpus, 1.0),
        ("--ray-gpus", args.ray_gpus, None)) if value != default]
    if args.executor != "ray":
        if ray_flags:
            raise AssayValueError(f"{ray_flags[0]} needs --executor ray.")
        try:
            return EXECUTORS.lookup(args.executor)()
        except AssayValueError as err:
            raise AssayValueError(f"--executor: {err}") from None
    if args.ray_cpus == 0:
        raise AssayValueError("--ray-cpus: give more than 0 CPUs per task, e.g. 1.")
    from ..audit.ray_executor import RayExecutor

    return RayExecutor(args.ray_address, num_cpus=args.ray_cpus, num_gpus=args.ray_gpus)


def _default_plan(data) -> dict[str, Any]:
    """The plan without --plan: :data:`DEFAULT_PLAN` for images; for tabular rows, whose
    perturbations mean nothing, accuracy, calibration and fairness as for predictions."""
    if data.schema is None:
        return DEFAULT_PLAN
    return {"checks": [c for c in PREDICTIONS_PLAN["checks"]
                       if data.attributes or c["name"] != "fairness"]}


def _predictions_inputs(args: argparse.Namespace):
    """The plan, (model, data) and model info of --predictions; refuses flags that describe
    a torch model or its data, and checks that need more than recorded outputs."""
    from ..audit.plan import load_plan, plan_from_dict
    from ..core.model_io import file_sha256
    from ..core.predictions import NEEDS_SCORES, PREDICTION_CHECKS, load_predictions

    for flag, value in (("--data", args.data), ("--train-data", args.train_data),
                        ("--arch", args.arch), ("--target", args.target)):
        if value:
            raise AssayValueError(f"--predictions holds the labels and outputs; drop {flag}.")
    model, data, scores = load_predictions(args.predictions, sensitive=args.sensitive)
    plan = load_plan(args.plan) if args.plan else plan_from_dict(
        {"checks": [c for c in PREDICTIONS_PLAN["checks"]
                    if scores or c["name"] not in NEEDS_SCORES]},
        source="<default predictions plan>")
    where = args.plan or "the plan"
    for spec in plan.checks:
        if spec.name not in PREDICTION_CHECKS:
            raise AssayValueError(f"{where}: check {spec.name!r} needs a torch model; with "
                                  f"--predictions a plan may run {', '.join(PREDICTION_CHECKS)}.")
        if spec.name in NEEDS_SCORES and not scores:
            raise AssayValueError(f"{where}: check {spec.name!r} needs probabilities, but "
                                  f"{args.predictions} has predicted classes only. Fix: add "
                                  "a 'score' column (or score_0..score_K-1), or drop the check.")
    path = args.predictions
    info = {"file": {"path": str(path), "sha256": file_sha256(path), "format": "predictions",
                     "bytes": path.stat().st_size}}
    return plan, (model, data), info


def _output_dirs(args: argparse.Namespace) -> Path | None:
    """Check --out and the cache directory before any work; return the cache directory."""
    from .._paths import ensure_writable_dir

    ensure_writable_dir(args.out, "--out")
    if args.no_cache:
        return None
    if args.cache_dir is None:
        return ensure_writable_dir(args.out / ".cache", "--out (its .cache folder)")
    return ensure_writable_dir(args.cache_dir, "--cache-dir")


def _closing_lines(result) -> list[str]:
    """What a reader of the console must not miss, repeated after the per-check lines:
    failed gates, errors, warnings."""
    lines = [f"FAILED {c.id}: {g.outcome}" for c in result.checks for g in c.failed_gates
             if c.status != "error"]
    lines += [f"ERROR {c.id}: {c.error}" for c in result.checks if c.status == "error"]
    lines += [f"warning: model: {f.message}" for f in result.findings if f.level == "warn"]
    lines += [f"warning: {c.id}: {f.message}" for c in result.checks for f in c.findings
              if f.level == "warn"]
    return lines


def _gate_summary(result) -> str:
    gates = [g for c in result.checks for g in c.gates]
    if not gates:
        return "no gates: nothing was required"
    failed, total = sum(not g.passed for g in gates), len(gates)
    plural = "s" if total > 1 else ""
    text = f"{failed} of {total} gate{plural} failed" if failed else f"{total} gate{plural} passed"
    ungated = [c.id for c in result.checks if not c.gated]
    return text + (f"; no gates on {', '.join(ungated)}" if ungated else "")


def _load_model_and_data(args: argparse.Namespace):
    from ..core.data import load_data

    check_model_options(args)
    data = load_data(args.data, data_root=args.data_dir, **data_options(args))
    train_data = (None if args.train_data is None else
                  load_data_flag("--train-data", args.train_data, args, default_split="train",
                                 schema=data.schema))
    check_model_options(args, data.input_shape)
    model, info = model_from_args(args, data, num_classes=None, range_of=(train_data,))
    return model, data, train_data, info
