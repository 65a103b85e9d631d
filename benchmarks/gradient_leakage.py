"""Gradient leakage on MNIST (issue 14): DLG, iDLG and Inverting Gradients rebuild single
images from their gradient, and the PSNR and label recovery of a batch against its size.

Models, both untrained (the DLG and iDLG papers attack nets at initialisation, the point
where a federated round starts):
- ``dlg_lenet``: the DLG paper's LeNet for 28x28 inputs: three 5x5 convolutions of 12
  channels (strides 2, 2, 1, padding 2) with sigmoid activations and one linear layer,
  weights drawn uniformly from [-0.5, 0.5] as in the paper's code;
- ``small_cnn``: the zoo's ReLU network (two 3x3 convolutions, stride 2, and a 100-unit
  hidden layer), default PyTorch initialisation, for contrast.

Victims: the first MNIST test images of ``$ASSAY_DATA_DIR`` (default ../shared/data).

(a) single images: DLG and iDLG (``--steps`` L-BFGS steps, default 300, the papers') and
    Inverting Gradients (``--ig-steps`` Adam steps, default 24,000, the paper's; the
    labels from the gradient, one trial, its other defaults) on
    each of the first ``--images`` test images (default 8), one gradient each: mean and
    lowest PSNR, and how many labels were right;
(b) batches: the same attacks on ``--trials`` batches (default 2) of each size in
    ``--batch-sizes`` (default 1 2 4 8): mean PSNR of each true image against the
    reconstruction assigned to it, and the share of labels recovered.

Prints quality figures only (no timings). Usage:

    python benchmarks/gradient_leakage.py [--images 8] [--steps 300] [--trials 2]
        [--batch-sizes 1 2 4 8] [--ig-steps 24000] [--models dlg_lenet small_cnn]
        [--threads 1] [--seed 0]
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from _machine import data_root, machine
from assay.attacks.privacy import DLG, IDLG, InvertingGradients
from assay.core import zoo
from assay.core.data import load_data
from assay.core.model import ModelWrapper

CEILING = 100.0  # dB: an exact copy's infinite PSNR, as the gradient_leakage check counts it


def dlg_lenet(seed: int) -> nn.Module:
    """The DLG paper's LeNet (sigmoid), sized for 1x28x28 inputs."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = nn.Sequential(
            nn.Conv2d(1, 12, 5, padding=2, stride=2), nn.Sigmoid(),
            nn.Conv2d(12, 12, 5, padding=2, stride=2), nn.Sigmoid(),
            nn.Conv2d(12, 12, 5, padding=2, stride=1), nn.Sigmoid(),
            nn.Flatten(), nn.Linear(12 * 7 * 7, 10))
        for param in net.parameters():
            nn.init.uniform_(param, -0.5, 0.5)
    return net


def models(seed: int) -> dict[str, ModelWrapper]:
    nets = {"dlg_lenet": dlg_lenet(seed),
            "small_cnn": zoo.build("small_cnn", input_shape=(1, 28, 28), num_classes=10,
                                   seed=seed)}
    return {name: ModelWrapper(net, num_classes=10, input_shape=(1, 28, 28), name=name)
            for name, net in nets.items()}


def single_images(model: ModelWrapper, x: torch.Tensor, y: torch.Tensor, attacks: list) -> None:
    for attack in attacks:
        values, right = [], 0
        for i in range(len(x)):
            result = attack(model, x[i:i + 1], y[i:i + 1])
            values.append(min(float(result.psnr[0]), CEILING))
            right += int(result.labels[0]) == int(y[i])
        mean = sum(values) / len(values)
        above = sum(v > 30 for v in values)
        print(f"  {type(attack).__name__:<18} single image: PSNR mean {mean:6.1f} dB, lowest "
              f"{min(values):6.1f} dB, above 30 dB {above}/"
              f"{len(values)}, labels right {right}/{len(values)}")


def batches(model: ModelWrapper, x: torch.Tensor, y: torch.Tensor, sizes: list[int],
            trials: int, attacks: list) -> None:
    for attack in attacks:
        row = []
        for size in sizes:
            values, recovered = [], []
            for trial in range(trials):
                part = slice(trial * size, (trial + 1) * size)
                result = attack(model, x[part], y[part])
                values.append(result.psnr.clamp(max=CEILING))
                recovered.append(result.label_recovery)
            row.append(f"B={size}: {float(torch.cat(values).mean()):5.1f} dB, labels "
                       f"{sum(recovered) / len(recovered):4.0%}")
        print(f"  {type(attack).__name__:<18} " + " | ".join(row), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--ig-steps", type=int, default=24_000,
                        help="Inverting Gradients' Adam steps (0 leaves it out)")
    parser.add_argument("--models", nargs="+", default=["dlg_lenet", "small_cnn"],
                        choices=["dlg_lenet", "small_cnn"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(machine())
    needed = max(args.images, max(args.batch_sizes) * args.trials)
    data = load_data(f"mnist:test:{needed}", data_root=data_root())
    for name, model in models(args.seed).items():
        if name not in args.models:
            continue
        print(f"{name} (untrained), MNIST test images, {args.steps} L-BFGS steps, "
              f"{args.ig_steps} Inverting Gradients steps:")
        attacks = [DLG(steps=args.steps, seed=args.seed), IDLG(steps=args.steps, seed=args.seed)]
        if args.ig_steps:
            attacks.append(InvertingGradients(steps=args.ig_steps, seed=args.seed))
        single_images(model, data.x[:args.images], data.y[:args.images], attacks)
        batches(model, data.x, data.y, args.batch_sizes, args.trials, attacks)


if __name__ == "__main__":
    main()
