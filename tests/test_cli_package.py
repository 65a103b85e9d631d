"""The cli/ package: the entry points, and the workflows and model I/O the commands call,
usable from Python without the command line."""

import importlib
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch

from assay import workflows
from assay.audit.plan import plan_from_dict
from assay.cli import main
from assay.core import zoo
from assay.core.loaders import load_digits
from assay.core.model import ModelWrapper
from assay.core.model_io import load_network, save_network
from assay.core.training import TrainConfig
from assay.defenses.compression import quantize, sparsity
from assay.errors import AssayValueError

ROOT = Path(__file__).resolve().parents[1]


def test_the_console_entry_point_is_cli_main():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, name = scripts["assay"].partition(":")
    entry = getattr(importlib.import_module(module), name)
    assert entry is main
    with pytest.raises(SystemExit) as caught:
        entry(["--version"])
    assert caught.value.code == 0


def test_python_dash_m_assay_runs_the_cli():
    done = subprocess.run([sys.executable, "-m", "assay", "--version"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("assay ")
    done = subprocess.run([sys.executable, "-m", "assay", "audit", "--model", "x.pt"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "assay: error: --model needs --data SPEC (e.g. mnist:test:1000 or data.npz)."]


@pytest.fixture(scope="module")
def digits():
    return load_digits("train").subset(300), load_digits("test").subset(100)


def fresh_mlp(data):
    net = zoo.build("mlp", input_shape=data.input_shape, num_classes=10, seed=0).eval()
    return ModelWrapper(net, num_classes=10, input_shape=data.input_shape, name="mlp")


def test_harden_is_a_library_function(digits, tmp_path):
    train, test = digits
    model = fresh_mlp(train)
    weights = [p.clone() for p in model.parameters()]
    plan = plan_from_dict({"checks": [{"name": "accuracy"}]})
    result = workflows.harden(model, workflows.GaussianAugmentation(sigma=0.1), train, test,
                              out=tmp_path / "m.safetensors", report_dir=tmp_path / "report",
                              config=TrainConfig(epochs=2, lr=3e-3), plan=plan,
                              show_progress=False)
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters()))  # untouched
    assert result.after.checks[0].metrics["accuracy"] > result.before.checks[0].metrics[
        "accuracy"]
    assert (tmp_path / "report" / "comparison.html").is_file()
    net, _ = load_network(tmp_path / "m.safetensors", arch="mlp", input_shape=(1, 8, 8),
                          num_classes=10)
    assert torch.allclose(net(test.x[:4]), result.model.net(test.x[:4]))


def test_the_default_harden_plan_is_the_defences_own_check():
    names = [c.name for c in workflows.harden_plan(
        workflows.AdversarialTraining(eps=0.1)).checks]
    assert names == ["accuracy", "robustness"]
    assert [c.name for c in workflows.harden_plan(workflows.GaussianAugmentation()).checks] \
        == ["accuracy", "certified_robustness"]


def test_compress_is_a_library_function(digits, tmp_path):
    train, test = digits
    result = workflows.compress(fresh_mlp(train), train, test, out=tmp_path / "p.safetensors",
                                prune=0.5)
    assert sparsity(result.model) == pytest.approx(0.5, abs=0.01)
    assert result.size_before > 0 and 0 <= result.accuracy_after <= 1
    net, _ = load_network(tmp_path / "p.safetensors", arch="mlp", input_shape=(1, 8, 8),
                          num_classes=10)
    assert torch.equal(net(test.x[:4]), result.model.net(test.x[:4]))
    with pytest.raises(AssayValueError, match="exactly one of"):
        workflows.compress(fresh_mlp(train), train, test, out=tmp_path / "x.pt", prune=0.5,
                           quantize="int8")


def test_save_network_refuses_what_it_cannot_write(digits, tmp_path):
    train, _ = digits
    model = fresh_mlp(train)
    with pytest.raises(AssayValueError, match="write .safetensors"):
        save_network(model.net, tmp_path / "m.onnx", train)
    int8 = quantize(model, "dynamic")
    with pytest.raises(AssayValueError, match="int8 model cannot be written as weights"):
        save_network(int8.net, tmp_path / "m.safetensors", train)
    assert not (tmp_path / "m.safetensors").exists()
    save_network(int8.net, tmp_path / "m.pt", train)
    loaded, kind = load_network(tmp_path / "m.pt")
    assert kind == "torchscript"


def test_harden_and_audit_load_a_model_through_the_same_function(tmp_path, monkeypatch):
    from assay.cli import options

    calls = []
    original = options.model_from_args

    def spy(args, data, **kw):
        calls.append(args.command)
        return original(args, data, **kw)

    for module in ("assay.cli.audit", "assay.cli.harden"):
        monkeypatch.setattr(importlib.import_module(module), "model_from_args", spy)
    path = tmp_path / "mlp.pt"
    torch.save(zoo.build("mlp", input_shape=(1, 8, 8), num_classes=10).state_dict(), path)
    main(["audit", "--model", str(path), "--arch", "mlp", "--data", "digits:test:50",
          "--out", str(tmp_path / "r"), "--quiet", "--device", "nodevice"])
    main(["compress", "--model", str(path), "--arch", "mlp", "--data", "digits:train:50",
          "--eval-data", "digits:test:50", "--prune", "0.5", "--out", str(tmp_path / "c.pt"),
          "--quiet", "--device", "nodevice"])
    assert calls == ["audit", "compress"]
