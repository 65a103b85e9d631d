"""Audit inputs for the training-time pillars: --train-data (recorded with its hash), the
plan's [training] recipe (validated up front, carried to the checks), and fit's step hook
(the place a DP-SGD step goes) with the default step unchanged."""

import json
from dataclasses import replace
from importlib import resources

import numpy as np
import pytest
import torch
from torch.func import functional_call, grad, vmap

from assay import demo
from assay.audit.plan import plan_from_dict
from assay.audit.runner import run_audit
from assay.checks.accuracy import AccuracyCheck
from assay.cli import main
from assay.core import zoo
from assay.core.data import load_data
from assay.core.loaders import load_digits
from assay.core.model import ModelWrapper
from assay.core.threads import using_threads
from assay.core.training import TrainConfig, TrainingRecipe, fit
from assay.errors import AssayValueError


def weights_fingerprint(net) -> list[tuple[str, float, float]]:
    """Per weight tensor: its L2 norm and its dot product with a fixed random vector (a
    reordered or rescaled tensor changes the second even where the first stays)."""
    prints = []
    for key, value in sorted(net.state_dict().items()):
        flat = value.detach().cpu().double().flatten()
        probe = torch.randn(len(flat), generator=torch.Generator().manual_seed(0),
                            dtype=torch.float64)
        prints.append((key, float(flat.norm()), float(flat @ probe)))
    return prints


def trained(arch, seed, config, n, **hooks):
    train = load_digits("train").subset(n)
    net = zoo.build(arch, input_shape=train.input_shape, num_classes=10, seed=seed)
    with using_threads(1):  # batch reductions split over threads round differently
        fit(net, train, config, show_progress=False, **hooks)
    return net


# ------------------------------------------------------------------ fit's step hook
# The loop as it was before the hook (commit b05b2a7) gave these weights on one CPU
# thread. They were first pinned by a sha256 of the weights, which broke on another CPU
# (its kernels round differently, the code being the same); the fingerprints below were
# recorded from the same code on an AMD EPYC with AVX512 and are compared to 1e-4 of each
# tensor's norm, far above rounding and far below any change of the step.
DEFAULT_STEP_CASES = [
    ("mlp", 0, TrainConfig(epochs=2, batch_size=32, lr=1e-2, seed=3), 256),
    ("small_cnn", 1, TrainConfig(epochs=2, batch_size=48, lr=0.05, optimizer="sgd",
                                 weight_decay=1e-4, schedule="cyclic", seed=5), 192),
]
DEFAULT_STEP_FINGERPRINTS = [
    [
        ('1.bias', 1.2772963, 1.47174297),
        ('1.weight', 11.4864312, -1.78620685),
        ('3.bias', 0.82369771, 0.5926647),
        ('3.weight', 15.39602004, -11.0262714),
        ('5.bias', 0.14082116, 0.16699394),
        ('5.weight', 3.48386137, -3.74967685),
    ],
    [
        ('0.bias', 0.72502762, -1.47782266),
        ('0.weight', 2.27320791, 2.31179069),
        ('2.bias', 0.25898402, -0.05564049),
        ('2.weight', 3.26755974, 4.47332095),
        ('5.bias', 0.50564195, -0.67036098),
        ('5.weight', 5.7733647, 2.43500922),
        ('7.bias', 0.13597806, -0.11892163),
        ('7.weight', 1.79267047, -1.30412291),
    ],
]


@pytest.mark.parametrize("case", range(len(DEFAULT_STEP_CASES)))
def test_the_default_step_gives_the_weights_of_the_loop_before_the_hook(case):
    arch, seed, config, n = DEFAULT_STEP_CASES[case]
    got = weights_fingerprint(trained(arch, seed, config, n))
    expected = DEFAULT_STEP_FINGERPRINTS[case]
    assert [key for key, _, _ in got] == [key for key, _, _ in expected]
    for (key, norm, dot), (_, want_norm, want_dot) in zip(got, expected):
        scale = 1e-4 * max(want_norm, 1e-3)
        assert abs(norm - want_norm) <= scale and abs(dot - want_dot) <= scale, key


