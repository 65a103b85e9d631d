"""DP-SGD (``assay.defenses.dp``): the accountant against dp-accounting and Opacus, the
per-sample gradients against a loop, clipping, noise, Poisson sampling, the validators,
the parameters, and ``assay harden dp`` on the embedded digits."""

import json
import math
import sys

import pytest
import torch
from torch import nn

from assay.cli import main
from assay.core import zoo
from assay.core.training import TrainConfig, cross_entropy_loss, fit, gradient_step
from assay.defenses.dp import (DPSGDStep, PoissonSampler, calibrate_noise, clipping_factors,
                               dp_sgd_epsilon, per_sample_gradients, per_sample_norms,
                               plan_guarantee, train_dp_sgd, validate_private_model)
from assay.defenses.dp import ghost
from assay.errors import AssayValueError, AssayWarning

dp_accounting = pytest.importorskip("dp_accounting")
opacus_accountants = pytest.importorskip("opacus.accountants")


def same_to_3_digits(a, b):
    return f"{a:.3g}" == f"{b:.3g}"


# --------------------------------------------------------------------------- accounting
def test_rdp_epsilon_equals_dp_accounting_and_opacus():
    sigma, q, delta = 1.1, 256 / 60000, 1e-5
    steps = 60 * math.ceil(60000 / 256)
    ours = dp_sgd_epsilon(sigma, q, steps, delta, "rdp")
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps)
    theirs = dp_accounting.rdp.RdpAccountant()
    theirs.compose(event)
    opacus = opacus_accountants.RDPAccountant()
    opacus.history = [(sigma, q, steps)]
    reference = [theirs.get_epsilon(delta), opacus.get_epsilon(delta)]
    assert all(same_to_3_digits(ours, r) for r in reference), (ours, reference)
    assert 2.5 < ours < 2.7


def test_pld_epsilon_equals_opacus_prv_and_dp_accounting_pld():
    sigma, q, steps, delta = 1.0, 0.02, 500, 1e-5
    ours = dp_sgd_epsilon(sigma, q, steps, delta, "pld")
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps)
    pld = dp_accounting.pld.PLDAccountant()
    pld.compose(event)
    prv = opacus_accountants.PRVAccountant()
    prv.history = [(sigma, q, steps)]
    reference = [pld.get_epsilon(delta), prv.get_epsilon(delta, eps_error=1e-3)]
    assert all(same_to_3_digits(ours, r) for r in reference), (ours, reference)
    assert ours < dp_sgd_epsilon(sigma, q, steps, delta, "rdp")  # PLD is the tighter one


@pytest.mark.parametrize("accountant, target", [("rdp", 3.0), ("pld", 1.0)])
def test_calibrated_noise_meets_the_target_and_no_less_noise_does(accountant, target):
    q, steps, delta = 0.02, 300, 1e-5  # (PLD is slow at small noise: a larger one here)
    sigma = calibrate_noise(target, delta, q, steps, accountant)
    assert dp_sgd_epsilon(sigma, q, steps, delta, accountant) <= target
    assert dp_sgd_epsilon(sigma * (1 - 2e-3), q, steps, delta, accountant) > target
    if accountant == "rdp":
        from opacus.accountants.utils import get_noise_multiplier

        theirs = get_noise_multiplier(target_epsilon=target, target_delta=delta,
                                      sample_rate=q, steps=steps, accountant="rdp")
        assert sigma == pytest.approx(theirs, rel=0.01)


def test_missing_dp_accounting_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "dp_accounting", None)
    with pytest.raises(AssayValueError, match=r"pip install 'assay\[privacy\]'"):
        dp_sgd_epsilon(1.0, 0.01, 10, 1e-5)


@pytest.mark.parametrize("kwargs, name", [
    ({"epsilon": 0.0}, "epsilon"), ({"epsilon": -1.0}, "epsilon"),
    ({"epsilon": math.inf}, "epsilon"), ({"delta": 0.0}, "delta"), ({"delta": 1.0}, "delta"),
    ({"delta": 1.5}, "delta"), ({"max_grad_norm": 0.0}, "max_grad_norm"),
    ({"max_grad_norm": -1.0}, "max_grad_norm"), ({"noise_multiplier": 0.0}, "noise_multiplier"),
    ({"accountant": "gdp"}, "accountant")])
