"""``assay audit --demo``: the demo model, its data and plan (the library part is
:mod:`assay.demo`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from ..errors import AssayValueError


def demo_inputs(args: argparse.Namespace, output_dirs: Callable[[argparse.Namespace], Path | None]):
    """The plan (--plan or the demo's), the checked cache directory, and the demo's
    (model, test split, train split); refuses data flags the demo brings itself."""
    from ..audit.plan import load_plan
    from ..demo import demo_model, demo_plan

    for flag, value in (("--data", args.data), ("--train-data", args.train_data)):
        if value:
            raise AssayValueError(f"--demo uses the embedded digits; drop {flag} or --demo.")
    plan = load_plan(args.plan) if args.plan else demo_plan()
    cache_dir = output_dirs(args)
    return plan, cache_dir, demo_model(show_progress=not args.quiet, cache_dir=cache_dir)
