"""Data-side backdoor defenses and STRIP, assay against ART, on the same poisoned model
and data.

MNIST training images (``--n-train``, default 10,000) are poisoned by BadNets (target
0, ``--rate`` default 0.03 of the set, about a quarter of the target label) and the zoo
``small_cnn`` is trained on them (``--epochs`` default 3, Adam 1e-3, batch 128, seed 0).
Then, on that model and the poisoned set, in one process:

- assay ``SpectralSignatures(expected_rate=E)`` and ART ``SpectralSignatureDefense(
  expected_pp_poison=E, eps_multiplier=1.5)`` (E = ``--expected-rate``, default 0.3: an
  upper bound on the poisoned share of a label). assay reads the penultimate features,
  ART the activations of the classifier's last layer (the logits of a Sequential model).
- assay ``ActivationClustering()`` (ICA to 10 dims, 2-means, a cluster of at most 35% of
  its label flagged) and ART ``ActivationDefence.detect_poison(nb_clusters=2,
  nb_dims=10, reduce="FastICA", cluster_analysis="smaller")``.

Printed per method: TPR and FPR of the flagged samples against the truly poisoned ones,
and seconds. Then STRIP on the poisoned model (see ``strip_rows``): assay's ``STRIP`` at
20 overlays (ART's default) and 100 (the paper's), and ART's ``STRIP`` defence with its
defaults (20 samples, "false_acceptance_rate" 0.01, which ART uses as the clean quantile),
each with its false rejection rate on clean inputs, its false acceptance rate on triggered
ones, and seconds to fit and to detect. ART blends each overlay at alpha 0.5 (the paper
sums and clips) and takes scipy's entropy along axis 0 of the [samples, classes]
predictions (across the overlays, per class; the paper's entropy is across the classes,
per overlay). Then Neural Cleanse (``NeuralCleanse()``, its defaults: 1,000 steps of 32
images per class, all 10 classes in one batched search) on 500 clean test images, for the
poisoned model and for the same recipe trained on clean data: anomaly index, the
suspected target, seconds and seconds per class (issue 13's target: under 60 s for a
10-class MNIST model). ART's NeuralCleanse takes Keras models only. ART is a test and
benchmark dependency only.

    python benchmarks/backdoor_defenses.py [--n-train 10000] [--rate 0.03] [--epochs 3]
        [--expected-rate 0.3] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import warnings

import numpy as np
import torch
from torch import nn

from _machine import data_root, machine, timed
from assay.attacks.poisoning import BadNets
from assay.core import zoo
from assay.core.data import load_data
from assay.core.training import TrainConfig, fit
from assay.defenses.backdoor import (STRIP, ActivationClustering, NeuralCleanse,
                                    SpectralSignatures)


def rates(flagged: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    return float(flagged[truth].mean()), float(flagged[~truth].mean())


def strip_rows(net, attack) -> None:
    """STRIP, assay against ART, on the poisoned model: both fit on the first 2,000 test
    images at a 1% false rejection rate; FRR on the next 1,000 clean test images, FAR (the
    triggered inputs let through) on the 1,000 after, triggered, those of classes 1-9."""
    os.environ["TQDM_DISABLE"] = "1"  # ART's mitigate() draws a progress bar
    from art.defences.transformer.poisoning import STRIP as ArtSTRIP
    from art.estimators.classification import PyTorchClassifier

    test = load_data("mnist:test:4000", data_root=data_root())
    fit_part = test.take(torch.arange(2000))
    fit_x, clean_x = fit_part.x, test.x[2000:3000]
    rest = test.take(torch.arange(3000, 4000))
    triggered = attack.apply_trigger(rest.x[rest.y != attack.target])
    print(f"STRIP: fitted on {len(fit_x)} clean test images, FRR on {len(clean_x)} clean, "
          f"FAR on {len(triggered)} triggered")
    print(f"{'method':<34} {'FRR':>6} {'FAR':>6} {'fit s':>7} {'detect s':>9}")
    for overlays in (20, 100):
        detector, fit_s = timed(lambda n=overlays: STRIP(n_overlays=n, frr=0.01).fit(
            net, fit_part))
        rates_, detect_s = timed(lambda d=detector: d.rates(clean_x, triggered))
        print(f"{f'assay STRIP (n_overlays {overlays})':<34} {rates_['frr']:6.3f} "
              f"{rates_['far']:6.3f} {fit_s:7.2f} {detect_s:9.2f}")
    np.random.seed(0)  # ART draws its overlays from numpy's global generator
    # ART's STRIP takes the entropy of the classifier's outputs: give it probabilities
    classifier = PyTorchClassifier(nn.Sequential(net, nn.Softmax(dim=1)),
                                   loss=nn.CrossEntropyLoss(), input_shape=(1, 28, 28),
                                   nb_classes=10, clip_values=(0.0, 1.0))
    defended = ArtSTRIP(classifier)(num_samples=20, false_acceptance_rate=0.01)
    _, fit_s = timed(lambda: defended.mitigate(fit_x.numpy()))

    def abstained(x: torch.Tensor) -> np.ndarray:  # ART abstains with an all-zero row
        return ~defended.predict(x.numpy()).any(axis=1)

    (frr, far), detect_s = timed(lambda: (float(abstained(clean_x).mean()),
                                          float(1 - abstained(triggered).mean())))
    print(f"{'ART STRIP (num_samples 20)':<34} {frr:6.3f} {far:6.3f} {fit_s:7.2f} "
          f"{detect_s:9.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-train", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=0.03)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--expected-rate", type=float, default=0.3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    from art.defences.detector.poison import ActivationDefence, SpectralSignatureDefense
    from art.estimators.classification import PyTorchClassifier

    train = load_data("mnist:train", data_root=data_root()).subset(args.n_train)
    poisoned = BadNets(target=0, rate=args.rate).poison(train)
    net = zoo.build("small_cnn", input_shape=train.input_shape, num_classes=10, seed=0)
    fit(net, poisoned.data, TrainConfig(epochs=args.epochs, batch_size=128, lr=1e-3, seed=0),
        show_progress=False)
    net.eval()
    truth = np.zeros(len(train), dtype=bool)
    truth[poisoned.poisoned.numpy()] = True
    print(f"{machine()}; MNIST {len(train)} images, BadNets target 0 at rate {args.rate:g} "
          f"({int(truth.sum())} poisoned), small_cnn {args.epochs} epochs")
    x = poisoned.data.x.numpy()
    onehot = np.eye(10, dtype=np.float32)[poisoned.data.y.numpy()]
    classifier = PyTorchClassifier(net, loss=nn.CrossEntropyLoss(), input_shape=(1, 28, 28),
                                   nb_classes=10, clip_values=(0.0, 1.0))
    rows = []
    scan, seconds = timed(lambda: SpectralSignatures(expected_rate=args.expected_rate).scan(
        net, poisoned.data))
    rows.append(("assay SpectralSignatures", *rates(scan.flagged.numpy(), truth), seconds))
    art_ss = SpectralSignatureDefense(classifier, x, onehot, batch_size=256,
                                      expected_pp_poison=args.expected_rate, eps_multiplier=1.5)
    (_, clean), seconds = timed(art_ss.detect_poison)
    rows.append(("ART SpectralSignatureDefense", *rates(np.array(clean) == 0, truth), seconds))
    scan, seconds = timed(lambda: ActivationClustering().scan(net, poisoned.data))
    rows.append(("assay ActivationClustering", *rates(scan.flagged.numpy(), truth), seconds))
    art_ac = ActivationDefence(classifier, x, onehot)
    (_, clean), seconds = timed(lambda: art_ac.detect_poison(
        nb_clusters=2, nb_dims=10, reduce="FastICA", cluster_analysis="smaller"))
    rows.append(("ART ActivationDefence", *rates(np.array(clean) == 0, truth), seconds))
    print(f"{'method':<30} {'TPR':>6} {'FPR':>6} {'seconds':>8}")
    for name, tpr, fpr, seconds in rows:
        print(f"{name:<30} {tpr:6.3f} {fpr:6.3f} {seconds:8.2f}")
    strip_rows(net, BadNets(target=0, rate=args.rate))
    clean_net = zoo.build("small_cnn", input_shape=train.input_shape, num_classes=10, seed=0)
    fit(clean_net, train, TrainConfig(epochs=args.epochs, batch_size=128, lr=1e-3, seed=0),
        show_progress=False)
    probe = load_data("mnist:test:500", data_root=data_root())
    print(f"{'Neural Cleanse':<14} {'anomaly':>8} {'target':>7} {'seconds':>8} {'s/class':>8}")
    for name, model in (("poisoned", net), ("clean", clean_net.eval())):
        scan, seconds = timed(lambda model=model: NeuralCleanse().scan(model, probe))
        print(f"{name:<14} {scan.anomaly_index:8.2f} {scan.suspected_target:7d} "
              f"{seconds:8.1f} {scan.seconds_per_class:8.2f}")


if __name__ == "__main__":
    main()
