"""Command line: ``assay audit``, ``assay harden``, ``assay compress``, ``assay attack`` and
``assay checks``.

Exit codes: 0 every gate passed; 1 a gate failed or a check errored; 2 bad usage or
bad input (one line on stderr says why); 130 interrupted (finished checks are cached).
Each command's parser and work live in its own module; this one assembles them.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import warnings
from collections.abc import Iterator

from .._version import __version__
from ..errors import AssayValueError, AssayWarning
from . import attack, audit, checks, harden

EXIT_OK, EXIT_GATE_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="assay", description="Audit a PyTorch classifier: attack it, measure it, report it.")
    parser.add_argument("--version", action="version", version=f"assay {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    audit.add_parser(commands)
    harden.add_harden_parser(commands)
    harden.add_compress_parser(commands)
    attack.add_parser(commands)
    checks.add_parser(commands)
    return parser


COMMANDS = {"audit": audit.run, "harden": harden.run, "compress": harden.run,
            "attack": attack.run, "checks": checks.run}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
                        format="assay: %(message)s", stream=sys.stderr)
    try:
        with _console(quiet=getattr(args, "quiet", False)):
            return COMMANDS[args.command](args)
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
        formatwarning = warnings.formatwarning
        warnings.formatwarning = _format_warning(formatwarning)
        try:
            yield
        finally:
            warnings.formatwarning = formatwarning
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def _format_warning(default):
    """assay's own warnings as one line, like its errors; other libraries' as they were."""
    def format_warning(message, category, filename, lineno, line=None):
        if issubclass(category, AssayWarning):
            return f"assay: warning: {message}\n"
        return default(message, category, filename, lineno, line)
    return format_warning


if __name__ == "__main__":
    raise SystemExit(main())
