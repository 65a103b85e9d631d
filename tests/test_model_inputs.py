"""Model files a new user might hand over, and the harden/compress options: each mistake is
exit code 2 with one line naming the problem, never a traceback or a wrong pass."""

import argparse
import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from assay.cli import main
from assay.cli.main import _parser
from assay.cli.options import model_from_args
from assay.core import zoo
from assay.core.loaders import load_digits
from assay.core.loading import file_sha256, load_network
from assay.core.model_io import save_network
from assay.core.model import ModelWrapper
from assay.errors import AssayValueError
from assay.workflows import trainable_copy


def run_cli(*args):
    return main([str(a) for a in args])


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("assay: error: "), err
    return err[0]


@pytest.fixture
def digits_npz(tmp_path):
    test = load_digits("test")
    path = tmp_path / "digits.npz"
    np.savez(path, x=test.x[:200].numpy(), y=test.y[:200].numpy())
    return path


def audit_args(model, data, tmp_path):
    return ["audit", "--model", model, "--data", data, "--out", tmp_path / "report", "--quiet"]


def accuracy_plan(tmp_path):
    plan = tmp_path / "plan.toml"
    plan.write_text('[[checks]]\nname = "accuracy"\n')
    return plan


def script(module, path):
    torch.jit.save(torch.jit.script(module), str(path))
    return path


class Linear(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(64, 10)

    def forward(self, x):
        return self.linear(x.flatten(1))


class NaNLogits(Linear):
    def forward(self, x):
        return self.linear(x.flatten(1)) * float("nan")


class NaNOnBrightInputs(Linear):
    """Finite logits for dark inputs, NaN for bright ones: fine on a dark sample only."""

    def forward(self, x):
        out = self.linear(x.flatten(1))
        bright = x.flatten(1).mean(1, keepdim=True) > 0.5
        return torch.where(bright, torch.full_like(out, float("nan")), out)


class ReturnsTuple(Linear):
    def forward(self, x):
        out = self.linear(x.flatten(1))
        return out, out.softmax(1)


class Raises(Linear):
    def forward(self, x):
        if bool(x.sum() >= 0):
            raise ValueError("this model always fails")
        return self.linear(x.flatten(1))


class WithDropout(Linear):
    def __init__(self):
        super().__init__()
        self.dropout = nn.Dropout(0.5)

    def forward(self, x):
        return self.linear(self.dropout(x.flatten(1)))


# ------------------------------------------------------------------ 1. NaN outputs
def test_a_model_returning_nan_is_an_error_not_a_pass(tmp_path, digits_npz, capsys):
    path = script(NaNLogits(), tmp_path / "nan.pt")
    assert run_cli(*audit_args(path, digits_npz, tmp_path)) == 2
    line = one_error_line(capsys)
    assert "NaN or infinite logits for 64 of 64 inputs" in line and "Fix:" in line
    assert "stochastic" not in line
    assert not (tmp_path / "report" / "report.json").exists()


def test_inspect_counts_non_finite_rows_and_is_not_called_stochastic():
    model = ModelWrapper(NaNOnBrightInputs(), num_classes=10, input_shape=(1, 8, 8))
    x = torch.cat([torch.zeros(5, 1, 8, 8), torch.ones(3, 1, 8, 8)])
    with pytest.raises(AssayValueError, match="for 3 of 8 inputs"):
        model.inspect(x)
    assert "stochastic" not in [f.code for f in model.findings]
    inf = ModelWrapper(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), num_classes=10,
                       input_shape=(1, 8, 8))
    with torch.no_grad():
        inf.net[1].bias[3] = float("inf")
    with pytest.raises(AssayValueError, match="NaN or infinite"):
        inf.inspect(torch.rand(4, 1, 8, 8))


def test_predict_never_reads_nan_as_class_zero():
    model = ModelWrapper(NaNOnBrightInputs(), num_classes=10, input_shape=(1, 8, 8))
    dark = torch.zeros(4, 1, 8, 8)
    assert model.inspect(dark) == []  # the inspection sample is fine ...
    assert model.predict(dark).shape == (4,)
    with pytest.raises(AssayValueError, match="for 2 of 6 inputs"):  # ... later data is not
        model.predict(torch.cat([dark, torch.ones(2, 1, 8, 8)]), batch_size=4)
    with pytest.raises(AssayValueError, match="NaN"):
        model.predict_logits(torch.ones(1, 1, 8, 8))


