"""Bad input to the Python API, the attacks and the plans is refused with an
AssayValueError that names the parameter and the fix, before any work (issue: "What broke
when assay was tried as a new user would", items on data, plans and the attack API)."""

import math
import re

import numpy as np
import pytest
import torch
from torch import nn

from assay.attacks.evasion import PGD, Square
from assay.attacks.evasion.evaluation import evaluate_robustness
from assay.audit.plan import plan_from_dict
from assay.audit.runner import preflight, run_audit
from assay.checks import Check, CheckOutput, load_builtin_checks, register
from assay.checks.base import radius_limit
from assay.core.data import Dataset, load_data, parse_spec
from assay.core.model import ModelWrapper
from assay.errors import AssayValueError

RUNS: list[str] = []


@register
class RecordingCheck(Check):
    """Records that it ran: a plan refused before the first check must leave RUNS empty."""

    name = "test_input_validation_recorder"
    pillar = "test"
    summary = "records its runs"

    def metric_names(self, params):
        return ["ran"]

    def run(self, ctx, params):
        RUNS.append(self.name)
        return CheckOutput({"ran": 1.0})


@pytest.fixture
def tiny():
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    return ModelWrapper(net, num_classes=10, input_shape=(1, 8, 8))


@pytest.fixture
def points():
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    return x, torch.arange(6) % 10


# ----------------------------------------------------------------- attacks and evaluation
def test_evaluation_refuses_labels_beyond_the_model_instead_of_reporting_zero(tiny, points):
    x, _ = points
    with pytest.raises(AssayValueError, match=r"labels must lie in 0\.\.9.*from 12 to 12"):
        evaluate_robustness(tiny, x, torch.full((6,), 12), eps=0.1, mode="quick")


@pytest.mark.parametrize("make_y,match", [
    (lambda: torch.zeros(6), "int64 class indices.*y.long"),
    (lambda: torch.full((6,), 10), r"0\.\.9"),
    (lambda: torch.full((6,), -1), "from -1"),
    (lambda: torch.zeros(5, dtype=torch.long), "one label per input"),
])
def test_pgd_refuses_bad_labels(tiny, points, make_y, match):
    with pytest.raises(AssayValueError, match=match):
        PGD(eps=0.1, steps=2)(tiny, points[0], make_y())


def test_targets_are_named_targets(tiny, points):
    with pytest.raises(AssayValueError, match="targets must lie"):
        PGD(eps=0.1, steps=2, targeted=True)(tiny, points[0], torch.full((6,), 11))


@pytest.mark.parametrize("make_x,match", [
    (lambda x: x.flatten(1), r"shape \(64,\).*input shape \(1, 8, 8\)"),
    (lambda x: x.masked_fill(x > 0.9, float("nan")), "NaN or infinite"),
    (lambda x: x * 255, "range from .* outside the model's bounds"),
    (lambda x: (x * 255).to(torch.uint8), "floating-point"),
])
def test_attacks_refuse_bad_inputs(tiny, points, make_x, match):
    x, y = points
    for attack in (PGD(eps=0.1, steps=2), Square(eps=0.1, n_queries=5, seed=0)):
        with pytest.raises(AssayValueError, match=match):
            attack(tiny, make_x(x), y)


def test_a_bare_module_is_asked_for_its_class_count_in_eval_mode(points):
    x, _ = points
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 4), nn.BatchNorm1d(4)).train()
    stats = net[2].running_mean.clone()
    with pytest.raises(AssayValueError, match=r"0\.\.3"):
        PGD(eps=0.1, steps=1)(net, x, torch.full((6,), 4))
    assert net.training and torch.equal(net[2].running_mean, stats)
    assert PGD(eps=0.1, steps=1, seed=0)(net, x, torch.arange(6) % 4).shape == x.shape


# ----------------------------------------------------------------- the data API
@pytest.mark.parametrize("call,match", [
    (lambda d: load_data(None), "'spec' parameter of load_data"),
    (lambda d: load_data(3), "'spec' parameter of load_data"),
    (lambda d: d.subset(-3), "'n' parameter of Dataset.subset"),
    (lambda d: d.subset(0), "'n' parameter of Dataset.subset"),
    (lambda d: d.subset(2.5), "'n' parameter of Dataset.subset"),
    (lambda d: d.split_off(float("nan")), "'fraction' parameter of Dataset.split_off"),
    (lambda d: d.split_off(1.5), "'fraction' parameter of Dataset.split_off"),
    (lambda d: d.split_off("half"), "'fraction' parameter of Dataset.split_off"),
    (lambda d: d.split_off(0.5, seed=-1), "'seed' parameter of Dataset.split_off"),
])
def test_data_api_refuses_bad_arguments(call, match):
    data = Dataset(torch.rand(8, 2), torch.arange(8) % 2, "toy", "test", ("a", "b"))
    with pytest.raises(AssayValueError, match=match):
        call(data)


