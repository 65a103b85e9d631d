"""Command line: ``assay audit``, ``assay harden``, ``assay compress`` and ``assay checks``.

Exit codes: 0 every gate passed; 1 a gate failed or a check errored; 2 bad usage or
bad input (one line on stderr says why); 130 interrupted (finished checks are cached).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._version import __version__
from .errors import AssayValueError, AssayWarning

EXIT_OK, EXIT_GATE_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130

# The plan of `assay audit --model` without --plan. Its gates catch a useless model on
# any data (half of the majority-class guess's errors avoided) and one that any
# perturbation of a tenth of the [0, 1] input range breaks (the embedded digits' CNN:
# 0.53 at eps 0.1, 0 at 0.3).
DEFAULT_PLAN: dict[str, Any] = {"checks": [
    {"name": "accuracy", "gates": ["gain_over_chance >= 0.5"]},
    {"name": "robustness", "gates": ["robust_accuracy@linf=0.1 >= 0.3"]},
]}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="assay", description="Audit a PyTorch classifier: attack it, measure it, report it.")
    parser.add_argument("--version", action="version", version=f"assay {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    audit = commands.add_parser(
        "audit", help="run an audit plan and write the reports",
        description="Run the plan's checks on a model and data; write report.html, "
                    "report.json, junit.xml and summary.md. Exit 0 when every gate passes, "
                    "1 when one fails, 2 on bad input.")
    source = audit.add_mutually_exclusive_group(required=True)
    source.add_argument("--demo", action="store_true",
                        help="train the demo CNN on the embedded digits (or read its weights "
                             "from the cache) and audit it")
    source.add_argument("--model", type=Path, metavar="PATH",
                        help="TorchScript, torch.export (.pt2), safetensors or state_dict file")
    audit.add_argument("--data", metavar="SPEC",
                       help="NAME[:SPLIT][:N] (digits, mnist, fashion-mnist, cifar10) or an .npz path")
    _model_options(audit)
    accuracy_gate, robustness_gate = (c["gates"][0] for c in DEFAULT_PLAN["checks"])
    audit.add_argument(
        "--plan", type=Path,
        help="TOML plan; `assay checks` lists the checks, their parameters and the metrics a "
             f"gate can name. Default: accuracy, gated by '{accuracy_gate}' (the model avoids "
             "at least half the errors of always answering the most frequent class), and "
             "robustness (PGD-20, L-inf eps 0, 0.1, 0.3 in input units), gated by "
             f"'{robustness_gate}' (at least 30%% of the inputs keep their class under every "
             "perturbation of 0.1, a tenth of the [0, 1] range; a normally trained CNN on "
             "the embedded digits scores 0.53 there). The demo has its own plan.")
    audit.add_argument("--out", type=Path, default=Path("assay-report"),
                       help="output directory (default ./assay-report)")
    audit.add_argument("--cache-dir", type=Path,
                       help="where finished checks are cached (default OUT/.cache)")
    audit.add_argument("--no-cache", action="store_true", help="recompute every check")
    audit.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    audit.add_argument("--threads", type=_threads, default="auto", metavar="N|auto",
                       help="CPU threads per check (default auto: before each check, the "
                            "model is timed on one thread and on all of them and the faster "
                            "is taken, so a busy neighbour on a shared machine does not slow "
                            "small models many times over; results agree at float rounding, "
                            "pass N for runs that must agree bit for bit)")
    audit.add_argument("--quiet", action="store_true", help="no progress or log lines")

    from .hardening_cli import add_compress_parser, add_harden_parser

    add_harden_parser(commands, _model_options)
    add_compress_parser(commands, _model_options)
    commands.add_parser("checks", help="list the registered checks and their parameters",
                        description="List the registered checks with their parameters.")
    return parser


def _threads(text: str) -> int | str:
    if text == "auto":
        return text
    if text.isascii() and text.isdigit() and int(text) > 0:
        return int(text)
    raise argparse.ArgumentTypeError(f"{text!r}: give a positive number of threads or 'auto'")


def _model_options(parser: argparse.ArgumentParser) -> None:
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
    import math

    from .core.zoo import ARCHITECTURES

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


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
                        format="assay: %(message)s", stream=sys.stderr)
    try:
        with _console(quiet=getattr(args, "quiet", False)):
            if args.command == "checks":
                return _list_checks()
            if args.command in ("harden", "compress"):
                from .hardening_cli import run_command

                return run_command(args)
            return _audit(args)
    except AssayValueError as err:
        print(f"assay: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("assay: interrupted; finished checks are cached, run the same command to resume",
              file=sys.stderr)
        return EXIT_INTERRUPTED


@contextlib.contextmanager
def _console(*, quiet: bool) -> Iterator[None]:
    """Log level of assay's own lines; under --quiet also silence other libraries'
    warnings and log lines (torch's, matplotlib's), keeping assay's warnings. Restored
    on exit, so calling main() leaves the process as it was."""
    names = ("assay", "matplotlib", "torch") if quiet else ("assay",)
    if quiet:
        import torch  # noqa: F401  (torch sets its loggers' levels on import: set ours after)
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.INFO if not quiet else
                        logging.WARNING if logger.name == "assay" else logging.ERROR)
    with warnings.catch_warnings():
        if quiet:
            warnings.simplefilter("ignore")
            warnings.simplefilter("default", AssayWarning)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


def _list_checks() -> int:
    from .checks import load_builtin_checks

    for name, cls in sorted(load_builtin_checks().items()):
        check = cls()
        print(f"{name}  [{cls.pillar}]  {cls.summary}")
        for param in cls.params:
            print(f"    {param.name} ({_param_text(param)}): {param.doc}")
        names = check.metric_names(check.resolve_params({}))
        templates = _metric_templates(names, check)
        print(f"    metrics: {', '.join(dict.fromkeys(templates.values()))}")
        examples = [n for n, t in templates.items() if "<" in t][:3]
        if examples:
            print("      (<param>: one name per value of that parameter; with the defaults "
                  f"e.g. {', '.join(examples)})")
    return EXIT_OK


def _param_text(param) -> str:
    """Kind, allowed values and default, each list shown once."""
    allowed = list(param.allowed) if param.allowed else None
    text = param.kind
    if allowed:
        text += f" {'keys ' if param.kind == 'float-list-or-table' else ''}one of {allowed}"
    default = param.default
    if allowed and param.kind.startswith("list[") and isinstance(default, list):
        left_out = [a for a in allowed if a not in default]
        if not left_out:
            return f"{text}, default: all"
        if len(left_out) < len(default):
            return f"{text}, default: all but {left_out}"
    return f"{text}, default {default!r}"


def _metric_templates(names: list[str], check) -> dict[str, str]:
    """Each metric name -> the name with each part that comes from a parameter's value
    replaced by <param> (robust_accuracy@linf=0.1 -> robust_accuracy@<norms>=<eps>)."""
    values: dict[str, str] = {}
    for param in check.params:
        default = param.default
        items = (list(default) + sum(default.values(), []) if isinstance(default, dict)
                 else default if isinstance(default, list) else [])
        for item in items:
            values.setdefault(f"{item:g}" if isinstance(item, float) else str(item), param.name)
    templates = {}
    for name in names:
        head, at, tail = name.partition("@")
        if at and tail in values:
            tail = f"<{values[tail]}>"
        elif at:
            tail = "".join(f"<{values[t]}>" if t in values else t
                           for t in re.split(r"([=:,])", tail))
        templates[name] = head + at + tail
    return templates


def _audit(args: argparse.Namespace) -> int:
    import torch

    from .audit.plan import load_plan, plan_from_dict
    from .audit.runner import run_audit
    from .report.writers import write_reports

    progress = not args.quiet
    model_info: dict = {}
    train_data = None
    if args.demo:
        from .demo import demo_model, demo_plan

        if args.data:
            raise AssayValueError("--demo uses the embedded digits; drop --data or --demo.")
        plan = load_plan(args.plan) if args.plan else demo_plan()
        cache_dir = _output_dirs(args)
        model, data, train_data = demo_model(show_progress=progress, cache_dir=cache_dir)
    else:
        if not args.data:
            raise AssayValueError("--model needs --data SPEC (e.g. mnist:test:1000 or data.npz).")
        plan = load_plan(args.plan) if args.plan else plan_from_dict(
            DEFAULT_PLAN, source="<default plan>")
        cache_dir = _output_dirs(args)
        model, data, model_info = _load_model_and_data(args)
    try:
        device = torch.device(args.device)
        model.to(device)
    except (RuntimeError, AssertionError) as err:
        raise AssayValueError(f"--device {args.device!r} is not usable here ({err}).") from err
    result = run_audit(model, data, plan, train_data=train_data, cache_dir=cache_dir,
                       progress=progress, model_info=model_info, data_root=args.data_dir,
                       threads=args.threads)
    paths = write_reports(result, args.out)
    for line in _closing_lines(result):
        print(f"assay: {line}", file=sys.stderr)
    print(f"assay: {result.status.upper()} ({_gate_summary(result)}): reports in {args.out}/ "
          f"({', '.join(p.name for p in paths.values())})", file=sys.stderr)
    return result.exit_code


def _output_dirs(args: argparse.Namespace) -> Path | None:
    """Check --out and the cache directory before any work; return the cache directory."""
    from ._paths import ensure_writable_dir

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
    from .core.data import load_data
    from .core.loading import describe_file, load_network
    from .core.model import ModelWrapper

    check_model_options(args)
    data = load_data(args.data, data_root=args.data_dir)
    check_model_options(args, data.input_shape)
    net, kind = load_network(args.model, arch=args.arch, input_shape=data.input_shape,
                             num_classes=data.num_classes)
    model = ModelWrapper(net, num_classes=None, input_shape=data.input_shape,
                         bounds=tuple(args.bounds), mean=args.mean, std=args.std,
                         name=args.model.name)
    return model, data, {"file": describe_file(args.model)}


if __name__ == "__main__":
    raise SystemExit(main())