def test_bad_parameters_are_refused_by_name(kwargs, name):
    settings = {"epsilon": 1.0, "delta": 1e-5, "config": TrainConfig(epochs=1, batch_size=64),
                **kwargs}
    with pytest.raises(AssayValueError, match=f"'{name}' parameter"):
        plan_guarantee(1000, **settings)
    with pytest.raises(AssayValueError, match=f"'{name}' parameter"):
        from assay.workflows import PrivateTraining

        PrivateTraining(**{k: v for k, v in settings.items() if k != "config"})


def test_a_noise_multiplier_that_spends_more_than_the_claim_is_refused():
    config = TrainConfig(epochs=2, batch_size=64)
    with pytest.raises(AssayValueError, match="raise it to at least"):
        plan_guarantee(1000, epsilon=1.0, delta=1e-5, config=config, noise_multiplier=0.3)
    enough = plan_guarantee(1000, epsilon=1.0, delta=1e-5, config=config)
    with pytest.warns(AssayWarning, match="not below 1 / 1000"):
        plan_guarantee(1000, epsilon=1.0, delta=1e-2, config=config)
    assert enough.epsilon <= 1.0 and enough.steps == 2 * 16 and enough.sample_rate == 0.064
    assert enough.poisson_sampling and enough.to_dict()["noise_multiplier"] > 0.3


# ------------------------------------------------------------------ per-sample gradients
@pytest.fixture(scope="module")
def batch(digits):
    train, _ = digits
    return train.x[:24], train.y[:24]


@pytest.mark.parametrize("arch", ["small_cnn", "mlp"])
def test_per_sample_gradients_equal_a_loop_of_single_samples(arch, batch):
    net = zoo.build(arch, input_shape=(1, 8, 8), num_classes=10, seed=0)
    x, y = batch
    grads, losses = per_sample_gradients(net, x, y)
    for i in range(len(y)):
        net.zero_grad()
        loss = cross_entropy_loss(net, x[i:i + 1], y[i:i + 1])
        loss.backward()
        assert float(losses[i]) == pytest.approx(float(loss.detach()), abs=1e-6)
        for name, p in net.named_parameters():
            torch.testing.assert_close(grads[name][i], p.grad, atol=1e-6, rtol=0)


@pytest.mark.parametrize("arch", ["small_cnn", "mlp"])
def test_the_layerwise_clipped_sum_equals_the_vmap_one(arch, batch):
    net = zoo.build(arch, input_shape=(1, 8, 8), num_classes=10, seed=0)
    x, y = batch
    assert ghost.supports(net, cross_entropy_loss)
    grads, losses = per_sample_gradients(net, x, y)
    norms = per_sample_norms(grads)
    clip = float(norms.median())  # half the samples clipped
    factors = clipping_factors(norms, clip)
    summed, ghost_norms, ghost_losses = ghost.clipped_gradient_sum(net, x, y, clip)
    torch.testing.assert_close(ghost_norms, norms, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ghost_losses, losses, atol=1e-6, rtol=0)
    for name, g in grads.items():
        expected = torch.einsum("b,b...->...", factors, g)
        torch.testing.assert_close(summed[name], expected, atol=1e-6, rtol=1e-5)


class BatchCentre(nn.Module):
    """Mixes the samples of a batch: no layer-wise shortcut may be taken through it."""

    def forward(self, x):
        return x - x.mean(0, keepdim=True)


def test_the_layerwise_sum_is_only_taken_through_known_samplewise_modules(batch):
    from assay.core.model import ModelWrapper

    net = zoo.build("small_cnn", input_shape=(1, 8, 8), num_classes=10, seed=0)
    assert ghost.supports(ModelWrapper(net, num_classes=10, input_shape=(1, 8, 8)),
                          cross_entropy_loss)
    mixing = nn.Sequential(nn.Flatten(), BatchCentre(), nn.Linear(64, 10))
    assert not ghost.supports(mixing, cross_entropy_loss)
    assert not ghost.supports(net, lambda model, x, y: cross_entropy_loss(model, x, y))
    x, y = batch  # through torch.func each sample runs alone: centred to zero
    summed, _ = DPSGDStep(max_grad_norm=1e9, noise_multiplier=0.0,
                          expected_batch_size=len(y)).clipped_sum(mixing, x, y,
                                                                   cross_entropy_loss)
    assert float(summed["2.weight"].abs().max()) < 1e-5


