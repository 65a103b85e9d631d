"""DP-SGD: the cost of privacy in time (assay against Opacus) and in accuracy (MNIST).

Speed: seconds of one epoch's steps (forward, per-sample gradients, clipping, noise,
optimizer step; data loading and evaluation left out) of the zoo's ``lenet`` on
``--speed-images`` MNIST training images, batch ``--batch-size``, in one process on
``--threads`` threads:
- assay without privacy (``fit``'s ``gradient_step``) and with DP-SGD (``DPSGDStep``
  under Poisson sampling),
- plain PyTorch and Opacus's default mode (``PrivacyEngine.make_private``, per-sample
  gradients by hooks, Poisson sampling), on the same network, data and batch size,
and each private/non-private ratio. Issue 14: Opacus hooks measured 8.6x slower than
non-private on this CPU; goal: assay at most 3x.

Accuracy: ``--arch`` (default ``lenet``) trained with ``train_dp_sgd`` at delta 1e-5 to
each epsilon of ``--epsilons`` (noise calibrated by the RDP accountant; Opacus's
accountant's epsilon for the same run printed beside it), test accuracy and training
time. Without ``--full``: on ``--n-train`` images for ``--epochs`` epochs, one run (a smoke
test); with ``--full``: the 60,000 training and 10,000 test images, ``--runs`` runs
(default 10) a target, their mean and standard deviation; run k seeds the network's
initialisation and the Poisson sampling with k.
Opacus's published MNIST figures: 94.63% at epsilon 1.16, 96.78% at 2.91, 97.09% at 6.86.
``--arch dp_cnn --optimizer sgd --lr 0.05`` (the zoo's tanh CNN of Papernot et al. 2021,
SGD with momentum 0.9) is the recipe docs/benchmarks.md reports; LeNet's 3.2M weights
and small_cnn's 160k leave DP noise too much to drown.

Usage: python benchmarks/dp_sgd.py [--full] [--speed-images 10000] [--batch-size 256]
       [--epochs 15] [--runs 10] [--epsilons 1.16 2.91 6.86] [--threads 1]
       [--arch lenet|small_cnn] [--optimizer adam|sgd] [--lr 1e-3]
MNIST is read from $ASSAY_DATA_DIR (default ../shared/data).
"""

from __future__ import annotations

import argparse
import math
import time
from statistics import mean, stdev

import torch
from torch import nn

from _machine import data_root, machine
from assay.core import zoo
from assay.core.data import load_data
from assay.core.training import TrainConfig, cross_entropy_loss, fit, gradient_step
from assay.defenses.dp import DPSGDStep, PoissonSampler, train_dp_sgd

DELTA = 1e-5


class StepTimer:
    """A ``step_fn`` that times the step it wraps (the seconds of the update alone)."""

    def __init__(self, step) -> None:
        self.step, self.seconds = step, 0.0

    def __call__(self, model, x, y, loss_fn, optimizer):
        started = time.perf_counter()
        loss = self.step(model, x, y, loss_fn, optimizer)
        self.seconds += time.perf_counter() - started
        return loss


def lenet() -> nn.Module:
    return zoo.build("lenet", input_shape=(1, 28, 28), num_classes=10, seed=0)


def assay_epoch(train, batch_size: int, private: bool, clip: float, sigma: float) -> float:
    config = TrainConfig(epochs=1, batch_size=batch_size, optimizer="sgd", lr=0.05)
    sampler = None
    step = gradient_step
    if private:
        steps = math.ceil(len(train) / batch_size)
        sampler = PoissonSampler(sample_rate=batch_size / len(train), steps_per_epoch=steps,
                                 seed=0)
        step = DPSGDStep(max_grad_norm=clip, noise_multiplier=sigma,
                         expected_batch_size=batch_size, seed=1)
    timer = StepTimer(step)
    fit(lenet(), train, config, step_fn=timer, sampler=sampler, show_progress=False)
    return timer.seconds


