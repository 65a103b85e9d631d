"""Faster model copies for inference (assay.core.inference): same function, caller's model
untouched, a compile that fails or disagrees is dropped with a warning."""

import pytest
import torch
from torch import nn

import assay.core.inference as inference
from assay.core.inference import channels_last_copy, compile_for_inference, has_conv2d


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def test_channels_last_copy_is_the_same_function_and_leaves_the_model():
    net = small_cnn().eval()
    copy = channels_last_copy(net)
    x = torch.rand(5, 1, 8, 8)
    assert copy is not net and net[0].weight.is_contiguous()
    assert copy[0].weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(copy(x), net(x))
    assert has_conv2d(net) and not has_conv2d(nn.Linear(2, 2))


def test_a_failing_compile_falls_back_to_the_model(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler\nsecond line")

    monkeypatch.setattr(inference, "frozen_trace", broken)
    net = small_cnn().eval()
    batch = torch.rand(4, 1, 8, 8)
    with pytest.warns(RuntimeWarning, match="owner: compiling the model .* no C\\+\\+ compiler"):
        forward, logits = compile_for_inference(net, batch, "owner")
    assert forward is net
    torch.testing.assert_close(logits, net(batch))


def test_a_compile_that_disagrees_is_dropped(monkeypatch):
    net = small_cnn().eval()
    monkeypatch.setattr(inference, "frozen_trace", lambda model, batch: (lambda x: model(x) + 1e-2))
    with pytest.warns(RuntimeWarning, match="differ from the model's"):
        forward, _ = compile_for_inference(net, torch.rand(4, 1, 8, 8), "owner")
    assert forward is net


def test_short_batches_are_padded_to_the_compiled_size(monkeypatch):
    net = small_cnn().eval()
    seen = []

    def fake_compile(model, batch):
        return lambda x: seen.append(len(x)) or model(x)

    monkeypatch.setattr(inference, "frozen_trace", fake_compile)
    forward, _ = compile_for_inference(net, torch.rand(6, 1, 8, 8), "owner")
    short = torch.rand(2, 1, 8, 8)
    out = forward(short)
    assert seen == [6, 6] and out.shape == (2, 3)
    torch.testing.assert_close(out, net(short))


class FakeClock:
    """perf_counter for AutoCompiledForward: advanced only by the (fake) passes."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def timed_setup(monkeypatch, eager_seconds, compiled_seconds):
    """A model whose pass 'takes' eager_seconds and a compile whose copy takes
    compiled_seconds, on a fake clock; returns (model, compiles)."""
    clock, compiles = FakeClock(), []
    net = small_cnn().eval()

    def model(x):
        clock.now += eager_seconds
        return net(x)

    def fake_compile(fn, batch):
        compiles.append(batch.shape)

        def compiled(x):
            clock.now += compiled_seconds
            return net(x)
        return compiled

    monkeypatch.setattr(inference.time, "perf_counter", clock)
    monkeypatch.setattr(inference, "frozen_trace", fake_compile)
    return model, compiles


@pytest.mark.parametrize("compiled_seconds, choice", [(0.5, "compiled"),
                                                     (2.0, "eager after trial")])
def test_auto_compiles_a_long_run_and_keeps_it_only_if_faster(monkeypatch, compiled_seconds,
                                                              choice):
    from assay.core.inference import AutoCompiledForward

    model, compiles = timed_setup(monkeypatch, 1.0, compiled_seconds)
    forward = AutoCompiledForward(model, passes=200, compile=None, owner="t")
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        outputs = [forward(x) for _ in range(20)]
    assert len(compiles) == 1 and forward.choice == choice
    assert forward.eager_seconds == [1.0, 1.0, 1.0]  # the first (warm-up) pass is not timed
    assert len(forward.compiled_seconds) == 3
    for out in outputs:
        torch.testing.assert_close(out, outputs[0])


def test_auto_does_not_compile_a_short_run(monkeypatch):
    from assay.core.inference import AutoCompiledForward

    # after the warm-up and 3 timed passes of 1 s, 6 passes (6 s < 10 s) are left
    model, compiles = timed_setup(monkeypatch, 1.0, 0.1)
    forward = AutoCompiledForward(model, passes=10, compile=None, owner="t")
    with torch.no_grad():
        for _ in range(10):
            forward(torch.rand(4, 1, 8, 8))
    assert compiles == [] and forward.choice == "eager"


def test_compile_true_compiles_at_once_and_false_never(monkeypatch):
    from assay.core.inference import AutoCompiledForward

    model, compiles = timed_setup(monkeypatch, 1.0, 5.0)
    eager = AutoCompiledForward(model, passes=1000, compile=False, owner="t")
    forced = AutoCompiledForward(model, passes=1000, compile=True, owner="t")
    with torch.no_grad():
        for _ in range(10):
            eager(torch.rand(4, 1, 8, 8))
        assert compiles == []
        for _ in range(10):
            forced(torch.rand(4, 1, 8, 8))
    # asked for, the compiled copy is kept even though it is slower
    assert len(compiles) == 1 and forced.choice == "compiled" and eager.choice == "eager"


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 12, 12)])
def test_frozen_trace_is_the_same_function(shape):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(shape[0], 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(),
                        nn.Linear(6 * (shape[1] - 2) ** 2, 4))
    with torch.no_grad():  # a batch norm with non-trivial statistics, folded by the trace
        net[1].running_mean.uniform_(-1, 1)
        net[1].running_var.uniform_(0.5, 2)
    net = channels_last_copy(net.eval())
    batch = torch.rand(16, *shape)
    forward, logits = compile_for_inference(net, batch, "owner")
    assert forward is not net
    torch.testing.assert_close(logits, net(batch))
    other = torch.rand(5, *shape)  # shorter than the traced batch: padded
    with torch.no_grad():
        torch.testing.assert_close(forward(other), net(other), rtol=1e-4, atol=1e-5)


def test_a_random_forward_is_not_compiled():
    class Noisy(nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :3] + torch.randn(x.shape[0], 3)

    net = Noisy().eval()
    with pytest.warns(RuntimeWarning, match="differ from the model's"):
        forward, _ = compile_for_inference(net, torch.rand(8, 1, 4, 4), "owner")
    assert forward is net