def test_a_reused_layer_falls_back_to_vmap(batch):
    layer = nn.Linear(64, 10)
    net = nn.Sequential(nn.Flatten(), layer, nn.Tanh(), nn.Linear(10, 64), layer)
    x, y = batch
    assert ghost.clipped_gradient_sum(net, x, y, 1.0) is None
    torch.manual_seed(0)
    step = DPSGDStep(max_grad_norm=1e9, noise_multiplier=0.0, expected_batch_size=len(y))
    summed, _ = step.clipped_sum(net, x, y, cross_entropy_loss)
    net.zero_grad()
    (cross_entropy_loss(net, x, y) * len(y)).backward()
    for name, p in net.named_parameters():
        torch.testing.assert_close(summed[name], p.grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", ["auto", "vmap"])
def test_clipping_bounds_every_per_sample_norm(method, batch):
    net = zoo.build("small_cnn", input_shape=(1, 8, 8), num_classes=10, seed=0)
    x, y = batch
    grads, _ = per_sample_gradients(net, x, y)
    clip = 0.1
    factors = clipping_factors(per_sample_norms(grads), clip)
    clipped = {name: g * factors.view(-1, *[1] * (g.dim() - 1)) for name, g in grads.items()}
    assert bool((per_sample_norms(clipped) <= clip * (1 + 1e-5)).all())
    assert bool((per_sample_norms(grads) > clip).all())  # so every one was clipped
    # the step's sum has norm at most len(y) * C
    step = DPSGDStep(max_grad_norm=clip, noise_multiplier=0.0, expected_batch_size=len(y),
                     method=method)
    summed, _ = step.clipped_sum(net, x, y, cross_entropy_loss)
    assert float(per_sample_norms({k: v[None] for k, v in summed.items()})) <= len(y) * clip


@pytest.mark.parametrize("method", ["auto", "vmap"])
def test_no_noise_and_a_huge_clip_reproduce_the_plain_averaged_gradient(method, batch):
    x, y = batch
    nets = [zoo.build("small_cnn", input_shape=(1, 8, 8), num_classes=10, seed=0)
            for _ in range(2)]
    optimizers = [torch.optim.SGD(n.parameters(), lr=0.1) for n in nets]
    gradient_step(nets[0], x, y, cross_entropy_loss, optimizers[0])
    DPSGDStep(max_grad_norm=1e9, noise_multiplier=0.0, expected_batch_size=len(y),
              method=method)(nets[1], x, y, cross_entropy_loss, optimizers[1])
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-5)


def test_the_noise_has_the_stated_scale(batch):
    x, y = batch
    net = zoo.build("mlp", input_shape=(1, 8, 8), num_classes=10, seed=0)
    sigma, clip = 2.0, 0.5
    step = DPSGDStep(max_grad_norm=clip, noise_multiplier=sigma, expected_batch_size=len(y),
                     seed=0)
    summed, _ = step.clipped_sum(net, x, y, cross_entropy_loss)
    step(net, x, y, cross_entropy_loss, torch.optim.SGD(net.parameters(), lr=0.0))
    noise = torch.cat([(p.grad * len(y) - summed[n]).flatten()
                       for n, p in net.named_parameters()])
    assert noise.std() == pytest.approx(sigma * clip, rel=0.02)  # 84k draws
    assert abs(float(noise.mean())) < 0.01


def test_poisson_sampling_draws_each_sample_at_the_rate_and_repeats():
    batches = PoissonSampler(sample_rate=0.1, steps_per_epoch=200, seed=3)(1000)
    sizes = torch.tensor([len(b) for b in batches], dtype=torch.float)
    assert len(batches) == 200 and sizes.mean() == pytest.approx(100, rel=0.03)
    assert sizes.std() > 5  # variable sizes: Poisson, not fixed batches
    again = PoissonSampler(sample_rate=0.1, steps_per_epoch=200, seed=3)(1000)
    assert all(torch.equal(a, b) for a, b in zip(batches, again))
    assert not torch.equal(batches[0], PoissonSampler(sample_rate=0.1, steps_per_epoch=1,
                                                      seed=4)(1000)[0])


def test_an_empty_poisson_batch_is_a_noise_only_step(batch):
    x, y = batch
    net = zoo.build("mlp", input_shape=(1, 8, 8), num_classes=10, seed=0)
    step = DPSGDStep(max_grad_norm=1.0, noise_multiplier=1.0, expected_batch_size=8, seed=0)
    loss = step(net, x[:0], y[:0], cross_entropy_loss, torch.optim.SGD(net.parameters(), lr=0.1))
    assert float(loss) == 0.0 and all(p.grad.abs().sum() > 0 for p in net.parameters())


