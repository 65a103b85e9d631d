"""Attribute inference (issue 14): the attack recovers an attribute the label depends on,
gets no further than the majority value on one the model ignores, is compared with the
imputation baseline and on non-members, and the check refuses what it cannot measure."""

import numpy as np
import pytest
import torch

from assay.attacks.privacy import (AttributeInference, ImputationBaseline, attribute_column,
                                   value_prior)
from assay.audit.plan import plan_from_dict
from assay.audit.runner import run_audit
from assay.core import zoo
from assay.core.data import load_data
from assay.core.model import ModelWrapper
from assay.core.threads import using_threads
from assay.core.training import TrainConfig, fit
from assay.errors import AssayValueError


def _csv(path, n, seed):
    """Rows whose label is ``(x > 0) XOR (sex == 'm')``; ``color`` is noise the label
    ignores (a 60/40 value split, so the majority guess is 0.6); ``region`` is sensitive
    but not a feature of the model."""
    gen = np.random.default_rng(seed)
    lines = ["x,z,sex,color,region,y"]
    for _ in range(n):
        x, z = gen.normal(), gen.normal()
        sex = "fm"[int(gen.integers(0, 2))]
        color = "blue" if gen.random() < 0.6 else "red"
        region = "ns"[int(gen.integers(0, 2))]
        lines.append(f"{x:.4f},{z:.4f},{sex},{color},{region},{int((x > 0) != (sex == 'm'))}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def tabular(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rows")
    train = load_data(str(_csv(folder / "train.csv", 400, 0)), target="y",
                      sensitive=["sex", "color", "region"])
    # region is sensitive, not an input: the schema is the train split's, minus region
    schema = train.schema
    features = tuple(c for c in schema.features if c.name != "region")
    schema = type(schema)(features, schema.target, schema.classes, schema.sensitive)
    train = load_data(str(folder / "train.csv"), schema=schema,
                      sensitive=["sex", "color", "region"])
    test = load_data(str(_csv(folder / "test.csv", 400, 1)), schema=schema,
                     sensitive=["sex", "color", "region"])
    net = zoo.build("mlp", input_shape=train.input_shape, num_classes=2, seed=0, schema=schema)
    with using_threads(1):  # small operators: more threads only spin on a shared CPU
        fit(net, train, TrainConfig(epochs=30, lr=3e-3, seed=0), show_progress=False)
    low = float(torch.cat([train.x, test.x]).min())
    high = float(torch.cat([train.x, test.x]).max())
    model = ModelWrapper(net, num_classes=2, input_shape=train.input_shape,
                         bounds=(low, high), name="rows mlp")
    return model, train, test


def _run(model, data, train, params=None, gates=()):
    plan = plan_from_dict({"checks": [{"name": "attribute_inference", "params": params or {},
                                       "gates": list(gates)}]}, source="test")
    (check,) = run_audit(model, data, plan, train_data=train, progress=False, threads=1).checks
    assert check.status != "error", check
    return check


def test_the_attack_recovers_an_attribute_the_label_depends_on(tabular):
    model, train, test = tabular
    column = attribute_column(train.schema, "sex", test)
    prior = value_prior(test.attributes["sex"], 2)
    guess = AttributeInference()(model, train.x, train.y, column, prior)
    assert float((guess == train.attributes["sex"]).double().mean()) > 0.9


def test_an_attribute_the_model_ignores_gets_the_majority_and_the_baseline(tabular):
    model, train, test = tabular
    check = _run(model, test, train)  # default: every sensitive input (region is none)
    m = check.metrics
    assert {k.split("@")[1] for k in m if "@" in k} == {"sex", "color"}
    assert m["majority_accuracy@color"] == pytest.approx(
        float((train.attributes["color"] == 0).double().mean()))
    assert abs(m["attack_accuracy@color"] - m["majority_accuracy@color"]) < 0.08
    assert abs(m["attack_accuracy@color"] - m["baseline_accuracy@color"]) < 0.08
    # sex: the label is a function of it, so the attack and the imputer (which sees the
    # label and x) both recover it
    assert m["attack_accuracy@sex"] > 0.9 and m["attack_accuracy_nonmembers@sex"] > 0.85
    assert m["baseline_accuracy@sex"] > 0.8
    assert m["advantage@sex"] == pytest.approx(
        m["attack_accuracy@sex"] - m["attack_accuracy_nonmembers@sex"])
    assert m["members"] == 400 and m["nonmembers"] == 200 and m["public"] == 200


