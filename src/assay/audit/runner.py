"""The audit runner: checks the model against the data, runs the plan's checks (from the
cache where possible), evaluates gates and records provenance."""

from __future__ import annotations

import datetime as dt
import logging
import platform
import sys
import time
import traceback
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._version import __version__
from ..checks import CheckContext, Finding, get_check
from ..core.data import Dataset
from ..core.model import ModelWrapper
from ..errors import AssayValueError, AssayWarning
from .cache import ResultCache, cache_key
from .executors import Executor, LocalExecutor
from .plan import CheckSpec, Plan
from .results import AuditResult, CheckResult, GateResult, overall_status

log = logging.getLogger(__name__)


def preflight(model: ModelWrapper, data: Dataset) -> list[Finding]:
    """Refuse data the model cannot take; return findings about the pair.

    Raises ``AssayValueError`` for a wrong input shape, outputs that are not [N, K]
    logits, or labels beyond the model's class count.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AssayWarning)  # recorded as findings instead
        model.inspect(data.x)
    if data.num_classes > model.num_classes or int(data.y.max()) >= model.num_classes:
        raise AssayValueError(
            f"The data {data.label} has {data.num_classes} classes (labels up to "
            f"{int(data.y.max())}) but the model outputs {model.num_classes} scores. Fix: pass "
            "the data the model was trained for, or the matching model.")
    findings = [Finding("warn", f"model_{f.code}", f.message) for f in model.findings]
    if model.num_classes > data.num_classes:
        findings.append(Finding("info", "class_count",
                                f"The model outputs {model.num_classes} scores; the data has "
                                f"{data.num_classes} classes."))
    return findings


def run_audit(model: ModelWrapper, data: Dataset, plan: Plan, *,
              train_data: Dataset | None = None, cache_dir: str | Path | None = None,
              executor: Executor | None = None, progress: bool = True,
              model_info: dict[str, Any] | None = None) -> AuditResult:
    """Run every check of ``plan`` on ``model`` and ``data`` and return the results.

    Finished checks are cached in ``cache_dir`` (when given): run the same audit again
    after an interruption and they are read back instead of recomputed. A check that
    raises becomes status "error" with its message; the others still run.
    """
    started = time.perf_counter()
    findings = preflight(model, data)
    model.eval()
    cache = ResultCache(cache_dir) if cache_dir is not None else None
    model_hash = model.fingerprint()
    ctx = CheckContext(model=model, data=data, seed=plan.seed, train_data=train_data,
                       progress=progress)
    tasks = [_task(spec, ctx, cache, model_hash) for spec in plan.checks]
    results = tuple((executor or LocalExecutor()).map(tasks))
    info = {"sha256": model_hash, **model.describe(), **(model_info or {})}
    return AuditResult(
        assay_version=__version__,
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        status=overall_status(results), model=info, data=data.describe(),
        provenance=_provenance(plan, started), checks=results, findings=tuple(findings))


def _task(spec: CheckSpec, ctx: CheckContext, cache: ResultCache | None, model_hash: str):
    key = cache_key(model=model_hash, data=ctx.data.sha256(),
                    train=None if ctx.train_data is None else ctx.train_data.sha256(),
                    check=spec.name, id=spec.id, params=spec.params, seed=ctx.seed,
                    version=__version__)

    def run() -> CheckResult:
        if cache is not None:
            hit = cache.get(key)
            if hit is not None:
                log.info("check %s: cached result reused", spec.id)
                return replace(hit, cached=True)
        result = run_check(spec, ctx)
        if cache is not None and result.status != "error":
            cache.put(key, result)
        return result

    return run


def run_check(spec: CheckSpec, ctx: CheckContext) -> CheckResult:
    """Run one check and evaluate its gates; exceptions become status "error"."""
    check = get_check(spec.name)
    log.info("check %s: running", spec.id)
    start = time.perf_counter()
    try:
        output = check.run(ctx, spec.params)
    except Exception as err:  # a crashing check must not take the audit down
        seconds = time.perf_counter() - start
        message = f"{type(err).__name__}: {err}"
        log.error("check %s failed: %s\n%s", spec.id, message, traceback.format_exc())
        gates = tuple(GateResult(g.expr, g.metric, g.op, g.threshold, None, False)
                      for g in spec.gates)
        return CheckResult(spec.id, spec.name, check.pillar, "error", spec.params, {}, gates,
                           seconds=seconds, error=message)
    finally:
        ctx.model.eval()
    seconds = time.perf_counter() - start
    gates = tuple(GateResult(g.expr, g.metric, g.op, g.threshold, output.metrics.get(g.metric),
                             g.passes(output.metrics.get(g.metric))) for g in spec.gates)
    if not all(g.passed for g in gates):
        status = "fail"
    elif any(f.level == "warn" for f in output.findings):
        status = "warn"
    else:
        status = "pass"
    return CheckResult(spec.id, spec.name, check.pillar, status, spec.params, output.metrics,
                       gates, tuple(output.findings), tuple(output.plots), output.details,
                       seconds=seconds)


def _provenance(plan: Plan, started: float) -> dict[str, Any]:
    return {
        "assay": __version__, "torch": torch.__version__, "numpy": np.__version__,
        "python": sys.version.split()[0], "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(), "seed": plan.seed, "plan": plan.source,
        "seconds": round(time.perf_counter() - started, 3),
    }
