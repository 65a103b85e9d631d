"""The ``backdoor_scan`` check: a gate on the trojan probability fails on a trojaned
model and passes on a clean one trained by the same recipe."""

import json

import pytest
import torch

from assay.attacks.poisoning import BadNets
from assay.audit.plan import plan_from_dict
from assay.audit.runner import run_audit
from assay.cli import main
from assay.core import zoo
from assay.core.loaders import load_digits
from assay.core.model import ModelWrapper
from assay.core.model_io import save_network
from assay.core.threads import using_threads
from assay.core.training import TrainConfig, fit
from assay.errors import AssayValueError

# On 8x8 digits the trojaned model's anomaly index is 3.9 and its margin p-value 0; the
# clean model's are 1.9 and 0.0013 (the margin scan alone flags it; the logistic of both
# does not).
PLAN = {"checks": [{"name": "backdoor_scan", "params": {"steps": 300},
                    "gates": ["trojan_probability <= 0.5"]}]}


@pytest.fixture(scope="module")
def models():
    train = load_digits("train")
    out = {}
    for name, data in (("trojaned", BadNets(target=3, rate=0.1).poison(train).data),
                       ("clean", train)):
        net = zoo.build("small_cnn", input_shape=(1, 8, 8), num_classes=10, seed=0)
        with using_threads(1):
            fit(net, data, TrainConfig(epochs=15, batch_size=64, lr=3e-3), show_progress=False)
        out[name] = net.eval()
    return out


def test_the_gate_fails_on_a_trojaned_model_and_passes_on_a_clean_one(models):
    test = load_digits("test")
    results = {}
    for name, net in models.items():
        model = ModelWrapper(net, num_classes=10, input_shape=(1, 8, 8))
        plan = plan_from_dict(PLAN, source="test")
        results[name] = run_audit(model, test, plan, cache_dir=None, progress=False).checks[0]
    trojaned, clean = results["trojaned"], results["clean"]
    assert trojaned.status == "fail" and trojaned.metrics["suspected_target"] == 3.0
    assert trojaned.metrics["trojan_probability"] > 0.5
    assert any(f.code == "trojan_suspected" for f in trojaned.findings)
    # the clean model passes the gate; the margin scan alone flags it (p 0.0013), which
    # the check says in a warning rather than passing it in silence
    assert not clean.failed_gates and clean.metrics["suspected_target"] == -1.0
    # and that the shipped logistic was fitted to MNIST models, not to digits like these
    assert clean.status == "warn" and [f.code for f in clean.findings] == [
        "scanner_flag", "calibration_unvalidated"]
    assert "calibration_unvalidated" not in [f.code for f in trojaned.findings]
    assert clean.findings[0].message.startswith("The margin scan flags class 2, but")
    assert len(trojaned.galleries[0].images) == 10
    assert trojaned.metrics["mask_l1@3"] < 0.5 * trojaned.metrics["mask_l1@0"]
    assert trojaned.metrics["margin_p_value"] < 1e-3
    margins = {k: v for k, v in trojaned.metrics.items() if k.startswith("max_margin@")}
    assert max(margins, key=margins.get) == "max_margin@3" and len(margins) == 10
    assert clean.metrics["trojan_probability"] < 0.5 and len(trojaned.plots) == 2


def test_the_cli_scans_a_model_file(models, tmp_path):
    path = save_network(models["trojaned"], tmp_path / "vendor.safetensors")
    plan = tmp_path / "plan.toml"
    plan.write_text('[[checks]]\nname = "backdoor_scan"\n'
                    'params = { steps = 300 }\n'
                    'gates = ["trojan_probability <= 0.5"]\n')
    out = tmp_path / "report"
    code = main(["audit", "--model", str(path), "--arch", "small_cnn", "--data", "digits:test",
                 "--plan", str(plan), "--out", str(out), "--quiet"])
    assert code == 1
    report = json.loads((out / "report.json").read_text())
    assert report["checks"][0]["metrics"]["suspected_target"] == 3


def test_tabular_data_and_two_classes_are_refused_before_work(models):
    from torch import nn

    from assay.core.dataset import Dataset
    import torch

    rows = Dataset(torch.rand(40, 4), torch.arange(40) % 2, "t", "test", ("a", "b"))
    model = ModelWrapper(nn.Linear(4, 2), num_classes=2, input_shape=(4,))
    with pytest.raises(AssayValueError, match="image triggers.*at least 3"):
        run_audit(model, rows, plan_from_dict(PLAN, source="test"), cache_dir=None,
                  progress=False)


