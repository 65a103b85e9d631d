"""Audit plans: which checks to run, with which parameters, and the gates they must pass.

A plan is TOML::

    seed = 0                      # optional, default 0

    [[checks]]
    name = "robustness"           # a registered check (see `assay checks`)
    id = "robustness-linf"        # optional; needed when one check appears twice
    params = { norms = ["linf"], eps = [0.1, 0.3] }
    gates = ["robust_accuracy@linf=0.3 >= 0.4"]

    [training]                    # optional: the recipe that produced the model, or that
    arch = "small_cnn"            # reference models must follow: a zoo architecture and
    epochs = 15                   # the fields of TrainConfig (epochs, batch_size, lr,
    lr = 3e-3                     # optimizer, weight_decay, seed, schedule)

A gate is ``METRIC OP NUMBER`` with OP one of >=, <=, >, <, and METRIC one of the
metrics the check produces for its parameters. Everything is validated when the plan
is loaded, before any check runs, and all problems are reported at once: keys, types,
allowed values, repeated list entries, gates, and each check's own rules
(``Check.validate_params``: files that must exist, entries that mean the same). What
needs the model and data (an eps above the input range) is checked by the runner's
``preflight`` (``Check.validate_for``), still before the first check runs.
"""

from __future__ import annotations

import math
from fnmatch import fnmatchcase
import operator
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..checks import get_check
from ..core.training import TrainConfig, TrainingRecipe
from ..errors import AssayValueError

OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}
_GATE = re.compile(r"^\s*(?P<metric>[^\s<>]+)\s*(?P<op>>=|<=|>|<)\s*(?P<value>\S+)\s*$")
PLAN_KEYS = ("seed", "checks", "training")
TRAINING_KEYS = ("arch", *(f.name for f in fields(TrainConfig)))
CHECK_KEYS = ("name", "id", "params", "gates")


@dataclass(frozen=True)
class Gate:
    metric: str
    op: str
    threshold: float

    @property
    def expr(self) -> str:
        return f"{self.metric} {self.op} {self.threshold:g}"

    def passes(self, value: float | None) -> bool:
        return value is not None and math.isfinite(value) and OPS[self.op](value, self.threshold)


def names_metric(metrics: list[str], name: str) -> bool:
    """Whether ``name`` is one of a check's ``metrics``, or matches one of its patterns
    (``"selection_rate@sex=*"``: metrics named after values found in the data). A gate on
    a pattern's metric that the run does not produce fails, like any missing metric."""
    return name in metrics or any("*" in m and fnmatchcase(name, m) for m in metrics)


def parse_gate(text: str) -> Gate:
    match = _GATE.match(text) if isinstance(text, str) else None
    if not match:
        raise AssayValueError(f"gate {text!r} must look like 'METRIC OP NUMBER' with OP one of "
                              f"{list(OPS)}, e.g. 'accuracy >= 0.9'")
    try:
        threshold = float(match["value"])
    except ValueError:
        raise AssayValueError(f"gate {text!r}: {match['value']!r} is not a number") from None
    if not math.isfinite(threshold):
        raise AssayValueError(f"gate {text!r}: the threshold must be finite")
    return Gate(match["metric"], match["op"], threshold)


@dataclass(frozen=True)
class CheckSpec:
    id: str
    name: str
    params: dict[str, Any]
    gates: tuple[Gate, ...] = ()


@dataclass(frozen=True)
class Plan:
    checks: tuple[CheckSpec, ...]
    seed: int = 0
    source: str = "<built-in>"
    raw: dict[str, Any] = field(default_factory=dict, compare=False)
    training: TrainingRecipe | None = None


def load_plan(path: str | Path) -> Plan:
    """Read and validate a TOML plan file."""
    path = Path(path)
    if not path.is_file():
        raise AssayValueError(f"{path}: no such plan file.")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise AssayValueError(f"{path}: not valid TOML ({err}).") from err
    return plan_from_dict(raw, source=str(path))


