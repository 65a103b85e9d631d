"""What `assay` says on the console, and the output folders it refuses before any work
(issue 11, items 3, 5 and 6)."""

import json
import logging
import os
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from assay import demo
from assay._paths import ensure_writable_dir
from assay.checks import Check, CheckOutput, Finding, register
from assay.cli import main
from assay.core.loaders import load_digits
from assay.errors import AssayValueError, AssayWarning

RAN: list[str] = []


@register
class NoisyCheck(Check):
    """Warns the way torch and matplotlib do, warns the assay way, and finds something."""

    name = "test_console_noisy"
    pillar = "test"
    summary = "noisy"
    params = ()

    def metric_names(self, params):
        return ["x"]

    def run(self, ctx, params):
        RAN.append(self.name)
        warnings.warn("a third-party deprecation", DeprecationWarning)
        warnings.warn("a third-party user warning", UserWarning)
        warnings.warn("the model looks odd", AssayWarning)
        return CheckOutput({"x": 0.25}, [Finding("warn", "odd", "x is lower than usual")])


@pytest.fixture
def files(tmp_path):
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    model_file = tmp_path / "linear.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(net), str(model_file))
    test = load_digits("test")
    data_file = tmp_path / "digits.npz"
    np.savez(data_file, x=test.x[:50].numpy(), y=test.y[:50].numpy())
    plan = tmp_path / "plan.toml"
    plan.write_text('[[checks]]\nname = "test_console_noisy"\ngates = ["x >= 0.5"]\n')
    return model_file, data_file, plan


def audit(files, out, *extra):
    model_file, data_file, plan = files
    return main(["audit", "--model", str(model_file), "--data", str(data_file), "--plan",
                 str(plan), "--out", str(out), *map(str, extra)])


# ------------------------------------------------------------------- item 5: console
def test_one_line_per_check_then_failures_and_warnings_again(files, tmp_path, caplog, capsys):
    with caplog.at_level(logging.INFO, logger="assay"):
        assert audit(files, tmp_path / "r") == 1
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[1/1]")]
    assert line.startswith("[1/1] test_console_noisy: FAIL, ")
    assert " s; failed: x >= 0.5 (got 0.25); warnings: odd" in line
    err = capsys.readouterr().err.splitlines()
    assert err[-3:-1] == ["assay: FAILED test_console_noisy: x >= 0.5 (got 0.25)",
                          "assay: warning: test_console_noisy: x is lower than usual"]
    assert err[-1].startswith("assay: FAIL (1 of 1 gate failed): reports in ")


def test_quiet_silences_other_libraries_warnings_but_not_assays(files, tmp_path, capsys):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert audit(files, tmp_path / "loud") == 1
        loud = {type(w.message) for w in seen}
        seen.clear()
        assert audit(files, tmp_path / "quiet", "--quiet", "--no-cache") == 1
        quiet = {type(w.message) for w in seen}
    assert {UserWarning, DeprecationWarning, AssayWarning} <= loud
    assert quiet == {AssayWarning}
    assert logging.getLogger("assay").level == logging.NOTSET  # main() restored the level
    err = capsys.readouterr().err
    assert "assay: FAILED test_console_noisy" in err  # the verdict is not a log line


def test_the_demo_does_not_train_again_when_its_weights_are_cached(tmp_path, monkeypatch):
    from dataclasses import replace

    monkeypatch.setattr(demo, "DEMO_TRAINING", replace(demo.DEMO_TRAINING, epochs=1))  # fast
    plan = tmp_path / "plan.toml"
    plan.write_text('[[checks]]\nname = "accuracy"\ngates = ["accuracy >= 0.5"]\n')
    argv = ["audit", "--demo", "--plan", str(plan), "--out", str(tmp_path / "r"), "--quiet"]
    assert main(argv) == 0
    first = json.loads((tmp_path / "r" / "report.json").read_text())

    def no_training(*args, **kwargs):
        raise AssertionError("the demo trained again")

    monkeypatch.setattr(demo, "fit", no_training)
    assert main(argv) == 0
    second = json.loads((tmp_path / "r" / "report.json").read_text())
    assert second["model"]["sha256"] == first["model"]["sha256"]
    assert second["checks"][0]["metrics"] == first["checks"][0]["metrics"]
    assert second["checks"][0]["cached"] and not second["findings"]  # eval mode, as trained
    (weights,) = (tmp_path / "r" / ".cache").glob("demo-*.safetensors")
    weights.write_bytes(b"not safetensors")  # unusable: trained again, never trusted
    with pytest.raises(AssertionError, match="trained again"):
        main(argv)


# ------------------------------------------------------------------- item 3: output paths
def refused(files, capsys, *argv):
    RAN.clear()
    capsys.readouterr()
    code = audit(files, *argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("assay: error: "), err
    assert RAN == [], "a check ran before the output folder was checked"
    return err[0]


def test_out_naming_a_file_or_a_path_under_one_is_refused_first(files, tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert "--out" in refused(files, capsys, a_file) and "is a file" in refused(
        files, capsys, a_file)
    assert f"{a_file} is a file" in refused(files, capsys, a_file / "sub" / "dir")
    message = refused(files, capsys, tmp_path / "r", "--cache-dir", a_file)
    assert message.startswith(f"assay: error: --cache-dir {a_file}: ")


def test_out_where_nothing_can_be_written_is_refused(files, tmp_path, capsys):
    """A real refusal even for root: the kernel lets no one create a folder in /proc."""
    assert "--out /proc/assay-test/out: cannot create it" in refused(
        files, capsys, "/proc/assay-test/out")


def test_an_unwritable_folder_is_refused(tmp_path, monkeypatch):
    """Simulated: tests run as root, whom chmod does not stop. This proves the probe's
    failure becomes the flag's message; the probe itself is the real write that would
    fail (not os.access, which tells root yes)."""
    import tempfile

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path))

    monkeypatch.setattr(tempfile, "TemporaryFile", denied)
    with pytest.raises(AssayValueError, match="--out .*Permission denied"):
        ensure_writable_dir(tmp_path / "out", "--out")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_a_read_only_folder_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(AssayValueError, match="--cache-dir"):
        ensure_writable_dir(locked / "cache", "--cache-dir")


def test_the_demo_checks_out_before_training(tmp_path, monkeypatch, capsys):
    def no_training(*args, **kwargs):
        raise AssertionError("trained before checking --out")

    monkeypatch.setattr(demo, "fit", no_training)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert main(["audit", "--demo", "--out", str(a_file), "--quiet"]) == 2
    assert "--out" in capsys.readouterr().err


# ------------------------------------------------------------------- item 6: assay checks
def test_checks_lists_metrics_and_each_list_once(capsys):
    assert main(["checks"]) == 0
    out = capsys.readouterr().out
    assert "metrics: accuracy, accuracy_ci_low, accuracy_ci_high, n, chance_accuracy" in out
    assert "metrics: clean_accuracy, robust_accuracy@<norms>=<eps>" in out
    assert "auroc@<detectors>:<ood_sets>" in out
    detectors = next(line for line in out.splitlines() if line.strip().startswith("detectors"))
    assert detectors.count("'mahalanobis'") == 1 and "default: all" in detectors
    corruptions = next(line for line in out.splitlines()
                       if line.strip().startswith("corruptions ("))
    assert corruptions.count("'gaussian_noise'") == 1
