"""Long checks checkpoint their pieces: a killed audit resumes mid-check, a piece is read
back only for its own task and never trusted unread, and checks fan out through the
executor (issue 12, part 6)."""

import logging
from dataclasses import replace

import pytest
import torch
from torch import nn

from assay.audit.cache import DirectoryCache
from assay.audit.executors import EXECUTORS, LocalExecutor
from assay.audit.plan import plan_from_dict
from assay.audit.runner import run_audit
from assay.checks import Check, CheckOutput, register
from assay.checks import certified, corruptions, robustness
from assay.core.model import ModelWrapper
from assay.core.training import TrainConfig, fit

RADII = [0.2, 0.3, 0.5]  # APGD-CE breaks every point: the later stages cost nothing


def robustness_plan(**params):
    params = {"mode": "standard", "eps": RADII, "n": 6, "diagnostics": False, **params}
    return plan_from_dict({"checks": [{"name": "robustness", "params": params,
                                       "gates": ["clean_accuracy >= 0.5"]}]})


def counting(monkeypatch, module, name, *, interrupt_at=None):
    """Replace ``module.name`` by a wrapper that records its calls' first argument (or eps)
    and raises KeyboardInterrupt at call number ``interrupt_at`` (1-based)."""
    original = getattr(module, name)
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(kwargs.get("eps", args[0] if args else None))
        if len(calls) == interrupt_at:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return calls


