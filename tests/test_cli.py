import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from torch import nn

from assay.cli import main
from assay.core.loaders import load_digits


@pytest.fixture
def model_file(tmp_path, digits_net):
    path = tmp_path / "digits.pt"
    torch.jit.save(torch.jit.script(digits_net), str(path))
    return path


@pytest.fixture
def digits_npz(tmp_path):
    test = load_digits("test")
    path = tmp_path / "digits.npz"
    np.savez(path, x=test.x.numpy(), y=test.y.numpy())
    return path


def run_cli(*args):
    return main([str(a) for a in args])


def test_demo_writes_the_four_reports(tmp_path):
    out = tmp_path / "report"
    assert run_cli("audit", "--demo", "--out", out, "--quiet") == 0
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == [
        "junit.xml", "report.html", "report.json", "summary.md"]
    report = json.loads((out / "report.json").read_text())
    assert [c["id"] for c in report["checks"]] == [
        "accuracy", "robustness", "corruptions", "calibration", "conformal", "ood", "explanations",
        "fairness"]
    assert all(g["passed"] for c in report["checks"] for g in c["gates"])
    assert {c["status"] for c in report["checks"]} <= {"pass", "warn"}


def test_model_file_with_plan_and_failing_gate(tmp_path, model_file, digits_npz):
    plan = tmp_path / "plan.toml"
    plan.write_text('[[checks]]\nname = "accuracy"\ngates = ["accuracy >= 0.999"]\n')
    assert run_cli("audit", "--model", model_file, "--data", digits_npz, "--plan", plan,
                   "--out", tmp_path / "r", "--quiet") == 1
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["model"]["file"]["format"] == "torchscript"
    assert report["checks"][0]["gates"][0]["passed"] is False


def test_weights_file_with_arch(tmp_path, digits_net, digits_npz):
    path = tmp_path / "weights.pt"
    torch.save(digits_net.state_dict(), path)
    plan = tmp_path / "plan.toml"
    plan.write_text('[[checks]]\nname = "accuracy"\ngates = ["accuracy >= 0.9"]\n')
    args = ["audit", "--model", path, "--data", digits_npz, "--plan", plan, "--out", tmp_path / "r",
            "--quiet"]
    assert run_cli(*args, "--arch", "small_cnn") == 0
    assert run_cli(*args) == 2  # weights alone: needs --arch


class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def bad_inputs(tmp_path, model_file, digits_npz):
    """(name, argv) pairs that must each end with exit code 2 and one clear line."""
    evil = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(1), "x": Payload()}, evil)
    wide = tmp_path / "wide.npz"
    np.savez(wide, x=np.random.rand(5, 1, 28, 28).astype(np.float32), y=np.arange(5))
    labels = tmp_path / "labels.npz"
    np.savez(labels, x=np.random.rand(5, 1, 8, 8).astype(np.float32), y=np.array([0, 1, 2, 3, 12]))
    nans = tmp_path / "nan.npz"
    x = np.random.rand(5, 1, 8, 8).astype(np.float32)
    x[2, 0, 3, 3] = np.nan
    np.savez(nans, x=x, y=np.arange(5))
    unknown_check = tmp_path / "unknown_check.toml"
    unknown_check.write_text('[[checks]]\nname = "robustnes"\n')
    unknown_gate = tmp_path / "unknown_gate.toml"
    unknown_gate.write_text('[[checks]]\nname = "robustness"\nparams = { eps = [0.1] }\n'
                            'gates = ["robust_accuracy@linf=0.3 >= 0.4"]\n')
    base = ["audit", "--out", tmp_path / "r", "--quiet"]
    return {
        "missing model file": base + ["--model", tmp_path / "nope.pt", "--data", digits_npz],
        "pickle needing code": base + ["--model", evil, "--data", digits_npz, "--arch", "small_cnn"],
        "wrong input shape": base + ["--model", model_file, "--data", wide],
        "labels outside the classes": base + ["--model", model_file, "--data", labels],
        "NaN in data": base + ["--model", model_file, "--data", nans],
        "missing data file": base + ["--model", model_file, "--data", tmp_path / "none.npz"],
        "unknown check": base + ["--model", model_file, "--data", digits_npz, "--plan", unknown_check],
        "unknown gate": base + ["--model", model_file, "--data", digits_npz, "--plan", unknown_gate],
        "missing plan": base + ["--demo", "--plan", tmp_path / "none.toml"],
    }


EXPECTED = {
    "missing model file": "no such model file",
    "pickle needing code": "full pickle",
    "wrong input shape": "rejected inputs of shape (1, 1, 28, 28)",
    "labels outside the classes": "classes",
    "NaN in data": "NaN",
    "missing data file": "no such file",
    "unknown check": "Unknown check 'robustnes'",
    "unknown gate": "unknown metric 'robust_accuracy@linf=0.3'",
    "missing plan": "no such plan file",
}


def test_bad_input_exits_2_with_one_clear_line(tmp_path, model_file, digits_npz, capsys):
    for name, argv in bad_inputs(tmp_path, model_file, digits_npz).items():
        capsys.readouterr()
        code = run_cli(*argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2, name
        assert len(err) == 1 and err[0].startswith("assay: error: "), (name, err)
        assert EXPECTED[name] in err[0], (name, err[0])
        assert "pwned" not in err[0]


def test_probability_model_warns_in_the_report(tmp_path, digits_net, digits_npz):
    net = nn.Sequential(digits_net, nn.Softmax(dim=1)).eval()
    path = tmp_path / "probs.pt"
    torch.jit.save(torch.jit.script(net), str(path))
    plan = tmp_path / "plan.toml"
    plan.write_text('[[checks]]\nname = "accuracy"\n')
    assert run_cli("audit", "--model", path, "--data", digits_npz, "--plan", plan,
                   "--out", tmp_path / "r", "--quiet") == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["findings"][0]["code"] == "model_probabilities"
    assert report["checks"][0]["status"] == "warn"
    assert "returns probabilities" in (tmp_path / "r" / "report.html").read_text()


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["audit"])
    assert exit_info.value.code == 2
    assert run_cli("audit", "--model", "x.pt") == 2  # no --data


def test_checks_lists_parameters(capsys):
    assert main(["checks"]) == 0
    out = capsys.readouterr().out
    assert "robustness" in out and "norms (list[str] one of ['linf', 'l2']" in out


def test_python_dash_m_and_version():
    done = subprocess.run([sys.executable, "-m", "assay", "--version"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("assay 0.")


@pytest.mark.slow
def test_killed_audit_resumes_without_recomputing(tmp_path, model_file, digits_npz):
    plan = tmp_path / "plan.toml"
    plan.write_text('[[checks]]\nname = "accuracy"\n\n[[checks]]\nname = "robustness"\n'
                    'params = { eps = [0.01, 0.02], steps = 1500, n = 449 }\n')
    out = tmp_path / "r"
    argv = [sys.executable, "-m", "assay", "audit", "--model", str(model_file), "--data",
            str(digits_npz), "--plan", str(plan), "--out", str(out), "--quiet"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cache = out / ".cache"
    deadline = time.time() + 60
    while time.time() < deadline and not list(cache.glob("*.json")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(list(cache.glob("*.json"))) == 1, "the accuracy check should be cached"
    assert not (out / "report.json").exists(), "killed before the robustness check ended"
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "report.json").read_text())
    assert [(c["id"], c["cached"]) for c in report["checks"]] == [("accuracy", True),
                                                                 ("robustness", False)]
