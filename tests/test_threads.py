"""The thread-count choice: timed on a fake clock, so the rule itself is what is tested."""

import pytest
import torch
from torch import nn

from assay.core.threads import (choose_threads, model_step, resolve_threads, threads_for,
                                using_threads)
from assay.errors import AssayValueError


class FakeWork:
    """A step whose duration (on a fake clock) depends on the thread count it runs on."""

    def __init__(self, seconds_by_threads):
        self.seconds_by_threads = seconds_by_threads
        self.now = 0.0
        self.calls = 0

    def clock(self):
        return self.now

    def step(self):
        self.calls += 1
        self.now += self.seconds_by_threads[torch.get_num_threads()]


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("times, expected", [
    ({1: 0.010, 2: 0.005}, 2),   # twice as fast on two threads: take them
    ({1: 0.010, 2: 0.009}, 1),   # 1.11x is below the 1.15x a second thread must earn
    ({1: 0.010, 2: 0.080}, 1),   # a busy neighbour: two threads 8x slower
])
def test_more_threads_only_when_clearly_faster(two_threads, times, expected):
    work = FakeWork(times)
    assert choose_threads(work.step, most=2, clock=work.clock) == expected
    assert torch.get_num_threads() == 2  # restored
    assert work.calls == 1 + 2 + 2 * 8  # a warm-up, one pair, then 8 more pairs


@pytest.mark.parametrize("times, expected", [({1: 1.0, 2: 0.6}, 2), ({1: 1.0, 2: 1.9}, 1)])
def test_large_steps_are_timed_once_per_count(two_threads, times, expected):
    work = FakeWork(times)
    assert choose_threads(work.step, most=2, clock=work.clock) == expected
    assert work.calls == 3


def test_one_thread_needs_no_probe():
    work = FakeWork({1: 0.01})
    assert choose_threads(work.step, most=1, clock=work.clock) == 1
    assert work.calls == 0


def test_policy_values(two_threads):
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    x = torch.rand(8, 1, 2, 2)
    assert resolve_threads(None, net, x, owner="run_audit") is None
    assert resolve_threads(1, net, x, owner="run_audit") == 1
    assert resolve_threads("auto", net, x, owner="run_audit") in (1, 2)
    for bad in (0, -1, "many", 1.5, True):
        with pytest.raises(AssayValueError, match="'threads' parameter of run_audit"):
            resolve_threads(bad, net, x, owner="run_audit")


def test_threads_are_restored_after_the_block(two_threads):
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    with threads_for(1, net, torch.rand(8, 1, 2, 2), owner="t") as used:
        assert used == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with pytest.raises(RuntimeError), using_threads(1):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == 2


def test_model_step_falls_back_to_forward_without_gradients():
    class NoGrad(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(1), requires_grad=False)

        def forward(self, x):
            return x.flatten(1).detach() * self.weight

    step = model_step(NoGrad(), torch.rand(4, 1, 2, 2))
    step()
    step()  # second call goes straight to the forward pass


def test_audit_metrics_do_not_depend_on_the_thread_count(two_threads):
    """"auto" may pick a different count on each run; the checks' numbers must not move."""
    from assay.audit.plan import plan_from_dict
    from assay.audit.runner import run_audit
    from assay.core import zoo
    from assay.core.loaders import load_digits
    from assay.core.model import ModelWrapper
    from assay.core.training import TrainConfig, fit

    train, test = load_digits("train"), load_digits("test").subset(120)
    net = zoo.build("small_cnn", input_shape=train.input_shape, num_classes=10, seed=0)
    with using_threads(1):
        fit(net, train, TrainConfig(epochs=2, batch_size=64, lr=3e-3, seed=0),
            show_progress=False)
    model = ModelWrapper(net, num_classes=10, input_shape=train.input_shape)
    plan = plan_from_dict({"checks": [
        {"name": "accuracy"},
        {"name": "robustness", "params": {"norms": ["linf", "l2"],
                                          "eps": {"linf": [0.05, 0.1], "l2": [0.5]},
                                          "mode": "quick"}},
        {"name": "corruptions", "params": {"corruptions": ["gaussian_noise", "zoom_blur"],
                                           "severities": [1, 3]}},
        {"name": "calibration"}]})
    runs = [run_audit(model, test, plan, train_data=train, progress=False, threads=count)
            for count in (1, 2)]
    for one, two in zip(*(run.checks for run in runs), strict=True):
        assert one.status != "error", one.error
        assert one.metrics == two.metrics, one.id
    assert torch.get_num_threads() == 2