def opacus_epoch(train, batch_size: int, private: bool, clip: float, sigma: float) -> float:
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    model = lenet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loader = DataLoader(TensorDataset(train.x, train.y), batch_size=batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    if private:
        model, optimizer, loader = PrivacyEngine(accountant="rdp").make_private(
            module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=sigma,
            max_grad_norm=clip, poisson_sampling=True)
    model.train()
    seconds = 0.0
    for x, y in loader:
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        cross_entropy_loss(model, x, y).backward()
        optimizer.step()
        seconds += time.perf_counter() - started
    return seconds


def speed(args) -> None:
    train = load_data(f"mnist:train:{args.speed_images}", data_root=data_root())
    print(f"\nspeed: one epoch of lenet steps on {len(train)} MNIST images, batch "
          f"{args.batch_size}, clip {args.clip}, sigma {args.sigma}")
    warm_up = train.subset(2 * args.batch_size)  # first calls pay for allocation and setup
    for name, epoch in (("assay", assay_epoch), ("opacus (hooks)", opacus_epoch)):
        for private in (False, True):
            epoch(warm_up, args.batch_size, private, args.clip, args.sigma)
        plain = epoch(train, args.batch_size, False, args.clip, args.sigma)
        private = epoch(train, args.batch_size, True, args.clip, args.sigma)
        print(f"  {name:15s} non-private {plain:7.2f} s   private {private:7.2f} s   "
              f"ratio {private / plain:5.2f}x")


def accuracy(args) -> None:
    from opacus.accountants import RDPAccountant

    root = data_root()
    n_train, n_test = (60000, 10000) if args.full else (args.n_train, args.n_test)
    runs = args.runs if args.full else 1
    train = load_data(f"mnist:train:{n_train}", data_root=root)
    test = load_data(f"mnist:test:{n_test}", data_root=root)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size,
                         optimizer=args.optimizer, lr=args.lr)
    print(f"\naccuracy: {args.arch} on {len(train)} MNIST images, {args.epochs} epochs, expected "
          f"batch {args.batch_size}, clip {args.clip}, {args.optimizer} lr {args.lr}, "
          f"delta {DELTA:g}, {runs} run(s) a target, tested on {len(test)} images")
    for target in args.epsilons:
        scores, seconds = [], []
        for run in range(runs):
            net = zoo.build(args.arch, input_shape=(1, 28, 28), num_classes=10, seed=run)
            started = time.perf_counter()
            result = train_dp_sgd(net, train, epsilon=target, delta=DELTA,
                                  max_grad_norm=args.clip, config=config, seed=run,
                                  show_progress=False)
            seconds.append(time.perf_counter() - started)
            with torch.no_grad():
                predicted = torch.cat([net(x).argmax(1) for x in test.x.split(1000)])
            scores.append(float((predicted == test.y).float().mean()))
            if runs > 1:  # a full target takes many minutes: show each run as it ends
                print(f"    epsilon {target:g} run {run}: {100 * scores[-1]:.2f}% in "
                      f"{seconds[-1]:.0f} s", flush=True)
        g = result.guarantee
        theirs = RDPAccountant()
        theirs.history = [(g.noise_multiplier, g.sample_rate, g.steps)]
        print(f"  epsilon {target:5.2f}: sigma {g.noise_multiplier:.4f}, {g.steps} steps at "
              f"q {g.sample_rate:.4g}, assay epsilon {g.epsilon:.4f} (Opacus RDP "
              f"{theirs.get_epsilon(DELTA):.4f}); accuracy {100 * mean(scores):.2f}% "
              f"(sd {100 * (stdev(scores) if runs > 1 else 0.0):.2f}, min "
              f"{100 * min(scores):.2f}, max {100 * max(scores):.2f}), "
              f"{mean(seconds):.1f} s a run")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true",
                        help="the accuracy runs on all of MNIST, --runs runs a target")
    parser.add_argument("--speed-images", type=int, default=10000)
    parser.add_argument("--n-train", type=int, default=10000, help="without --full")
    parser.add_argument("--n-test", type=int, default=2000, help="without --full")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--runs", type=int, default=10, help="with --full")
    parser.add_argument("--epsilons", type=float, nargs="+", default=[1.16, 2.91, 6.86])
    parser.add_argument("--clip", type=float, default=1.0)
    parser.add_argument("--sigma", type=float, default=1.0, help="noise of the speed runs")
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default="adam")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--arch", default="lenet", help="the accuracy runs' zoo network")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-accuracy", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(machine())
    if not args.skip_speed:
        speed(args)
    if not args.skip_accuracy:
        accuracy(args)


if __name__ == "__main__":
    main()