def test_the_step_hook_runs_once_per_batch_and_replaces_the_step():
    config = TrainConfig(epochs=3, batch_size=40, seed=1)
    before = zoo.build("mlp", input_shape=(1, 8, 8), num_classes=10, seed=0).state_dict()
    calls = []

    def no_update(model, x, y, loss_fn, optimizer):  # computes the loss, never steps
        calls.append((len(y), model.training))
        with torch.no_grad():
            return loss_fn(model, x, y)

    net = trained("mlp", 0, config, 100, step_fn=no_update)
    assert calls == [(40, True), (40, True), (20, True)] * 3
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def clipped_per_sample_step(bound, norms_seen):
    """A DP-SGD-like step (without noise): per-sample gradients by torch.func, each clipped
    to L2 norm ``bound``, averaged into .grad, then the optimizer's step."""
    def step(model, x, y, loss_fn, optimizer):
        params = {k: v.detach() for k, v in model.named_parameters()}

        def sample_loss(p, xi, yi):
            forward = lambda inputs: functional_call(model, p, (inputs,))  # noqa: E731
            return loss_fn(forward, xi[None], yi[None])

        grads = vmap(grad(sample_loss), in_dims=(None, 0, 0))(params, x, y)
        norms = torch.sqrt(sum(g.flatten(1).pow(2).sum(1) for g in grads.values()))
        scale = (bound / (norms + 1e-12)).clamp(max=1.0)
        norms_seen.append(norms * scale)
        for name, param in model.named_parameters():
            g = grads[name] * scale.view(-1, *[1] * (grads[name].dim() - 1))
            param.grad = g.mean(0)
        optimizer.step()
        with torch.no_grad():
            return loss_fn(model, x, y)
    return step


def test_a_per_sample_clipping_step_trains_through_fit():
    config = TrainConfig(epochs=2, batch_size=32, lr=0.05, optimizer="sgd", seed=2)
    default = trained("mlp", 0, config, 128)
    seen = []
    unclipped = trained("mlp", 0, config, 128, step_fn=clipped_per_sample_step(1e9, seen))
    # the mean of per-sample gradients is the batch gradient: the same training
    for key, value in default.state_dict().items():
        torch.testing.assert_close(unclipped.state_dict()[key], value, rtol=1e-4, atol=1e-5)
    seen.clear()
    clipped = trained("mlp", 0, config, 128, step_fn=clipped_per_sample_step(0.1, seen))
    assert len(seen) == 2 * 4 and max(float(n.max()) for n in seen) <= 0.1 + 1e-6
    assert any(not torch.allclose(a, b) for a, b in zip(clipped.parameters(),
                                                        default.parameters()))


# ------------------------------------------------------------------ the [training] table
def test_a_training_table_becomes_the_recipe_that_checks_receive(monkeypatch):
    plan = plan_from_dict({"checks": [{"name": "accuracy"}],
                           "training": {"arch": "mlp", "epochs": 3, "lr": 0.01,
                                        "optimizer": "sgd"}})
    assert plan.training == TrainingRecipe("mlp", TrainConfig(epochs=3, lr=0.01,
                                                              optimizer="sgd"))
    seen = []
    original = AccuracyCheck.run

    def spy(self, ctx, params):
        seen.append(ctx.training)
        return original(self, ctx, params)

    monkeypatch.setattr(AccuracyCheck, "run", spy)
    test = load_digits("test").subset(60)
    net = zoo.build("mlp", input_shape=test.input_shape, num_classes=10, seed=0).eval()
    model = ModelWrapper(net, num_classes=10, input_shape=test.input_shape)
    result = run_audit(model, test, plan, progress=False, threads=1)
    assert seen == [plan.training]
    assert result.provenance["training"] == plan.training.describe()
    assert plan_from_dict({"checks": [{"name": "accuracy"}]}).training is None


@pytest.mark.parametrize("table, named", [
    ({"arch": "vgg99"}, "'arch' must be one of"),
    ({"epochs": 3}, "'arch' must be one of"),
    ({"arch": "mlp", "epochs": "ten"}, "The 'epochs' parameter"),
    ({"arch": "mlp", "lr": -1.0}, "The 'lr' parameter"),
    ({"arch": "mlp", "optimizer": "rmsprop"}, "The 'optimizer' parameter"),
    ({"arch": "mlp", "momentum": 0.9}, "unknown key 'momentum'"),
])
def test_a_bad_training_field_is_refused_up_front(table, named):
    with pytest.raises(AssayValueError, match=named) as caught:
        plan_from_dict({"checks": [{"name": "accuracy"}], "training": table})
    assert "[training]" in str(caught.value)


def test_every_bad_training_field_is_reported_at_once():
    with pytest.raises(AssayValueError) as caught:
        plan_from_dict({"checks": [{"name": "accuracy"}],
                        "training": {"arch": "mlp", "epochs": -1, "batch_size": 0}})
    assert "'epochs'" in str(caught.value) and "'batch_size'" in str(caught.value)