def plan_from_dict(raw: dict[str, Any], *, source: str = "<dict>") -> Plan:
    """Validate a plan given as a dict (the parsed TOML); raise one error listing every problem."""
    problems: list[str] = []
    for key in raw:
        if key not in PLAN_KEYS:
            problems.append(f"unknown top-level key {key!r}; allowed: {list(PLAN_KEYS)}")
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        problems.append(f"'seed' must be an int >= 0; got {seed!r}")
    entries = raw.get("checks")
    if not isinstance(entries, list) or not entries:
        problems.append("'checks' must be a non-empty array of tables ([[checks]] entries)")
        entries = []
    specs, seen = [], set()
    for index, entry in enumerate(entries):
        where = f"checks[{index}]"
        try:
            spec = _check_spec(entry, where)
        except AssayValueError as err:
            problems.append(str(err))
            continue
        if spec.id in seen:
            problems.append(f"{where}: id {spec.id!r} is used twice; give each entry a distinct "
                            "'id'")
        seen.add(spec.id)
        specs.append(spec)
    training = _training(raw["training"], problems) if "training" in raw else None
    if problems:
        raise AssayValueError(f"{source}: invalid plan: " + "; ".join(problems))
    return Plan(tuple(specs), seed=seed, source=source, raw=raw, training=training)


def _training(table: Any, problems: list[str]) -> TrainingRecipe | None:
    """The ``[training]`` table as a recipe; each problem (unknown key, architecture, a
    field TrainConfig refuses) is added to ``problems`` naming its field."""
    from ..core.zoo import ARCHITECTURES

    if not isinstance(table, dict):
        problems.append(f"'training' must be a table ([training]) with keys {list(TRAINING_KEYS)}; "
                        f"got {table!r}")
        return None
    found = len(problems)
    problems += [f"[training]: unknown key {key!r}; allowed: {list(TRAINING_KEYS)}"
                 for key in table if key not in TRAINING_KEYS]
    arch = table.get("arch")
    if arch not in ARCHITECTURES:
        problems.append(f"[training]: 'arch' must be one of {sorted(ARCHITECTURES)} (the zoo "
                        f"architecture of the recipe); got {arch!r}")
    settings = {key: value for key, value in table.items() if key in TRAINING_KEYS[1:]}
    for key, value in settings.items():
        try:  # one field at a time, so that every bad field is reported
            TrainConfig(**{key: value})
        except AssayValueError as err:
            problems.append(f"[training]: {err}")
    if len(problems) > found:
        return None
    return TrainingRecipe(str(arch), TrainConfig(**settings))


def _check_spec(entry: Any, where: str) -> CheckSpec:
    if not isinstance(entry, dict):
        raise AssayValueError(f"{where} must be a table")
    unknown = [key for key in entry if key not in CHECK_KEYS]
    if unknown:
        raise AssayValueError(f"{where}: unknown key(s) {unknown}; allowed: {list(CHECK_KEYS)}")
    name = entry.get("name")
    if not isinstance(name, str):
        raise AssayValueError(f"{where}: 'name' is required and must be a string")
    check = get_check(name)  # raises for an unknown check, listing the known ones
    params = entry.get("params", {})
    if not isinstance(params, dict):
        raise AssayValueError(f"{where}: 'params' must be a table")
    resolved = check.resolve_params(params, where=f"{where}: ")
    gates_raw = entry.get("gates", [])
    if not isinstance(gates_raw, list):
        raise AssayValueError(f"{where}: 'gates' must be a list of strings")
    gates = []
    metrics = check.metric_names(resolved)
    for text in gates_raw:
        try:
            gate = parse_gate(text)
        except AssayValueError as err:
            raise AssayValueError(f"{where}: {err}") from None
        if not names_metric(metrics, gate.metric):
            raise AssayValueError(f"{where}: gate {text!r} names unknown metric "
                                  f"{gate.metric!r}; check {name!r} with these params "
                                  f"produces {metrics}")
        gates.append(gate)
    check_id = entry.get("id", name)
    if not isinstance(check_id, str) or not check_id:
        raise AssayValueError(f"{where}: 'id' must be a non-empty string")
    return CheckSpec(check_id, name, resolved, tuple(gates))