def test_assay_attack_backdoor_writes_a_trojaned_model_and_its_trigger(tmp_path, capsys):
    out = tmp_path / "trojan.safetensors"
    args = ["attack", "backdoor", "--data", "digits:train", "--eval-data", "digits:test",
            "--target", "3", "--arch", "small_cnn", "--epochs", "15", "--lr", "3e-3",
            "--batch-size", "64", "--out", str(out), "--quiet"]
    with using_threads(1):
        assert main(args) == 0
    summary = json.loads((tmp_path / "trojan.safetensors.trigger.json").read_text())
    assert summary["attack"] == "badnets" and summary["poisoned"] == 135
    assert summary["attack_success_rate"] >= 0.9 and summary["clean_accuracy"] >= 0.9
    assert out.is_file()
    # the scan of that model, told its true trigger, shows it and scores the target
    plan = tmp_path / "plan.toml"
    trigger = tmp_path / "trojan.safetensors.trigger.json"
    plan.write_text('[[checks]]\nname = "backdoor_scan"\n'
                    f'params = {{ steps = 300, trigger = "{trigger}" }}\n'
                    'gates = ["target_found >= 1"]\n')
    report = tmp_path / "report"
    assert main(["audit", "--model", str(out), "--arch", "small_cnn", "--data", "digits:test",
                 "--plan", str(plan), "--out", str(report), "--quiet"]) == 0
    check = json.loads((report / "report.json").read_text())["checks"][0]
    assert check["metrics"]["target_found"] == 1 and check["metrics"]["suspected_target"] == 3
    assert check["galleries"][0]["captions"][0] == "true badnets trigger"
    capsys.readouterr()
    for bad, message in ((["--rate", "1.5"], "--rate 1.5"), (["--target", "12"], "--target 12"),
                         (["--arch", "vit"], "--arch vit")):
        assert main(args[:-3] + ["--out", str(tmp_path / "x.safetensors"), *bad]) == 2
        assert message in capsys.readouterr().err
    assert main(args[:-3] + ["--out", str(tmp_path / "x.onnx")]) == 2


def test_assay_harden_backdoor_unlearns_the_trigger(models, tmp_path):
    path = save_network(models["trojaned"], tmp_path / "trojan.safetensors")
    plan = tmp_path / "plan.toml"
    plan.write_text('[[checks]]\nname = "backdoor_scan"\n'
                    'params = { steps = 300 }\n')
    out = tmp_path / "clean.safetensors"
    with using_threads(1):
        code = main(["harden", "backdoor", "--model", str(path), "--arch", "small_cnn",
                     "--data", "digits:train", "--eval-data", "digits:test", "--epochs", "5",
                     "--lr", "3e-3", "--batch-size", "64", "--plan", str(plan),
                     "--out", str(out), "--quiet"])
    assert code == 0 and out.is_file()
    rows = {r["metric"]: r for r in json.loads(
        (tmp_path / "clean-report" / "comparison.json").read_text())["deltas"]}
    assert rows["suspected_target"]["before"] == 3 and rows["suspected_target"]["after"] == -1
    assert rows["trojan_probability"]["after"] < 0.5 < rows["trojan_probability"]["before"]


@pytest.mark.parametrize("content, expected", [
    ("not json", "is not JSON"),
    ('{"attack": "label_flip", "settings": {}}', "must hold an object"),
    ('{"attack": "badnets", "settings": {"rate": 2}}', "'rate' parameter"),
    ('{"attack": "badnets", "settings": {"colour": 1}}', "unexpected keyword"),
])
def test_a_bad_trigger_file_is_refused_when_the_plan_is_read(tmp_path, content, expected):
    trigger = tmp_path / "t.json"
    trigger.write_text(content)
    with pytest.raises(AssayValueError, match="'trigger' parameter") as err:
        plan_from_dict({"checks": [{"name": "backdoor_scan",
                                    "params": {"trigger": str(trigger)}}]})
    assert expected in str(err.value) and str(trigger) in str(err.value)