# ------------------------------------------------------------------ 2. train mode
def test_torchscript_saved_in_train_mode_is_flagged(tmp_path, digits_npz):
    path = script(WithDropout().train(), tmp_path / "train.pt")
    net, kind = load_network(path)
    assert kind == "torchscript" and net.training  # the wrapper, not the loader, decides
    plan = accuracy_plan(tmp_path)
    assert run_cli(*audit_args(path, digits_npz, tmp_path), "--plan", plan) == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert "model_train_mode" in [f["code"] for f in report["findings"]]
    assert report["model"]["file"]["sha256"] == file_sha256(path)


def test_eval_mode_files_are_not_flagged(tmp_path):
    scripted = script(WithDropout().eval(), tmp_path / "eval.pt")
    weights = tmp_path / "w.pt"
    torch.save(zoo.build("mlp", input_shape=(1, 8, 8), num_classes=10).state_dict(), weights)
    exported = tmp_path / "m.pt2"
    batch = torch.export.Dim("batch")
    torch.export.save(torch.export.export(Linear(), (torch.zeros(2, 1, 8, 8),),
                                          dynamic_shapes={"x": {0: batch}}), str(exported))
    for path in (scripted, weights, exported):
        net, _ = load_network(path, arch="mlp", input_shape=(1, 8, 8), num_classes=10)
        model = ModelWrapper(net, num_classes=None, input_shape=(1, 8, 8))
        assert model.findings == [], path


def harden_namespace(**overrides):
    args = _parser().parse_args(["harden", "smoothing", "--arch", "mlp", "--data", "digits:train",
                                 "--out", "unused.safetensors"])
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def test_hardens_fresh_model_is_not_reported_as_handed_over_in_train_mode():
    model, info = model_from_args(harden_namespace(), load_digits("train"))
    assert model.findings == [] and info == {}
    assert not model.net.training


# ------------------------------------------------------------------ 3. no tracebacks
def test_tuple_output_is_one_line(tmp_path, digits_npz, capsys):
    path = script(ReturnsTuple(), tmp_path / "tuple.pt")
    assert run_cli(*audit_args(path, digits_npz, tmp_path)) == 2
    assert "returned a tuple" in one_error_line(capsys)
    with pytest.raises(AssayValueError, match="returned a tuple"):  # a class count given
        ModelWrapper(ReturnsTuple(), num_classes=10, input_shape=(1, 8, 8)).inspect(
            torch.rand(2, 1, 8, 8))


def test_forward_raising_jit_error_is_one_line(tmp_path, digits_npz, capsys):
    path = script(Raises(), tmp_path / "raises.pt")
    assert not issubclass(torch.jit.Error, RuntimeError)  # why RuntimeError is not enough
    assert run_cli(*audit_args(path, digits_npz, tmp_path)) == 2
    line = one_error_line(capsys)
    assert "rejected inputs" in line and "this model always fails" in line


def test_export_with_a_static_batch_is_refused_with_the_fix(tmp_path, digits_npz, capsys):
    path = tmp_path / "static.pt2"
    torch.export.save(torch.export.export(Linear(), (torch.zeros(1, 1, 8, 8),)), str(path))
    assert run_cli(*audit_args(path, digits_npz, tmp_path)) == 2
    line = one_error_line(capsys)
    assert "static batch size of 1" in line and "torch.export.Dim" in line
    assert "'x'" in line  # the dynamic_shapes key is the forward's argument name
    capped = tmp_path / "capped.pt2"
    batch = torch.export.Dim("batch", max=16)
    torch.export.save(torch.export.export(Linear(), (torch.zeros(2, 1, 8, 8),),
                                          dynamic_shapes={"x": {0: batch}}), str(capped))
    with pytest.raises(AssayValueError, match="at most 16"):
        load_network(capped)


def test_export_guard_failure_names_the_fix_in_the_library():
    program = torch.export.export(Linear(), (torch.zeros(1, 1, 8, 8),))
    with pytest.raises(AssayValueError, match="dynamic batch dimension"):
        ModelWrapper(program.module(), num_classes=10, input_shape=(1, 8, 8)).inspect(
            torch.rand(5, 1, 8, 8))


def test_harden_trains_a_torchscript_model(tmp_path):
    start = zoo.build("mlp", input_shape=(1, 8, 8), num_classes=10, seed=1)
    path = script(start.eval(), tmp_path / "start.pt")
    out = tmp_path / "smooth.pt"
    code = run_cli("harden", "smoothing", "--model", path, "--data", "digits:train:400",
                   "--eval-data", "digits:test:100", "--epochs", "1", "--lr", "3e-3",
                   "--plan", accuracy_plan(tmp_path), "--out", out, "--quiet")
    assert code == 0
    trained, kind = load_network(out)
    assert kind == "torchscript"
    before = dict(start.named_parameters())
    assert any(not torch.equal(p, before[n]) for n, p in trained.named_parameters())
    after = json.loads((tmp_path / "smooth-report" / "after" / "report.json").read_text())
    assert after["model"]["file"]["format"] == "torchscript"
    assert "model_train_mode" not in [f["code"] for f in after["findings"]]