@pytest.fixture(scope="module")
def linear_model(digits):
    """A linear digits classifier (test accuracy about 0.9): fast to attack."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    fit(net, digits[0], TrainConfig(epochs=5, lr=1e-2, seed=0), show_progress=False)
    return ModelWrapper(net, num_classes=10, input_shape=(1, 8, 8), name="linear")


def untimed(value):
    """``value`` without the stage reports' seconds, which differ between runs."""
    if isinstance(value, dict):
        return {k: untimed(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [untimed(v) for v in value]
    return value


def same_output(a, b, *, timed=False):
    """The same metrics, findings, plots, galleries and details (but for the attacks'
    timings, unless ``timed``: then they were read back from the same pieces)."""
    assert a.metrics == b.metrics
    assert a.findings == b.findings and a.plots == b.plots and a.galleries == b.galleries
    assert (a.details == b.details) if timed else untimed(a.details) == untimed(b.details)


def test_a_killed_standard_robustness_check_resumes_at_the_next_radius(
        digits, linear_model, tmp_path, monkeypatch):
    _, test = digits
    plan = robustness_plan()
    calls = counting(monkeypatch, robustness, "evaluate_robustness", interrupt_at=2)
    with pytest.raises(KeyboardInterrupt):
        run_audit(linear_model, test, plan, cache_dir=tmp_path, progress=False)
    assert calls == RADII[:2]
    assert not list(tmp_path.glob("*.json"))  # no output: the check did not finish
    (pieces,) = tmp_path.glob("*.pieces")
    assert len(list(pieces.iterdir())) == 1  # the first radius, nothing half-written

    monkeypatch.undo()
    calls = counting(monkeypatch, robustness, "evaluate_robustness")
    (resumed,) = run_audit(linear_model, test, plan, cache_dir=tmp_path, progress=False).checks
    assert calls == RADII[1:]  # exactly the remaining radii
    assert not resumed.cached and resumed.status != "error"
    assert not list(tmp_path.glob("*.pieces"))  # the output made them redundant

    monkeypatch.undo()
    (whole,) = run_audit(linear_model, test, plan, progress=False).checks
    same_output(resumed, whole)
    assert resumed.status == whole.status and resumed.gates == whole.gates


def test_every_piece_read_back_gives_the_same_output(digits, linear_model, tmp_path,
                                                     monkeypatch):
    """With diagnostics and galleries, which read the evaluations' flags and examples."""
    _, test = digits
    plan = robustness_plan(mode="pgd", steps=5, diagnostics=True, eps=[0.0, 0.1])
    cache = DirectoryCache(tmp_path, keep_pieces=True)
    (fresh,) = run_audit(linear_model, test, plan, cache=cache, progress=False).checks
    assert fresh.galleries
    (entry,) = tmp_path.glob("*.json")
    entry.unlink()  # only the pieces are left
    calls = counting(monkeypatch, robustness, "evaluate_robustness")
    (rebuilt,) = run_audit(linear_model, test, plan, cache=cache, progress=False).checks
    assert calls == [] and not rebuilt.cached
    same_output(rebuilt, fresh, timed=True)


def test_pieces_belong_to_their_task(digits, linear_model, tmp_path, monkeypatch):
    """Another seed or other parameters never read the pieces of the first run."""
    _, test = digits
    plan = robustness_plan(mode="pgd", steps=3, eps=[0.1])
    cache = DirectoryCache(tmp_path, keep_pieces=True)
    run_audit(linear_model, test, plan, cache=cache, progress=False)
    calls = counting(monkeypatch, robustness, "evaluate_robustness")
    run_audit(linear_model, test, replace(plan, seed=1), cache=cache, progress=False)
    run_audit(linear_model, test, robustness_plan(mode="pgd", steps=4, eps=[0.1]), cache=cache,
              progress=False)
    assert calls == [0.1, 0.1]
    assert len(list(tmp_path.glob("*.pieces"))) == 3


@pytest.mark.parametrize("damage", ["truncated", "wrong shape", "other piece"])
def test_a_damaged_piece_is_logged_and_recomputed(damage, digits, linear_model, tmp_path,
                                                  monkeypatch, caplog):
    _, test = digits
    plan = robustness_plan(mode="pgd", steps=3, norms=["linf", "l2"],
                           eps={"linf": [0.1, 0.2], "l2": [0.5]})
    cache = DirectoryCache(tmp_path, keep_pieces=True)
    (fresh,) = run_audit(linear_model, test, plan, cache=cache, progress=False).checks
    (entry,) = tmp_path.glob("*.json")
    entry.unlink()
    key = entry.stem
    path = cache._piece_path(key, "linf eps=0.1")
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "wrong shape":
        stored = cache.get_piece(key, "linf eps=0.1")
        cache.put_piece(key, "linf eps=0.1", {**stored, "x_adv": stored["x_adv"][:3]})
    else:  # the file of another piece under this name
        path.write_bytes(cache._piece_path(key, "linf eps=0.2").read_bytes())
    calls = counting(monkeypatch, robustness, "evaluate_robustness")
    with caplog.at_level(logging.WARNING, logger="assay"):
        (again,) = run_audit(linear_model, test, plan, cache=cache, progress=False).checks
    assert calls == [0.1]  # the damaged one only
    assert "linf eps=0.1" in caplog.text and "recomputing" in caplog.text
    same_output(again, fresh)


def test_a_killed_corruptions_check_resumes_at_the_next_corruption(digits, linear_model,
                                                                   tmp_path, monkeypatch):
    _, test = digits
    names = ["gaussian_noise", "contrast", "brightness"]
    plan = plan_from_dict({"checks": [{"name": "corruptions", "params": {
        "corruptions": names, "severities": [1, 3], "n": 32}}]})
    calls = counting(monkeypatch, corruptions, "_corruption_row", interrupt_at=2)
    with pytest.raises(KeyboardInterrupt):
        run_audit(linear_model, test, plan, cache_dir=tmp_path, progress=False)
    monkeypatch.undo()
    calls = counting(monkeypatch, corruptions, "_corruption_row")
    (resumed,) = run_audit(linear_model, test, plan, cache_dir=tmp_path, progress=False).checks
    assert len(calls) == 2 and resumed.status != "error"
    monkeypatch.undo()
    (whole,) = run_audit(linear_model, test, plan, progress=False).checks
    same_output(resumed, whole)


def test_a_killed_certification_resumes_at_the_next_batch_of_points(digits, linear_model,
                                                                    tmp_path, monkeypatch):
    _, test = digits
    params = {"sigma": 0.25, "n0": 10, "n": 100, "n_samples": 6, "radii": [0.0, 0.25]}
    plan = plan_from_dict({"checks": [{"name": "certified_robustness", "params": params}]})
    monkeypatch.setattr(certified, "PIECE_PASSES", 2 * (10 + 100))  # 3 pieces of 2 points
    certify = certified.SmoothedClassifier.certify
    calls = []

    def counted(self, x, **kwargs):
        calls.append(len(x))
        if len(calls) == interrupt_at:
            raise KeyboardInterrupt
        return certify(self, x, **kwargs)

    monkeypatch.setattr(certified.SmoothedClassifier, "certify", counted)
    interrupt_at = 2
    with pytest.raises(KeyboardInterrupt):
        run_audit(linear_model, test, plan, cache_dir=tmp_path, progress=False)
    calls.clear()
    interrupt_at = None
    (resumed,) = run_audit(linear_model, test, plan, cache_dir=tmp_path, progress=False).checks
    assert calls == [2, 2] and resumed.status != "error"
    (whole,) = run_audit(linear_model, test, plan, progress=False).checks
    same_output(resumed, whole)
    assert len(resumed.details["prediction"]) == 6


def test_a_certification_that_fits_one_piece_draws_the_noise_it_always_did(digits,
                                                                           linear_model):
    """One call on every point with the audit's seed, as before pieces."""
    _, test = digits
    params = {"sigma": 0.25, "n0": 10, "n": 100, "n_samples": 6, "radii": [0.0]}
    plan = plan_from_dict({"checks": [{"name": "certified_robustness", "params": params}]})
    (result,) = run_audit(linear_model, test, plan, progress=False).checks
    direct = certified.SmoothedClassifier(linear_model, sigma=0.25, seed=0).certify(
        test.x[:6], n0=10, n=100, alpha=0.001)
    assert result.details["prediction"] == direct.prediction.tolist()


MAPPED: list = []


@register
class FanOutCheck(Check):
    """Squares its items through ctx.map, each square a piece."""

    name = "test_cp_fan_out"
    pillar = "test"
    summary = "fans out"

    def metric_names(self, params):
        return ["total"]

    def run(self, ctx, params):
        def square(i):
            return ctx.piece(f"square {i}", lambda: torch.tensor(float(i * i)))
        values = ctx.map(square, [1, 2, 3])
        return CheckOutput({"total": float(sum(values))}, [], [],
                           {"values": [float(v) for v in values]})


class RecordingExecutor(LocalExecutor):
    def map(self, fn, items):
        items = list(items)
        MAPPED.append(items)
        return super().map(fn, items)


def test_ctx_map_runs_through_the_executor_in_order(digits, linear_model, tmp_path):
    _, test = digits
    plan = plan_from_dict({"checks": [{"name": "test_cp_fan_out"}]})
    MAPPED.clear()
    (result,) = run_audit(linear_model, test, plan, executor=RecordingExecutor(),
                          cache_dir=tmp_path, progress=False).checks
    assert MAPPED == [[1, 2, 3]]
    assert result.details["values"] == [1.0, 4.0, 9.0] and result.metrics["total"] == 14.0
    (by_name,) = run_audit(linear_model, test, plan, executor="local", progress=False).checks
    assert by_name.metrics == result.metrics
    assert EXECUTORS.lookup("local") is LocalExecutor


def test_a_check_without_a_cache_or_executor_just_computes(digits, linear_model):
    from assay.audit.runner import run_check
    from assay.checks import CheckContext

    _, test = digits
    plan = plan_from_dict({"checks": [{"name": "test_cp_fan_out"}]})
    result = run_check(plan.checks[0], CheckContext(model=linear_model, data=test,
                                                    progress=False))
    assert result.metrics["total"] == 14.0