# ------------------------------------------------------------------ the command line
@pytest.fixture(scope="module")
def model_and_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    test, train = load_digits("test"), load_digits("train")
    np.savez(folder / "test.npz", x=test.x[:120].numpy(), y=test.y[:120].numpy())
    np.savez(folder / "train.npz", x=train.x[:200].numpy(), y=train.y[:200].numpy())
    net = zoo.build("mlp", input_shape=(1, 8, 8), num_classes=10, seed=0).eval()
    torch.save(net.state_dict(), folder / "mlp.pt")
    plan = folder / "plan.toml"
    plan.write_text('[[checks]]\nname = "accuracy"\n')
    return folder, plan


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("assay: error: "), err
    return err[0]


def audit_argv(folder, plan, tmp_path, *extra):
    return ["audit", "--model", str(folder / "mlp.pt"), "--arch", "mlp", "--data",
            str(folder / "test.npz"), "--plan", str(plan), "--out", str(tmp_path / "r"),
            "--quiet", "--threads", "1", *extra]


def test_train_data_is_recorded_in_the_report_with_its_hash(model_and_data, tmp_path):
    folder, plan = model_and_data
    assert main(audit_argv(folder, plan, tmp_path, "--train-data",
                           str(folder / "train.npz"))) == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["data"]["train"]["sha256"] == load_data(folder / "train.npz").sha256()
    assert report["data"]["train"]["n"] == 200
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(report, json.loads(
        resources.files("assay.report").joinpath("schema.json").read_text()))


def test_without_train_data_the_report_has_none(model_and_data, tmp_path):
    folder, plan = model_and_data
    assert main(audit_argv(folder, plan, tmp_path)) == 0
    assert "train" not in json.loads((tmp_path / "r" / "report.json").read_text())["data"]


@pytest.mark.parametrize("spec, named", [
    ("nosuchset:train", "--train-data nosuchset:train"),
    ("{folder}/missing.npz", "--train-data"),
    ("digits:train:0", "--train-data digits:train:0"),
])
def test_bad_train_data_is_one_line_naming_the_flag(model_and_data, tmp_path, capsys, spec,
                                                   named):
    folder, plan = model_and_data
    spec = spec.format(folder=folder)
    assert main(audit_argv(folder, plan, tmp_path, "--train-data", spec)) == 2
    assert named in one_error_line(capsys)
    assert not (tmp_path / "r" / "report.json").exists()


def test_train_data_of_another_shape_is_refused(model_and_data, tmp_path, capsys):
    folder, plan = model_and_data
    np.savez(tmp_path / "wide.npz", x=np.zeros((20, 1, 9, 9), np.float32),
             y=np.arange(20) % 10)
    assert main(audit_argv(folder, plan, tmp_path, "--train-data", str(tmp_path / "wide.npz"))) == 2
    assert "training data" in one_error_line(capsys)


def test_a_bad_training_table_is_one_line_naming_the_field(model_and_data, tmp_path, capsys):
    folder, _ = model_and_data
    plan = tmp_path / "plan.toml"
    plan.write_text('[[checks]]\nname = "accuracy"\n\n[training]\narch = "mlp"\nbatch_size = 0\n')
    assert main(audit_argv(folder, plan, tmp_path, "--train-data",
                           str(folder / "train.npz"))) == 2
    line = one_error_line(capsys)
    assert "[training]" in line and "'batch_size'" in line


def test_the_demo_passes_its_own_train_data(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "DEMO_TRAINING", replace(demo.DEMO_TRAINING, epochs=1))  # fast
    plan = tmp_path / "plan.toml"
    plan.write_text('[[checks]]\nname = "accuracy"\n')
    out = tmp_path / "r"
    assert main(["audit", "--demo", "--plan", str(plan), "--out", str(out), "--quiet",
                 "--threads", "1"]) in (0, 1)
    report = json.loads((out / "report.json").read_text())
    train = load_digits("train")
    assert report["data"]["train"]["sha256"] == demo.with_ink_attribute(train, train).sha256()
    capsys.readouterr()
    assert main(["audit", "--demo", "--train-data", "digits:train", "--out", str(out),
                 "--quiet"]) == 2
    assert "drop --train-data" in one_error_line(capsys)


def test_the_demo_plan_carries_the_recipe_of_the_demo_model():
    assert demo.demo_plan().training == TrainingRecipe(demo.DEMO_ARCH, demo.DEMO_TRAINING)