def test_class_groups_find_the_triggers_of_one_search(models):
    from assay.defenses.backdoor import NeuralCleanse

    data = load_digits("test").subset(200)
    scanner = NeuralCleanse(steps=60, batch_size=16, seed=1)
    whole = scanner.scan(models["trojaned"], data)
    grouped = scanner.scan(models["trojaned"], data, groups=3)
    assert torch.allclose(grouped.masks, whole.masks, atol=1e-4)
    assert torch.allclose(grouped.patterns, whole.patterns, atol=1e-4)
    assert torch.equal(grouped.success, whole.success)
    # through the check, each group a piece of the audit's executor
    plan = plan_from_dict({"checks": [{"name": "backdoor_scan", "params": {
        "steps": 60, "batch_size": 16, "n": 200, "class_groups": 4}}], "seed": 1})
    model = ModelWrapper(models["trojaned"], num_classes=10, input_shape=(1, 8, 8))
    check = run_audit(model, data, plan, progress=False).checks[0]
    assert check.metrics["anomaly_index"] == pytest.approx(whole.anomaly_index, abs=1e-3)


def test_a_stored_margin_piece_is_read_back_or_refused():
    from assay.checks.backdoor import _margins_from_piece
    from assay.defenses.backdoor import MaxMargin, margin_p_value

    margins = torch.tensor([3.0, 4.0, 3.5, 20.0, 3.2], dtype=torch.float64)
    scan = _margins_from_piece({"margins": margins, "seconds_per_class": 0.5}, MaxMargin())
    assert scan.p_value == margin_p_value(margins) and scan.suspected_target == 3
    for bad in ({"margins": torch.ones(2, 5), "seconds_per_class": 0.5},
                {"margins": torch.ones(2), "seconds_per_class": 0.5}, {"margins": [1.0]}):
        with pytest.raises((ValueError, KeyError)):
            _margins_from_piece(bad, MaxMargin())


def test_a_calibration_file_replaces_the_shipped_logistic(models, tmp_path):
    calibration = tmp_path / "mine.json"
    calibration.write_text('{"bias": 10.0, "weights": [0.0, 0.0]}')  # calls everything a trojan
    plan = plan_from_dict({"checks": [{"name": "backdoor_scan", "params": {
        "steps": 30, "margin_steps": 30, "calibration": str(calibration)},
        "gates": ["trojan_probability <= 0.5"]}]}, source="test")
    model = ModelWrapper(models["clean"], num_classes=10, input_shape=(1, 8, 8))
    check = run_audit(model, load_digits("test"), plan, cache_dir=None, progress=False).checks[0]
    assert check.status == "fail" and check.metrics["trojan_probability"] > 0.99
    assert check.details["logistic"] == {"bias": 10.0, "weights": [0.0, 0.0]}


@pytest.mark.parametrize("content, expected", [
    ("not json", "is not JSON"),
    ('{"bias": 1.0}', "must hold"),
    ('{"bias": "x", "weights": [1, 2]}', "must hold"),
    ('{"bias": 1.0, "weights": [1, NaN]}', "finite numbers"),
    ('{"bias": 1.0, "weights": [1, 2, 3]}', "must hold"),
    (None, "cannot be read"),
])
def test_a_bad_calibration_file_is_refused_when_the_plan_is_read(tmp_path, content, expected):
    calibration = tmp_path / "c.json"
    if content is not None:
        calibration.write_text(content)
    with pytest.raises(AssayValueError, match="'calibration' parameter") as err:
        plan_from_dict({"checks": [{"name": "backdoor_scan",
                                    "params": {"calibration": str(calibration)}}]})
    assert expected in str(err.value) and str(calibration) in str(err.value)


@pytest.mark.parametrize("name, calibration, warned", [
    ("digits", False, True), ("mnist", False, False), ("digits", True, False)])
def test_a_clean_verdict_off_mnist_without_a_calibration_is_a_warning(
        models, tmp_path, name, calibration, warned):
    import dataclasses

    params = {"steps": 30, "margin_steps": 30}
    if calibration:  # the user's own population: it calls this model clean
        path = tmp_path / "mine.json"
        path.write_text('{"bias": -10.0, "weights": [0.0, 0.0]}')
        params["calibration"] = str(path)
    plan = plan_from_dict({"checks": [{"name": "backdoor_scan", "params": params}]},
                          source="test")
    model = ModelWrapper(models["clean"], num_classes=10, input_shape=(1, 8, 8))
    data = dataclasses.replace(load_digits("test"), name=name)
    check = run_audit(model, data, plan, cache_dir=None, progress=False).checks[0]
    assert check.metrics["suspected_target"] == -1.0
    assert ("calibration_unvalidated" in [f.code for f in check.findings]) == warned
