"""``assay checks``: the registered checks (built-in and other packages' plug-ins, each
plug-in marked with where it came from), their parameters and the metrics a gate can
name."""

from __future__ import annotations

import argparse
import re

EXIT_OK = 0


def add_parser(commands) -> None:
    commands.add_parser("checks", help="list the registered checks and their parameters",
                        description="List the registered checks with their parameters, "
                                    "plug-in checks of other packages (entry-point group "
                                    "'assay.checks') included.")


def run(args: argparse.Namespace) -> int:
    from ..checks import CHECKS

    for name, cls in sorted(CHECKS.items()):
        check = cls()
        origin = CHECKS.origin(name)
        source = "" if origin == "assay" else f"  (from plugin {origin})"
        print(f"{name}  [{cls.pillar}]  {cls.summary}{source}")
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