@pytest.mark.parametrize("flag", [["--prune", "0.5"], ["--quantize", "int8"]])
def test_compress_refuses_compiled_models_instead_of_a_silent_no_op(tmp_path, capsys, flag):
    path = script(zoo.build("mlp", input_shape=(1, 8, 8), num_classes=10).eval(),
                  tmp_path / "m.pt")
    assert run_cli("compress", "--model", path, *flag, "--data", "digits:train:200",
                   "--eval-data", "digits:test:100", "--out", tmp_path / "c.pt", "--quiet") == 2
    assert "pass its weights" in one_error_line(capsys)


def test_harden_refuses_a_model_without_float_parameters():
    model = ModelWrapper(nn.Sequential(nn.Flatten(), nn.ReLU()), num_classes=64,
                         input_shape=(1, 8, 8))
    with pytest.raises(AssayValueError, match="no trainable float parameters"):
        trainable_copy(model)


# ------------------------------------------------------------------ 4. flags' own words
@pytest.mark.parametrize("flags, expected", [
    (["--arch", "vgg99"], "--arch vgg99: unknown architecture; choose one of dp_cnn, lenet, mlp"),
    (["--std", "0"], "--std 0: every value must be positive"),
    (["--mean", "0.1", "0.2"], "--mean 0.1 0.2: 2 values for inputs of shape (1, 8, 8); "
                               "give 1 value."),
    (["--bounds", "1", "0"], "--bounds 1 0: give two finite numbers LOW < HIGH"),
    (["--mean", "nan"], "--mean nan: every value must be a finite number"),
])
def test_model_flags_are_named_in_audit_harden_and_compress(tmp_path, digits_npz, capsys, flags,
                                                            expected):
    weights = tmp_path / "w.safetensors"
    from safetensors.torch import save_file
    save_file(zoo.build("mlp", input_shape=(1, 8, 8), num_classes=10).state_dict(), str(weights))
    common = ["--data", "digits:train:200", "--eval-data", "digits:test:100", "--quiet",
              "--out", tmp_path / "m.safetensors"]
    arch = [] if "--arch" in flags else ["--arch", "mlp"]
    for argv in (audit_args(weights, digits_npz, tmp_path) + arch + flags,
                 ["harden", "smoothing", *arch, *flags, *common],
                 ["compress", "--model", weights, *arch, "--prune", "0.5", *flags, *common]):
        assert run_cli(*argv) == 2, argv
        line = one_error_line(capsys)
        assert expected in line, line
        assert "parameter of" not in line
    assert not (tmp_path / "m.safetensors").exists()


def test_distill_names_its_flag(tmp_path, capsys):
    assert run_cli("compress", "--arch", "mlp", "--distill", "vgg99", "--data", "digits:train",
                   "--quiet", "--out", tmp_path / "s.safetensors") == 2
    assert "--distill vgg99: unknown architecture" in one_error_line(capsys)


def test_library_messages_are_grammatical(tmp_path):
    with pytest.raises(AssayValueError, match=r"must hold 1 finite number\. Got"):
        ModelWrapper(Linear(), num_classes=10, input_shape=(1, 8, 8), mean=[0.1, 0.2])
    with pytest.raises(AssayValueError, match=r"must hold 1 or 3 finite numbers \(one per"):
        ModelWrapper(nn.Flatten(), num_classes=12, input_shape=(3, 2, 2), std=[1.0, 2.0])
    weights = tmp_path / "w.pt"
    torch.save(zoo.build("mlp", input_shape=(1, 8, 8), num_classes=10).state_dict(), weights)
    with pytest.raises(AssayValueError, match="The 'arch' parameter of load_network"):
        load_network(weights, arch="vgg99", input_shape=(1, 8, 8), num_classes=10)


def test_state_dict_mismatch_names_the_keys(tmp_path, digits_npz, capsys):
    wrapped = tmp_path / "dp.pt"  # saved from DataParallel: every key gains "module."
    state = zoo.build("small_cnn", input_shape=(1, 8, 8), num_classes=10).state_dict()
    torch.save({f"module.{k}": v for k, v in state.items()}, wrapped)
    assert run_cli(*audit_args(wrapped, digits_npz, tmp_path), "--arch", "small_cnn") == 2
    line = one_error_line(capsys)
    assert "missing keys: 0.weight, 0.bias, 2.weight, 2.bias and 4 more" in line
    assert "unexpected keys: module.0.weight" in line and "DataParallel" in line
    plain = tmp_path / "plain.pt"
    torch.save(state, plain)
    with pytest.raises(AssayValueError, match=r"shape mismatches: 7.weight \(10, 100\) in the "
                                              r"file, \(3, 100\) in the architecture"):
        load_network(plain, arch="small_cnn", input_shape=(1, 8, 8), num_classes=3)