@pytest.mark.parametrize("spec", ["digits:test:\u00b2", "digits:test:\u0663", "digits:test:1\u00b9",
                                  "digits:test:+3", "digits:test: 3"])
def test_sample_counts_take_ascii_digits_only(spec):
    with pytest.raises(AssayValueError, match="N must be a positive integer"):
        parse_spec(spec)


def test_a_path_object_is_a_spec(tmp_path):
    path = tmp_path / "toy.npz"
    np.savez(path, x=np.zeros((3, 2), dtype=np.float32), y=np.array([0, 1, 0]))
    assert len(load_data(path)) == 3


def test_a_text_file_named_npz_is_not_called_pickled(tmp_path):
    text = tmp_path / "notes.npz"
    text.write_text("x,y\n0.1,1\n")
    with pytest.raises(AssayValueError, match="not an .npz archive.*np.savez") as err:
        load_data(str(text))
    assert "pickle" not in str(err.value)
    single = tmp_path / "single.npz"
    with open(single, "wb") as out:
        np.save(out, np.zeros(3))
    with pytest.raises(AssayValueError, match="single .npy array"):
        load_data(str(single))


def test_npz_without_channel_axis_is_read_as_grayscale_images(tmp_path, caplog):
    path = tmp_path / "gray.npz"
    np.savez(path, x=np.random.default_rng(0).random((5, 8, 8)).astype(np.float32),
             y=np.arange(5) % 2)
    with caplog.at_level("INFO", logger="assay.core.loaders"):
        data = load_data(str(path))
    assert data.x.shape == (5, 1, 8, 8)
    assert "grayscale" in caplog.text
    deep = tmp_path / "deep.npz"
    np.savez(deep, x=np.zeros((2, 1, 1, 8, 8), dtype=np.float32), y=np.array([0, 1]))
    with pytest.raises(AssayValueError, match=r"\[N, D\] rows.*\[N, C, H, W\]"):
        load_data(str(deep))


# ----------------------------------------------------------------- plans at load time
def _plan(*checks):
    return plan_from_dict({"checks": [{"name": "accuracy"}, *checks]}, source="plan.toml")


@pytest.mark.parametrize("entry,match", [
    ({"name": "robustness", "params": {"eps": [0.1, 0.1]}},
     r"check 'robustness': .*'eps' parameter must be .*Got \[0.1, 0.1\] instead: 0.1 is "
     "listed more than once"),
    ({"name": "robustness", "params": {"norms": ["linf", "l2"], "eps": {"linf": [0.1],
                                                                        "l2": [0.5, 0.5]}}},
     "0.5 is listed more than once for 'l2'"),
    ({"name": "robustness", "params": {"norms": ["linf", "linf"]}},
     "check 'robustness': .*'norms' parameter .*'linf' is listed more than once"),
    ({"name": "corruptions", "params": {"severities": [1, 1]}},
     "check 'corruptions': .*'severities' parameter .*: 1 is listed more than once"),
    ({"name": "ood", "params": {"detectors": ["msp", "msp"]}},
     "check 'ood': .*'detectors' parameter .*'msp' is listed more than once"),
    ({"name": "ood", "params": {"ood_sets": ["nonexistent.npz"]}}, "nonexistent.npz: no such file"),
    ({"name": "ood", "params": {"ood_sets": ["svhn:test"]}}, "Unknown data set 'svhn'"),
    ({"name": "corruptions", "params": {"baseline": "nonexistent.pt"}},
     "'baseline' parameter names 'nonexistent.pt', which is not a file"),
    ({"name": "corruptions", "params": {"baseline_arch": "lenet"}}, "without 'baseline'"),
])
def test_plan_problems_are_found_at_load_and_name_the_entry(entry, match):
    with pytest.raises(AssayValueError, match=match) as err:
        _plan(entry)
    assert f"checks[1]: check {entry['name']!r}" in str(err.value)


