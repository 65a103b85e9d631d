"""Faster model copies for inference (assay.core.inference): same function, caller's model
untouched, a compile that fails or disagrees is dropped with a warning."""

import pytest
import torch
from torch import nn

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

    monkeypatch.setattr(torch, "compile", broken)
    net = small_cnn().eval()
    batch = torch.rand(4, 1, 8, 8)
    with pytest.warns(RuntimeWarning, match="owner: torch.compile .* no C\\+\\+ compiler"):
        forward, logits = compile_for_inference(net, batch, "owner")
    assert forward is net
    torch.testing.assert_close(logits, net(batch))


def test_a_compile_that_disagrees_is_dropped(monkeypatch):
    net = small_cnn().eval()
    monkeypatch.setattr(torch, "compile", lambda model, **kw: (lambda x: model(x) + 1e-2))
    with pytest.warns(RuntimeWarning, match="differ from the model's"):
        forward, _ = compile_for_inference(net, torch.rand(4, 1, 8, 8), "owner")
    assert forward is net


def test_short_batches_are_padded_to_the_compiled_size(monkeypatch):
    net = small_cnn().eval()
    seen = []

    def fake_compile(model, **kwargs):
        assert kwargs == {"options": {"freezing": True}, "dynamic": False}
        return lambda x: seen.append(len(x)) or model(x)

    monkeypatch.setattr(torch, "compile", fake_compile)
    forward, _ = compile_for_inference(net, torch.rand(6, 1, 8, 8), "owner")
    short = torch.rand(2, 1, 8, 8)
    out = forward(short)
    assert seen == [6, 6] and out.shape == (2, 3)
    torch.testing.assert_close(out, net(short))
