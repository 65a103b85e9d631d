"""Command line: ``assay audit``, ``assay harden``, ``assay compress`` and ``assay checks``.

Exit codes: 0 every gate passed; 1 a gate failed or a check errored; 2 bad usage or
bad input (one line on stderr says why); 130 interrupted (finished checks are cached).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ._version import __version__
from .errors import AssayValueError

EXIT_OK, EXIT_GATE_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


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
                        help="train the demo CNN on the embedded digits and audit it")
    source.add_argument("--model", type=Path, metavar="PATH",
                        help="TorchScript, torch.export (.pt2), safetensors or state_dict file")
    audit.add_argument("--data", metavar="SPEC",
                       help="NAME[:SPLIT][:N] (digits, mnist, fashion-mnist, cifar10) or an .npz path")
    _model_options(audit)
    audit.add_argument("--plan", type=Path, help="TOML plan (default: accuracy and robustness "
                                                 "with default parameters; the demo has its own)")
    audit.add_argument("--out", type=Path, default=Path("assay-report"),
                       help="output directory (default ./assay-report)")
    audit.add_argument("--cache-dir", type=Path,
                       help="where finished checks are cached (default OUT/.cache)")
    audit.add_argument("--no-cache", action="store_true", help="recompute every check")
    audit.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    audit.add_argument("--quiet", action="store_true", help="no progress or log lines")

    from .hardening_cli import add_compress_parser, add_harden_parser

    add_harden_parser(commands, _model_options)
    add_compress_parser(commands, _model_options)
    commands.add_parser("checks", help="list the registered checks and their parameters",
                        description="List the registered checks with their parameters.")
    return parser


def _model_options(parser: argparse.ArgumentParser) -> None:
    """Options that describe a model file and its data, shared by every command."""
    parser.add_argument("--arch", help="zoo architecture for weight-only files (mlp, small_cnn, "
                                       "lenet, resnet)")
    parser.add_argument("--bounds", nargs=2, type=float, metavar=("LOW", "HIGH"),
                        default=(0.0, 1.0), help="valid input range (default 0 1)")
    parser.add_argument("--mean", type=float, nargs="+", help="per-channel normalisation mean")
    parser.add_argument("--std", type=float, nargs="+", help="per-channel normalisation std")
    parser.add_argument("--data-dir", type=Path, help="data directory (default $ASSAY_DATA_DIR)")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
                        format="assay: %(message)s", stream=sys.stderr)
    try:
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


def _list_checks() -> int:
    from .checks import load_builtin_checks

    for name, cls in sorted(load_builtin_checks().items()):
        print(f"{name}  [{cls.pillar}]  {cls.summary}")
        for param in cls.params:
            allowed = f" one of {list(param.allowed)}" if param.allowed else ""
            print(f"    {param.name} ({param.kind}{allowed}, default {param.default!r}): {param.doc}")
    return EXIT_OK


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
        logging.getLogger("assay").info("training the demo model on digits (seconds)")
        model, data, train_data = demo_model(show_progress=progress)
    else:
        if not args.data:
            raise AssayValueError("--model needs --data SPEC (e.g. mnist:test:1000 or data.npz).")
        plan = load_plan(args.plan) if args.plan else plan_from_dict(
            {"checks": [{"name": "accuracy"}, {"name": "robustness"}]}, source="<default plan>")
        model, data, model_info = _load_model_and_data(args)
    try:
        device = torch.device(args.device)
        model.to(device)
    except (RuntimeError, AssertionError) as err:
        raise AssayValueError(f"--device {args.device!r} is not usable here ({err}).") from err
    cache_dir = None if args.no_cache else (args.cache_dir or args.out / ".cache")
    result = run_audit(model, data, plan, train_data=train_data, cache_dir=cache_dir,
                       progress=progress, model_info=model_info)
    paths = write_reports(result, args.out)
    print(f"assay: {result.status.upper()}: reports in {args.out}/ "
          f"({', '.join(p.name for p in paths.values())})", file=sys.stderr)
    return result.exit_code


def _load_model_and_data(args: argparse.Namespace):
    from .core.data import load_data
    from .core.loading import describe_file, load_network
    from .core.model import ModelWrapper

    data = load_data(args.data, data_root=args.data_dir)
    net, kind = load_network(args.model, arch=args.arch, input_shape=data.input_shape,
                             num_classes=data.num_classes)
    model = ModelWrapper(net, num_classes=None, input_shape=data.input_shape,
                         bounds=tuple(args.bounds), mean=args.mean, std=args.std,
                         name=args.model.name)
    return model, data, {"file": describe_file(args.model)}


if __name__ == "__main__":
    raise SystemExit(main())
