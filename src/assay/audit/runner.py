"""The audit runner: checks the model against the data, runs the plan's checks (from the
cache where possible), evaluates gates and records provenance."""

from __future__ import annotations

import datetime as dt
import logging
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._version import __version__
from ..checks import CheckContext, CheckOutput, Finding, get_check
from ..core.data import Dataset, outside_bounds
from ..core.model import ModelWrapper
from ..core.threads import Threads, check_threads
from ..errors import AssayValueError, AssayWarning
from .cache import CacheStore, DirectoryCache
from .executors import Executor, describe_executor, get_executor
from .plan import CheckSpec, Plan
from .tasks import AuditInputs, Task, TaskOutcome, execute, task_key
from ..results import AuditResult, CheckResult, GateResult, check_status, overall_status

log = logging.getLogger(__name__)


def preflight(model: ModelWrapper, data: Dataset, plan: Plan | None = None, *,
              train_data: Dataset | None = None,
              data_root: str | Path | None = None) -> list[Finding]:
    """Refuse data the model cannot take, and a plan that does not fit them; return
    findings about the pair.

    Raises ``AssayValueError`` for a wrong input shape, outputs that are not [N, K]
    logits, labels beyond the model's class count, or inputs outside the model's bounds;
    with ``plan``, also for parameters that do not fit this model and data (each check's
    ``validate_for``), every problem of the plan in one error.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AssayWarning)  # recorded as findings instead
        model.inspect(data.x)
    if data.num_classes > model.num_classes or int(data.y.max()) >= model.num_classes:
        raise AssayValueError(
            f"The data {data.label} has {data.num_classes} classes (labels up to "
            f"{int(data.y.max())}) but the model outputs {model.num_classes} scores. Fix: pass "
            "the data the model was trained for, or the matching model.")
    for split in (data, train_data):
        if split is None:
            continue
        if split.input_shape != data.input_shape:
            raise AssayValueError(f"The training data {split.label} has input shape "
                                  f"{split.input_shape} but the evaluation data has "
                                  f"{data.input_shape}. Fix: pass the training split of the "
                                  "same data set.")
        if split is train_data and int(split.y.max()) >= model.num_classes:
            raise AssayValueError(
                f"The training data {split.label} has labels up to {int(split.y.max())} but "
                f"the model outputs {model.num_classes} scores. Fix: pass the data the model "
                "was trained on.")
        found = outside_bounds(split.x, model.bounds)
        if found is not None:  # attacks clip to the bounds: every check would be skewed
            low, high = model.bounds
            raise AssayValueError(
                f"The data {split.label} ranges from {found[0]:g} to {found[1]:g}, outside the "
                f"model's input bounds [{low:g}, {high:g}]. Fix: give the bounds of the data's "
                "natural range (--bounds LOW HIGH on the command line, ModelWrapper(bounds=...) "
                "in Python), or scale the data into them.")
    if plan is not None:
        ctx = CheckContext(model=model, data=data, seed=plan.seed, train_data=train_data,
                           progress=False, data_root=data_root, training=plan.training)
        problems = []
        for index, spec in enumerate(plan.checks):
            try:
                found_here = get_check(spec.name).validate_for(ctx, spec.params)
            except AssayValueError as err:
                found_here = [str(err)]
            if found_here:
                problems.append(f"checks[{index}]: check {spec.name!r}: " + "; ".join(found_here))
        if problems:
            raise AssayValueError(f"{plan.source}: the plan does not fit the model and data: "
                                  + "; ".join(problems))
    findings = [Finding("warn", f"model_{f.code}", f.message) for f in model.findings]
    if model.num_classes > data.num_classes:
        findings.append(Finding("info", "class_count",
                                f"The model outputs {model.num_classes} scores; the data has "
                                f"{data.num_classes} classes."))
    return findings


def run_audit(model: ModelWrapper, data: Dataset, plan: Plan, *,
              train_data: Dataset | None = None, cache_dir: str | Path | None = None,
              cache: CacheStore | None = None, executor: Executor | str | None = None,
              progress: bool = True, model_info: dict[str, Any] | None = None,
              data_root: str | Path | None = None, threads: Threads = "auto") -> AuditResult:
    """Run every check of ``plan`` on ``model`` and ``data`` and return the results.

    ``train_data`` is the model's training split (the members for privacy checks, the
    training set for data-side defenses); the report records it, with its hash, under
    ``data["train"]``. The plan's ``[training]`` recipe reaches the checks as
    ``CheckContext.training`` and the report's provenance.

    ``data_root`` is where checks read further data sets (the OOD check's Fashion-MNIST;
    None: ``$ASSAY_DATA_DIR``). Every check's parameters are checked against the model and
    data (:func:`preflight`) before the first check runs.

    ``threads`` is the intra-op thread count of each check: "auto" times the model on one
    thread and on all of them before each check and takes the faster (see
    :mod:`assay.core.threads`: small models beside a busy neighbour ran up to 17x slower on
    two threads), an int fixes it, None leaves torch's setting.

    Finished checks, and the pieces of a check still running (a radius, a corruption, a
    batch of certified points), are cached in ``cache`` (a :class:`CacheStore`) or in the
    directory ``cache_dir`` (a :class:`DirectoryCache`): run the same audit again after an
    interruption and they are read back instead of recomputed. ``executor`` runs the tasks
    (an :class:`Executor`, or the name of one in ``EXECUTORS``; default: in this process).
    A check that raises becomes status "error" with its message; the others still run.
    """
    started = time.perf_counter()
    threads = check_threads(threads, "run_audit")
    if cache is not None and cache_dir is not None:
        raise AssayValueError("run_audit: pass the cache either as cache_dir (a directory) or "
                              "as cache (a CacheStore), not both.")
    findings = preflight(model, data, plan, train_data=train_data, data_root=data_root)
    model.eval()
    if cache_dir is not None:
        cache = DirectoryCache(cache_dir)
    model_hash = model.fingerprint()
    inputs = AuditInputs(model=model, data=data, train_data=train_data, seed=plan.seed,
                         data_root=data_root, training=plan.training, progress=progress)
    tasks = [Task(spec, task_key(spec, inputs, model_hash), threads) for spec in plan.checks]
    runner = get_executor(executor)
    results: list[CheckResult] = []
    # strict: an executor that loses a task must not shrink the audit to a pass
    for task, outcome in zip(tasks, runner.run(tasks, inputs, cache), strict=True):
        results.append(_result(task.spec, outcome))
        log.info("[%d/%d] %s", len(results), len(tasks), console_line(results[-1]))
    checks = tuple(results)
    info = {"sha256": model_hash, **model.describe(), **(model_info or {})}
    return AuditResult(
        assay_version=__version__,
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        status=overall_status(checks), model=info, data=_data_info(data, train_data),
        provenance={**_provenance(plan, started, threads), "executor": describe_executor(runner)},
        checks=checks, findings=tuple(findings))


def _result(spec: CheckSpec, outcome: TaskOutcome) -> CheckResult:
    """The judged result of a task's outcome: gates and status from the current plan."""
    if outcome.output is None:
        return _error_result(spec, outcome.seconds, outcome.error)
    return judge(spec, outcome.output, outcome.seconds, cached=outcome.cached)