def test_a_model_that_ignores_its_input_gives_exactly_the_majority(tabular):
    _, train, test = tabular

    class Constant(torch.nn.Module):
        def forward(self, x):
            return torch.zeros(len(x), 2)

    model = ModelWrapper(Constant(), num_classes=2, input_shape=train.input_shape,
                         bounds=(-10.0, 10.0))
    column = attribute_column(train.schema, "sex", test)
    prior = torch.tensor([0.3, 0.7])
    for use_prior in (True, False):
        guess = AttributeInference(prior=use_prior)(model, train.x, train.y, column, prior)
        assert guess.tolist() == [1] * len(train)  # ties go to the likelier value


def test_the_imputation_baseline_uses_the_other_features_and_the_label(tabular):
    _, train, test = tabular
    column = attribute_column(train.schema, "sex", test)
    with using_threads(1):
        imputed = ImputationBaseline(epochs=30, seed=0)(
            train.schema, column, (test.x, test.y, test.attributes["sex"]), (train.x, train.y))
    # sex = (x > 0) XOR y: recoverable from x and the label without the model
    assert float((imputed == train.attributes["sex"]).double().mean()) > 0.85


def test_the_check_reports_a_plot_and_resumes_from_its_baseline_pieces(tabular, tmp_path,
                                                                       monkeypatch):
    model, train, test = tabular
    plan = plan_from_dict({"checks": [{"name": "attribute_inference",
                                       "params": {"attributes": ["sex", "color"]},
                                       "gates": ["gain_over_baseline@sex <= 0.5"]}]})
    calls, original = [], ImputationBaseline.__call__

    def counted(self, *args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed while imputing the second attribute
        return original(self, *args)

    monkeypatch.setattr(ImputationBaseline, "__call__", counted)
    with pytest.raises(KeyboardInterrupt):
        run_audit(model, test, plan, train_data=train, progress=False, threads=1,
                  cache_dir=tmp_path)
    calls.clear()
    monkeypatch.setattr(ImputationBaseline, "__call__",
                        lambda self, *a: (calls.append(1), original(self, *a))[1])
    resumed = run_audit(model, test, plan, train_data=train, progress=False, threads=1,
                        cache_dir=tmp_path).checks[0]
    assert len(calls) == 1  # sex's baseline was read back
    assert [g.passed for g in resumed.gates] == [True]
    (plot,) = resumed.plots
    assert plot.x == ["sex", "color"] and plot.kind == "bar"
    assert resumed.metric_info["attack_accuracy@sex"].direction == "lower"
    fresh = _run(model, test, train, {"attributes": ["sex", "color"]})
    assert fresh.metrics == resumed.metrics  # seeded: the same numbers


@pytest.mark.parametrize("params, match", [
    ({"attributes": ["region"]}, "not an input feature"),
    ({"attributes": ["age"]}, "not a sensitive attribute"),
])
def test_attributes_that_cannot_be_inferred_are_refused(tabular, params, match):
    model, train, test = tabular
    with pytest.raises(AssayValueError, match=match):
        _run(model, test, train, params)


def test_missing_members_image_data_and_shared_rows_are_refused(tabular, digits):
    model, train, test = tabular
    with pytest.raises(AssayValueError, match="--train-data"):
        run_audit(model, test, plan_from_dict({"checks": [{"name": "attribute_inference"}]}),
                  progress=False)
    with pytest.raises(AssayValueError, match="also among the members"):
        _run(model, train, train)
    digits_train, digits_test = digits
    images = ModelWrapper(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)),
                          num_classes=10, input_shape=(1, 8, 8))
    with pytest.raises(AssayValueError, match="no tabular schema"):
        _run(images, digits_test, digits_train)
    with pytest.raises(AssayValueError, match="'prior' parameter"):
        AttributeInference(prior="yes")
