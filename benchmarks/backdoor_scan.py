"""A population of models for the ``backdoor_scan`` check: half clean, half trojaned.

``--models`` (default 24) zoo ``small_cnn`` models are trained by one recipe (Adam 1e-3,
batch 128, ``--epochs`` default 2) on the first ``--n-train`` (default 10,000) MNIST
training images. Model i uses seed i. Odd models are trojaned at rate 0.1, with:
- the attack cycling over BadNets, Blended and WaNet;
- the target ``i mod 10``;
- BadNets' patch 3, 4 or 5 pixels in a cycling corner.

The check's scanner (Neural Cleanse, ``--steps`` default 300, on the first 500 test
images) scores each model. Printed, as the TrojAI harness scores a scanner:
- the ROC-AUC of ``trojan_probability`` (trojaned positive);
- the mean cross-entropy of it against the truth, with a 95% normal interval (random
  guessing scores 0.693; TrojAI's round target is 0.3465);
- the share of trojaned models whose ``suspected_target`` is their target.
Each model's attack success rate on the triggered test images is printed too, so that a
trojan the training did not learn can be told from a trojan the scanner missed.

    python benchmarks/backdoor_scan.py [--models 24] [--epochs 2] [--steps 300]
        [--n-train 10000] [--threads 2]
"""

from __future__ import annotations

import argparse
import math
import statistics

import torch

from _machine import data_root, machine
from assay.attacks.poisoning import BadNets, Blended, WaNet
from assay.checks.backdoor import trojan_probability
from assay.core import zoo
from assay.core.data import load_data
from assay.core.inference import batched_predict
from assay.core.training import TrainConfig, fit
from assay.defenses.backdoor import NeuralCleanse
from assay.metrics.ood import auroc

POSITIONS = ("bottom_right", "top_left", "top_right", "bottom_left")


def attack_of(i: int):
    target, kind = i % 10, (i // 2) % 3
    if kind == 0:
        return BadNets(target=target, patch_size=3 + (i // 2) % 3,
                       position=POSITIONS[(i // 2) % 4], seed=i)
    if kind == 1:
        return Blended(target=target, seed=i)
    return WaNet(target=target, seed=i)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--n-train", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train = load_data("mnist:train", data_root=data_root()).subset(args.n_train)
    test = load_data("mnist:test", data_root=data_root())
    probe = test.subset(500)
    print(f"{machine()}; {args.models} small_cnn models on {len(train)} MNIST images, "
          f"{args.epochs} epochs; Neural Cleanse {args.steps} steps on 500 test images")
    print(f"{'model':<26} {'ASR':>6} {'index':>6} {'p':>6} {'suspect':>7}")
    truth, probabilities, right = [], [], []
    for i in range(args.models):
        attack = attack_of(i) if i % 2 else None
        data = attack.poison(train).data if attack else train
        net = zoo.build("small_cnn", input_shape=train.input_shape, num_classes=10, seed=i)
        fit(net, data, TrainConfig(epochs=args.epochs, batch_size=128, lr=1e-3, seed=i),
            show_progress=False)
        net.eval()
        scan = NeuralCleanse(steps=args.steps, seed=i).scan(net, probe)
        p = trojan_probability(scan.anomaly_index)
        truth.append(attack is not None)
        probabilities.append(p)
        asr = ""
        if attack is not None:
            others = test.y != attack.target
            hit = batched_predict(net, attack.apply_trigger(test.x[others])) == attack.target
            asr = f"{float(hit.float().mean()):6.3f}"
            right.append(scan.suspected_target == attack.target)
        name = f"{i:2d} {attack.name if attack else 'clean'}" + (
            f" -> {attack.target}" if attack else "")
        print(f"{name:<26} {asr:>6} {scan.anomaly_index:6.2f} {p:6.3f} "
              f"{scan.suspected_target:7d}")
    labels = torch.tensor(truth)
    scores = torch.tensor(probabilities, dtype=torch.float64)
    losses = [-(math.log(max(p, 1e-12)) if t else math.log(max(1 - p, 1e-12)))
              for p, t in zip(probabilities, truth, strict=True)]
    mean = statistics.fmean(losses)
    half = 1.96 * statistics.stdev(losses) / math.sqrt(len(losses))
    print(f"ROC-AUC {auroc(scores[labels], scores[~labels]):.3f} (goal >= 0.95); "
          f"cross-entropy {mean:.4f} [{mean - half:.4f}, {mean + half:.4f}] (goal <= 0.3465, "
          f"random 0.693); suspected target right for {sum(right)} of {len(right)} trojaned")


if __name__ == "__main__":
    main()
