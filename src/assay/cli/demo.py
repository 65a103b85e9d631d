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
    from ..demo import adult_demo_model, demo_model, demo_plan

    for flag, value in (("--data", args.data), ("--train-data", args.train_data)):
        if value:
            raise AssayValueError(f"--demo {args.demo} brings its own data; drop {flag} or "
                                  "--demo.")
    plan = load_plan(args.plan) if args.plan else demo_plan(args.demo)
    cache_dir = output_dirs(args)
    if args.demo == "adult":
        from ..core.data import check_data_spec

        for split in ("train", "test"):
            check_data_spec(f"adult:{split}", data_root=args.data_dir)
        return plan, cache_dir, adult_demo_model(data_root=args.data_dir, cache_dir=cache_dir,
                                                 show_progress=not args.quiet)
    return plan, cache_dir, demo_model(show_progress=not args.quiet, cache_dir=cache_dir)