def test_ood_sets_whose_metric_names_collide_are_refused(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        np.savez(tmp_path / folder / "x.npz", x=np.zeros((2, 2), np.float32), y=np.array([0, 1]))
    sets = [str(tmp_path / "a" / "x.npz"), str(tmp_path / "b" / "x.npz")]
    with pytest.raises(AssayValueError, match="both named 'x.npz' in the metrics"):
        _plan({"name": "ood", "params": {"ood_sets": sets}})


@pytest.mark.parametrize("name", sorted(load_builtin_checks()))
def test_every_list_parameter_refuses_a_repeated_entry(name):
    """One rule for every check: a repeated entry would run twice and be reported once."""
    check = load_builtin_checks()[name]()
    for param in check.params:
        if param.kind.startswith("list") or param.kind == "float-list-or-table":
            if not isinstance(param.default, list) or not param.default:
                continue
            with pytest.raises(AssayValueError, match="more than once"):
                check.resolve_params({param.name: param.default + param.default[:1]})


# ----------------------------------------------------------------- plans against the model
def test_radius_limits_are_the_box_width_and_diameters():
    assert radius_limit("linf", (0.0, 1.0), (1, 8, 8)) == 1.0
    assert radius_limit("l2", (0.0, 1.0), (1, 8, 8)) == pytest.approx(8.0)
    assert radius_limit("l1", (-1.0, 1.0), (4,)) == 8.0


@pytest.mark.parametrize("params,match", [
    ({"eps": [1e308]}, r"linf radius 1e\+308, larger than the input range allows \(1 for"),
    ({"eps": [0.0, 1.5]}, "linf radius 1.5"),
    ({"norms": ["l2"], "eps": [8.5]}, r"l2 radius 8.5.*up to 8\b"),
])
def test_eps_above_the_input_range_is_refused_before_any_check_runs(digits, params, match):
    _, test = digits
    model = ModelWrapper(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), num_classes=10,
                         input_shape=(1, 8, 8))
    plan = plan_from_dict({"checks": [{"name": RecordingCheck.name},
                                      {"name": "robustness", "params": params}]},
                          source="plan.toml")
    RUNS.clear()
    with pytest.raises(AssayValueError, match=match) as err:
        run_audit(model, test, plan, progress=False)
    assert "plan.toml: the plan does not fit" in str(err.value)
    assert "checks[1]: check 'robustness': the 'eps' parameter" in str(err.value)
    assert RUNS == []


def test_radii_up_to_the_limit_are_accepted(digits):
    _, test = digits
    model = ModelWrapper(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval(), num_classes=10,
                         input_shape=(1, 8, 8))
    plan = plan_from_dict({"checks": [{"name": "robustness", "params": {
        "norms": ["linf", "l2"], "eps": {"linf": [1.0], "l2": [math.sqrt(64)]}}}]})
    assert preflight(model, test.subset(20), plan) == []


def test_data_outside_the_bounds_names_the_flag_and_the_range(digits):
    _, test = digits
    model = ModelWrapper(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), num_classes=10,
                         input_shape=(1, 8, 8), bounds=(0.4, 0.6))
    with pytest.raises(AssayValueError, match=r"ranges from 0 to 1, outside the model's input "
                                              r"bounds \[0.4, 0.6\].*--bounds LOW HIGH"):
        run_audit(model, test, _plan(), progress=False)


def test_corruptions_baseline_that_does_not_fit_is_refused_before_work(digits, tmp_path):
    _, test = digits
    model = ModelWrapper(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), num_classes=10,
                         input_shape=(1, 8, 8))
    path = tmp_path / "three.pt"
    torch.jit.save(torch.jit.script(nn.Sequential(nn.Flatten(), nn.Linear(64, 3))), str(path))
    plan = _plan({"name": "corruptions", "params": {"baseline": str(path)}})
    with pytest.raises(AssayValueError, match="checks\\[1\\]: check 'corruptions': the "
                                              "'baseline' parameter: The model returns 3 outputs"):
        preflight(model, test, plan)


# ----------------------------------------------------------------- the command line
@pytest.fixture
def tiny_model_file(tmp_path):
    path = tmp_path / "tiny.pt"
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    torch.jit.save(torch.jit.script(net), str(path))
    return path


@pytest.mark.parametrize("extra,match", [
    (["--data", "digits:test:50", "--bounds", "0.4", "0.6"],
     r"ranges from 0 to 1, outside the model's input bounds \[0.4, 0.6\].*--bounds"),
    (["--data", "digits:test:\u00b2"], "N must be a positive integer"),
])
def test_cli_bad_data_exits_2_with_one_line(tiny_model_file, tmp_path, capsys, extra, match):
    from assay.cli import main

    code = main(["audit", "--model", str(tiny_model_file), "--out", str(tmp_path / "out"),
                 "--quiet", "--no-cache", *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert re.search(match, err), err
