"""``assay harden`` and ``assay compress`` from the command line, on the embedded digits."""

import json

import pytest
import torch

from assay.cli import main
from assay.core.loading import load_network
from assay.errors import AssayValueError
from assay.report.compare import metric_deltas


def run_cli(*args):
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def hardened(tmp_path_factory):
    out = tmp_path_factory.mktemp("harden")
    code = run_cli("harden", "adversarial", "--arch", "small_cnn", "--data", "digits:train",
                   "--eval-data", "digits:test", "--method", "fast", "--eps", "0.1",
                   "--epochs", "4", "--lr", "3e-3", "--out", out / "at.safetensors", "--quiet")
    return code, out


def test_harden_writes_the_model_and_a_before_after_report(hardened):
    code, out = hardened
    assert code == 0
    net, kind = load_network(out / "at.safetensors", arch="small_cnn", input_shape=(1, 8, 8),
                             num_classes=10)
    assert kind == "safetensors"
    report = out / "at-report"
    for name in ("comparison.html", "comparison.json", "comparison.md", "before/report.html",
                 "after/report.json"):
        assert (report / name).is_file(), name
    data = json.loads((report / "comparison.json").read_text())
    deltas = {(r["check"], r["metric"]): r for r in data["deltas"]}
    robust = deltas[("robustness", "robust_accuracy@linf=0.1")]
    # The untrained start model is at chance; the hardened one is accurate and robust.
    assert robust["after"] > robust["before"] and robust["delta"] == pytest.approx(
        robust["after"] - robust["before"])
    assert deltas[("accuracy", "accuracy")]["after"] > 0.8
    page = (report / "comparison.html").read_text()
    assert "robust_accuracy@linf=0.1" in page and "<script" not in page


def test_compress_prunes_and_quantizes(hardened, tmp_path):
    _, out = hardened
    base = ["--model", out / "at.safetensors", "--arch", "small_cnn", "--data", "digits:train",
            "--eval-data", "digits:test", "--quiet"]
    assert run_cli("compress", *base, "--prune", "0.5", "--out", tmp_path / "p.safetensors") == 0
    pruned, _ = load_network(tmp_path / "p.safetensors", arch="small_cnn",
                             input_shape=(1, 8, 8), num_classes=10)
    weights = torch.cat([p.flatten() for n, p in pruned.named_parameters() if "weight" in n])
    assert float((weights == 0).float().mean()) == pytest.approx(0.5, abs=0.01)
    assert run_cli("compress", *base, "--quantize", "int8", "--out", tmp_path / "q.pt") == 0
    quantized, kind = load_network(tmp_path / "q.pt")
    assert kind == "torchscript"
    # The int8 model is audited with the black-box attack only, and says so.
    code = run_cli("audit", "--model", tmp_path / "q.pt", "--data", "digits:test:100",
                   "--out", tmp_path / "audit", "--quiet")
    assert code == 0
    report = json.loads((tmp_path / "audit" / "report.json").read_text())
    robustness = report["checks"][1]
    assert robustness["status"] == "warn"
    assert [f["code"] for f in robustness["findings"] if f["level"] == "warn"] == [
        "not_differentiable"]


def test_bad_harden_input_exits_2(tmp_path, capsys):
    common = ["--data", "digits:train", "--eval-data", "digits:test", "--quiet"]
    assert run_cli("harden", "adversarial", "--eps", "0.1", *common,
                   "--out", tmp_path / "m.safetensors") == 2  # no model, no arch
    assert "--arch" in capsys.readouterr().err
    assert run_cli("harden", "adversarial", "--arch", "mlp", "--eps", "0.1", *common,
                   "--out", tmp_path / "m.bin") == 2
    assert run_cli("compress", "--arch", "mlp", "--prune", "1.5", *common,
                   "--out", tmp_path / "m.safetensors") == 2
    capsys.readouterr()
    assert run_cli("harden", "adversarial", "--arch", "mlp", "--eps", "0.1", *common,
                   "--ramp-epochs", "-1", "--out", tmp_path / "m.safetensors") == 2
    assert "--ramp-epochs -1: must be >= 0" in capsys.readouterr().err


def test_harden_passes_the_eps_ramp_and_the_schedule(tmp_path, monkeypatch):
    import assay.defenses.adversarial as adversarial

    seen = {}

    def fake_training(model, data, **options):
        seen.update(options, n=len(data))
        raise AssayValueError("stopped by the test")

    monkeypatch.setattr(adversarial, "adversarial_training", fake_training)
    common = ["--arch", "mlp", "--data", "digits:train", "--eval-data", "digits:test",
              "--method", "pgd", "--eps", "0.1", "--batch-size", "100", "--quiet",
              "--out", tmp_path / "m.safetensors"]
    assert run_cli("harden", "adversarial", *common, "--ramp-epochs", "1.5", "--schedule",
                   "cyclic", "--lr", "0.01") == 2
    assert seen["ramp_epochs"] == 1.5 and seen["config"].schedule == "cyclic"
    assert seen["config"].lr == 0.01 and seen["method"] == "pgd"
    assert seen["steps"] is None and seen["beta"] is None  # the loss's own defaults


def test_metric_deltas_cover_metrics_on_either_side():
    from assay.results import AuditResult, CheckResult

    def audit(metrics):
        check = CheckResult("c", "c", "p", "pass", {}, metrics)
        return AuditResult("0", "now", "pass", {}, {}, {}, (check,))

    rows = metric_deltas(audit({"a": 0.5, "b": 1.0}), audit({"a": 0.75, "c": 2.0}))
    assert [(r["metric"], r["delta"]) for r in rows] == [("a", 0.25), ("b", None), ("c", None)]


def test_evaluation_refuses_a_model_without_gradients(digits):
    from assay.attacks.evasion import evaluate_robustness
    from assay.core.model import ModelWrapper

    _, test = digits

    class NoGrad(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.one_hot((x.flatten(1).sum(1) * 10).long() % 10,
                                               10).float()

    model = ModelWrapper(NoGrad(), num_classes=10, input_shape=(1, 8, 8))
    with pytest.raises(AssayValueError, match="carry no gradient"):
        evaluate_robustness(model, test.x[:10], test.y[:10], eps=0.1)


def test_harden_smoothing_reports_certified_accuracy(tmp_path):
    plan = tmp_path / "plan.toml"
    plan.write_text('[[checks]]\nname = "certified_robustness"\n'
                    'params = { sigma = 0.25, n = 500, n_samples = 40 }\n')
    code = run_cli("harden", "smoothing", "--arch", "small_cnn", "--data", "digits:train:600",
                   "--eval-data", "digits:test:100", "--sigma", "0.25", "--epochs", "3",
                   "--lr", "3e-3", "--plan", plan, "--out", tmp_path / "s.safetensors",
                   "--quiet")
    assert code == 0
    data = json.loads((tmp_path / "s-report" / "comparison.json").read_text())
    deltas = {(r["check"], r["metric"]): r for r in data["deltas"]}
    certified = deltas[("certified_robustness", "certified_accuracy@l2=0.25")]
    assert certified["after"] is not None and 0 <= certified["after"] <= 1
    assert "Gaussian augmentation at sigma=0.25" in data["title"]