def run_check(spec: CheckSpec, ctx: CheckContext) -> CheckResult:
    """Run one check and evaluate its gates; exceptions become status "error"."""
    output, seconds, error = execute(spec, ctx)
    return _error_result(spec, seconds, error) if output is None else judge(spec, output, seconds)


def judge(spec: CheckSpec, output: CheckOutput, seconds: float, *,
          cached: bool = False) -> CheckResult:
    """Evaluate ``spec``'s gates on ``output`` and derive the status: the same verdict
    whether the output was just computed or read from the cache. A gate on a missing,
    None or NaN metric fails. Each metric's info (direction, unit, range) comes from the
    check's current declaration, so the report never reads a stale one from the cache."""
    gates = tuple(GateResult(g.expr, g.metric, g.op, g.threshold, value, g.passes(value))
                  for g in spec.gates for value in [output.metrics.get(g.metric)])
    findings = tuple(output.findings)
    check = get_check(spec.name)
    return CheckResult(spec.id, spec.name, check.pillar,
                       check_status(gates, findings), spec.params, dict(output.metrics), gates,
                       findings, tuple(output.plots), output.details, seconds=seconds,
                       cached=cached, metric_info=check.describe_metrics(output.metrics),
                       galleries=tuple(output.galleries))


def _error_result(spec: CheckSpec, seconds: float, message: str | None) -> CheckResult:
    gates = tuple(GateResult(g.expr, g.metric, g.op, g.threshold, None, False)
                  for g in spec.gates)
    return CheckResult(spec.id, spec.name, get_check(spec.name).pillar, "error", spec.params,
                       {}, gates, seconds=seconds, error=message)


def console_line(check: CheckResult) -> str:
    """One line for a finished check: status, seconds, failed gates or the error."""
    took = (f"from cache ({check.seconds:.1f} s when computed)" if check.cached
            else f"{check.seconds:.1f} s")
    line = f"{check.id}: {check.status.upper()}, {took}"
    if check.error:
        return f"{line}: {check.error}"
    failed = check.failed_gates
    if failed:
        line += "; failed: " + ", ".join(g.outcome for g in failed)
    warned = [f.code for f in check.findings if f.level == "warn"]
    if warned:
        line += "; warnings: " + ", ".join(warned)
    if not check.gated:
        line += "; no gates"
    return line


def _data_info(data: Dataset, train_data: Dataset | None) -> dict[str, Any]:
    """The evaluation data's description, with the training data's (and so its hash)
    under ``train`` when the audit had one."""
    info = data.describe()
    if train_data is not None:
        info["train"] = train_data.describe()
    return info


def _provenance(plan: Plan, started: float, threads: Threads) -> dict[str, Any]:
    training = {} if plan.training is None else {"training": plan.training.describe()}
    return {**training,
        "assay": __version__, "torch": torch.__version__, "numpy": np.__version__,
        "python": sys.version.split()[0], "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        "threads": "torch default" if threads is None else threads,
        "seed": plan.seed, "plan": plan.source,
        "seconds": round(time.perf_counter() - started, 3),
    }