# ------------------------------------------------------------------------------ training
def test_seeded_private_training_repeats_and_learns(digits):
    train, test = digits
    config = TrainConfig(epochs=4, batch_size=64, lr=3e-3)
    weights, results = [], []
    for seed in (0, 0, 1):
        net = zoo.build("small_cnn", input_shape=(1, 8, 8), num_classes=10, seed=0)
        results.append(train_dp_sgd(net, train, epsilon=8.0, delta=1e-4, config=config,
                                    seed=seed, show_progress=False))
        weights.append(torch.cat([p.detach().flatten() for p in net.parameters()]))
    assert torch.equal(weights[0], weights[1]) and not torch.equal(weights[0], weights[2])
    guarantee = results[0].guarantee
    assert guarantee.epsilon <= 8.0 and guarantee.steps == 4 * math.ceil(len(train) / 64)
    assert guarantee.sample_rate == pytest.approx(64 / len(train))
    assert results[0].history.train_accuracy[-1] > 0.5  # chance is 0.1


def test_fit_with_a_sampler_sees_its_batches(digits):
    train, _ = digits
    seen = []

    def sampler(n, generator):
        return [torch.arange(0, n, 2), torch.arange(1, n, 2)[:10]]

    def step(model, x, y, loss_fn, optimizer):
        seen.append(len(y))
        return gradient_step(model, x, y, loss_fn, optimizer)

    net = zoo.build("mlp", input_shape=(1, 8, 8), num_classes=10, seed=0)
    fit(net, train, TrainConfig(epochs=2), step_fn=step, sampler=sampler, show_progress=False)
    assert seen == [(len(train) + 1) // 2, 10] * 2


# ---------------------------------------------------------------------------- validators
def test_batchnorm_is_refused_with_groupnorm_named_for_every_layer():
    net = zoo.build("resnet", input_shape=(1, 8, 8), num_classes=10, seed=0)
    count = sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    with pytest.raises(AssayValueError) as info:
        validate_private_model(net)
    message = str(info.value)
    assert message.count("replace it with GroupNorm") == count >= 2 and "BatchNorm2d" in message


def test_other_layers_without_per_sample_gradients_are_refused_together():
    net = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.InstanceNorm1d(4,
                        track_running_stats=True))
    with pytest.raises(AssayValueError) as info:
        validate_private_model(net)
    message = str(info.value)
    assert "GroupNorm" in message and "track_running_stats=False" in message
    scripted = torch.jit.script(nn.Sequential(nn.Linear(4, 4), nn.ReLU()))
    with pytest.raises(AssayValueError, match="compiled model"):
        validate_private_model(scripted)


# --------------------------------------------------------------------------------- CLI
def test_harden_dp_writes_the_guarantee_in_the_comparison(tmp_path):
    out = tmp_path / "dp.safetensors"
    code = main(["harden", "dp", "--arch", "small_cnn", "--data", "digits:train",
                 "--eval-data", "digits:test", "--epsilon", "8", "--delta", "1e-4",
                 "--epochs", "3", "--batch-size", "64", "--lr", "3e-3", "--out", str(out),
                 "--quiet"])
    assert code in (0, 1) and out.is_file()
    comparison = json.loads((tmp_path / "dp-report" / "comparison.json").read_text())
    privacy = comparison["training"]["privacy"]
    assert set(privacy) >= {"epsilon", "delta", "accountant", "noise_multiplier",
                            "max_grad_norm", "sample_rate", "steps", "poisson_sampling"}
    assert privacy["epsilon"] <= 8 and privacy["delta"] == 1e-4 and privacy["poisson_sampling"]
    assert "privacy" in (tmp_path / "dp-report" / "comparison.html").read_text()


@pytest.mark.parametrize("flags, words", [
    (["--arch", "resnet", "--epsilon", "1", "--delta", "1e-5"], "GroupNorm"),
    (["--arch", "small_cnn", "--epsilon", "0", "--delta", "1e-5"], "--epsilon 0"),
    (["--arch", "small_cnn", "--epsilon", "1", "--delta", "1"], "--delta 1"),
    (["--arch", "small_cnn", "--epsilon", "1", "--delta", "1e-5", "--clip", "0"], "--clip 0"),
])
def test_harden_dp_refuses_before_training(flags, words, tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    code = main(["harden", "dp", "--data", "digits:train", "--eval-data", "digits:test",
                 "--out", str(out), "--quiet", *flags])
    assert code == 2 and words in capsys.readouterr().err and not out.exists()