# ------------------------------------------------------------------ 5. no global side effects
def test_zoo_build_leaves_the_global_random_states_alone(monkeypatch):
    reseeded = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: reseeded.append(seed))
    monkeypatch.setattr(torch.cuda, "manual_seed", lambda seed: reseeded.append(seed))
    state = torch.random.get_rng_state()
    first = zoo.build("small_cnn", input_shape=(1, 8, 8), num_classes=10, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    second = zoo.build("small_cnn", input_shape=(1, 8, 8), num_classes=10, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(first.parameters(), second.parameters()))
    assert reseeded == []  # torch.manual_seed would have reseeded every CUDA device


def test_save_writes_a_copy_and_leaves_the_model_alone(tmp_path):
    net = zoo.build("mlp", input_shape=(1, 8, 8), num_classes=10).train()
    weights = [p.clone() for p in net.parameters()]
    example = load_digits("test")
    save_network(net, tmp_path / "m.pt", example)
    assert net.training  # .eval() on the caller's module would have switched it
    assert all(torch.equal(a, b) for a, b in zip(weights, net.parameters()))
    loaded, _ = load_network(tmp_path / "m.pt")
    assert torch.allclose(loaded(example.x[:5]), net.eval()(example.x[:5]))


# ------------------------------------------------------------------ 6. help and outputs
def test_every_harden_and_compress_flag_has_help_and_a_default():
    commands = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    harden = commands.choices["harden"]
    methods = next(a for a in harden._actions if isinstance(a, argparse._SubParsersAction))
    for name, parser in [*methods.choices.items(), ("compress", commands.choices["compress"])]:
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            text = action.help or ""
            assert text, (name, action.dest)
            assert "default" in text or "required" in text, (name, action.dest, text)


def test_unwritable_outputs_are_refused_before_training(tmp_path, monkeypatch, capsys):
    import assay.core.training as training

    monkeypatch.setattr(training, "fit", lambda *a, **k: pytest.fail("trained"))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    common = ["harden", "smoothing", "--arch", "mlp", "--data", "digits:train:200",
              "--eval-data", "digits:test:100", "--quiet"]
    assert run_cli(*common, "--out", blocker / "m.safetensors") == 2
    line = one_error_line(capsys)
    assert "--out" in line and "is a file, not a directory" in line
    assert run_cli(*common, "--out", tmp_path / "m.safetensors", "--report", blocker) == 2
    line = one_error_line(capsys)
    assert "--report" in line and "is a file, not a directory" in line
    directory = tmp_path / "dir.safetensors"
    directory.mkdir()
    assert run_cli(*common, "--out", directory) == 2
    assert "is a directory" in one_error_line(capsys)


@pytest.mark.parametrize("flags, expected", [
    (["--epochs", "0"], "--epochs 0: must be >= 1."),
    (["--lr", "0"], "--lr 0: must be > 0."),
    (["--sigma", "-1"], "--sigma -1: must be > 0."),
])
def test_numeric_harden_flags_are_named(tmp_path, capsys, flags, expected):
    assert run_cli("harden", "smoothing", "--arch", "mlp", "--data", "digits:train:200",
                   "--eval-data", "digits:test:100", *flags, "--quiet",
                   "--out", tmp_path / "m.safetensors") == 2
    assert expected in one_error_line(capsys)


# ------------------------------------------------------------------ 7. file info in reports
def test_harden_audits_carry_the_model_files(tmp_path):
    start = tmp_path / "start.safetensors"
    from safetensors.torch import save_file
    save_file(zoo.build("mlp", input_shape=(1, 8, 8), num_classes=10, seed=2).state_dict(),
              str(start))
    out = tmp_path / "h.safetensors"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert run_cli("harden", "smoothing", "--model", start, "--arch", "mlp",
                       "--data", "digits:train:300", "--eval-data", "digits:test:100",
                       "--epochs", "1", "--plan", accuracy_plan(tmp_path), "--out", out,
                       "--quiet") in (0, 1)
    report = tmp_path / "h-report"
    before = json.loads((report / "before" / "report.json").read_text())["model"]
    after = json.loads((report / "after" / "report.json").read_text())["model"]
    assert before["file"]["sha256"] == file_sha256(start)
    assert after["file"]["sha256"] == file_sha256(out)
    assert before["sha256"] != before["file"]["sha256"]  # the fingerprint, not the file hash
