"""A population of models for the ``backdoor_scan`` check: half clean, half trojaned.

``--models`` (default 24) zoo ``small_cnn`` models are trained by one recipe (Adam 1e-3,
batch 128, ``--epochs`` default 15, all 60,000 training images of ``--data``, MNIST or
Fashion-MNIST). Model i, from ``--first`` (default 0) on, uses seed i. Odd models are
trojaned at rate 0.1; trojan j (the j-th odd model) has:
- the attack cycling over BadNets, Blended and WaNet;
- the target ``(3 j + 1) mod 10``, so every class is a target;
- BadNets' patch 3, 4 or 5 pixels in a cycling corner; Blended's alpha 0.2 or 0.15 and
  its own pattern; WaNet's strength 0.5 or 1.0 and its own field.
BadNets and Blended poison a fixed set. WaNet poisons every batch afresh
(``WaNet.poison_batch``, the paper's attacker): a fixed warped set is learnt more slowly
and less stably (docs/benchmarks.md, "Attacks on MNIST"). Trained models are cached in
benchmarks/.cache/population/ with their clean accuracy and attack success rate.

The check scores each model on the first 500 test images with its default settings
(Neural Cleanse 1000 steps, the maximum-margin scan 300 steps). Printed, as the TrojAI
harness scores a scanner:
- the ROC-AUC of ``trojan_probability`` (trojaned positive);
- the mean cross-entropy of it against the truth, with a 95% normal interval (random
  guessing scores 0.693; TrojAI's round target is 0.3465);
- the share of trojaned models whose ``suspected_target`` is their target.
The same for each scanner alone, and for the logistic refitted with each model left out
(leave-one-out: the held-out figure, since the shipped logistic was fitted to this
population). ``--fit`` prints the logistic fitted to all models (the coefficients the check
ships, for the MNIST population), also as the JSON the check's ``calibration`` reads.
``--time-groups`` times Neural Cleanse batched (one search of all classes) against
sequential (one class per search) on the first model.

    python benchmarks/backdoor_scan.py [--data mnist|fashion] [--models 24] [--first 0]
        [--epochs 15] [--threads 2] [--fit] [--time-groups] [--retrain]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch.nn import functional as F

from _machine import data_root, machine
from assay.attacks.poisoning import BadNets, Blended, WaNet
from assay.audit.plan import plan_from_dict
from assay.audit.runner import run_audit
from assay.core import zoo
from assay.core.data import load_data
from assay.core.inference import batched_predict
from assay.core.model import ModelWrapper
from assay.core.rng import seeded_generator
from assay.core.training import TrainConfig, cross_entropy_loss, fit
from assay.defenses.backdoor import (POPULATION_LOGISTIC, NeuralCleanse, TrojanLogistic,
                                    evidence_of)
from assay.metrics.ood import auroc

CACHE = Path(__file__).parent / ".cache" / "population"
DATA = {"mnist": "mnist", "fashion": "fashion-mnist"}
POSITIONS = ("bottom_right", "top_left", "top_right", "bottom_left")


def attack_of(i: int):
    """Model i's attack, None for a clean model."""
    if i % 2 == 0:
        return None
    j = i // 2
    target, kind = (3 * j + 1) % 10, j % 3
    if kind == 0:
        return BadNets(target=target, patch_size=3 + j % 3, position=POSITIONS[j % 4], seed=i)
    if kind == 1:
        return Blended(target=target, alpha=(0.2, 0.15)[j % 2], pattern_seed=i, seed=i)
    return WaNet(target=target, s=(0.5, 1.0)[j % 2], field_seed=i, seed=i)


def per_batch_loss(attack, num_classes: int, seed: int):
    generator = seeded_generator(seed)

    def loss(model, x, y):
        x, y = attack.poison_batch(x, y, num_classes, generator)
        return F.cross_entropy(model(x), y)
    return loss


def trained(i: int, train, test, epochs: int, retrain: bool):
    """Model i and its record (attack, clean accuracy, ASR), from the cache when possible."""
    weights, record_path = (CACHE / f"{train.name}-{i}.safetensors",
                            CACHE / f"{train.name}-{i}.json")
    net = zoo.build("small_cnn", input_shape=train.input_shape, num_classes=10, seed=i)
    attack = attack_of(i)
    if not retrain and weights.exists() and record_path.exists():
        record = json.loads(record_path.read_text())
        if record["epochs"] == epochs and record["n_train"] == len(train):
            net.load_state_dict(load_file(weights))
            return net.eval(), attack, record
    started = time.perf_counter()
    config = TrainConfig(epochs=epochs, batch_size=128, lr=1e-3, seed=i)
    if isinstance(attack, WaNet):
        fit(net, train, config, loss_fn=per_batch_loss(attack, 10, i), show_progress=False)
    else:
        data = attack.poison(train).data if attack else train
        fit(net, data, config, loss_fn=cross_entropy_loss, show_progress=False)
    net.eval()
    record = {"epochs": epochs, "n_train": len(train),
              "seconds": round(time.perf_counter() - started, 1),
              "clean_accuracy": float((batched_predict(net, test.x) == test.y).float().mean()),
              "attack": attack.name if attack else "clean",
              "target": attack.target if attack else -1, "asr": None}
    if attack is not None:
        others = test.y != attack.target
        hit = batched_predict(net, attack.apply_trigger(test.x[others])) == attack.target
        record["asr"] = float(hit.float().mean())
    CACHE.mkdir(parents=True, exist_ok=True)
    save_file(net.state_dict(), weights)
    record_path.write_text(json.dumps(record))
    return net, attack, record


def scanned(i: int, net, probe, record: dict) -> dict:
    """The check's metrics on model i (default settings), cached beside the model (for the
    same training and the same shipped logistic)."""
    path = CACHE / f"{probe.name}-{i}-scan.json"
    if path.exists():
        cached = json.loads(path.read_text())
        if (cached.get("trained"), cached.get("logistic")) == (record["seconds"],
                                                               str(POPULATION_LOGISTIC)):
            return cached
    model = ModelWrapper(net, num_classes=10, input_shape=probe.input_shape)
    plan = plan_from_dict({"checks": [{"name": "backdoor_scan"}]}, source="benchmark")
    check = run_audit(model, probe, plan, cache_dir=None, progress=False).checks[0]
    result = {"trained": record["seconds"], "logistic": str(POPULATION_LOGISTIC),
              "metrics": check.metrics,
              "seconds": check.details["seconds_per_class"]}
    path.write_text(json.dumps(result))
    return result


def scores(probabilities: list[float], truth: list[bool]) -> str:
    """ROC-AUC and the mean cross-entropy with its 95% normal interval."""
    labels = torch.tensor(truth)
    values = torch.tensor(probabilities, dtype=torch.float64)
    losses = [-math.log(max(p if t else 1 - p, 1e-12)) for p, t in zip(probabilities, truth)]
    mean = statistics.fmean(losses)
    half = 1.96 * statistics.stdev(losses) / math.sqrt(len(losses))
    return (f"ROC-AUC {auroc(values[labels], values[~labels]):.3f}; cross-entropy {mean:.4f} "
            f"[{mean - half:.4f}, {mean + half:.4f}]")


def left_out(features: list[tuple[float, float]], truth: list[bool]) -> list[float]:
    """Each model's probability from the logistic fitted to all the other models."""
    out = []
    for i in range(len(features)):
        rest = [k for k in range(len(features)) if k != i]
        fitted = TrojanLogistic.fit([features[k] for k in rest], [truth[k] for k in rest])
        out.append(fitted.probability(features[i]))
    return out


def time_groups(net, probe) -> None:
    """Neural Cleanse on one model: one batched search of all classes against one search
    per class, the same draws."""
    scanner = NeuralCleanse()
    batched = scanner.scan(net, probe)
    sequential = scanner.scan(net, probe, groups=10)
    ratio = sequential.seconds_per_class / batched.seconds_per_class
    print(f"Neural Cleanse, 1000 steps, 10 classes: batched {batched.seconds_per_class:.2f} "
          f"s/class ({10 * batched.seconds_per_class:.1f} s), sequential "
          f"{sequential.seconds_per_class:.2f} s/class: batched is {ratio:.2f}x faster; "
          f"anomaly index {batched.anomaly_index:.3f} vs {sequential.anomaly_index:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=24)
    parser.add_argument("--first", type=int, default=0, help="the first model's index (seed)")
    parser.add_argument("--data", choices=sorted(DATA), default="mnist")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fit", action="store_true")
    parser.add_argument("--time-groups", action="store_true")
    parser.add_argument("--retrain", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train = load_data(f"{DATA[args.data]}:train", data_root=data_root())
    test = load_data(f"{DATA[args.data]}:test", data_root=data_root())
    probe = test.subset(500)
    print(f"{machine()}; {args.models} small_cnn models (from {args.first}) on {len(train)} "
          f"{train.name} images, "
          f"{args.epochs} epochs; backdoor_scan's defaults on 500 test images", flush=True)
    print(f"{'model':<22} {'CA':>6} {'ASR':>6} {'NC index':>8} {'MM p':>8} {'p':>6} "
          f"{'suspect':>7} {'s/class NC, MM':>15}")
    truth, features, probabilities, right = [], [], [], []
    for i in range(args.first, args.first + args.models):
        net, attack, record = trained(i, train, test, args.epochs, args.retrain)
        scan = scanned(i, net, probe, record)
        metrics, seconds = scan["metrics"], scan["seconds"]
        truth.append(attack is not None)
        features.append(evidence_of(metrics["anomaly_index"], metrics["margin_p_value"]))
        probabilities.append(metrics["trojan_probability"])
        suspect = int(metrics["suspected_target"])
        if attack is not None:
            right.append(suspect == attack.target)
        name = f"{i:2d} {record['attack']}" + (f" -> {attack.target}" if attack else "")
        asr = f"{record['asr']:6.3f}" if attack else ""
        print(f"{name:<22} {record['clean_accuracy']:6.3f} {asr:>6} "
              f"{metrics['anomaly_index']:8.2f} {metrics['margin_p_value']:8.1e} "
              f"{metrics['trojan_probability']:6.3f} {suspect:7d} "
              f"{seconds['neural_cleanse']:7.2f} {seconds['max_margin']:7.2f}", flush=True)
    nc_only = [(f[0], 0.0) for f in features]
    mm_only = [(0.0, f[1]) for f in features]
    print(f"shipped logistic {POPULATION_LOGISTIC} (fitted to MNIST models 0-23): "
          f"{scores(probabilities, truth)}; suspected target right for {sum(right)} of "
          f"{len(right)} trojaned")
    for label, feats in (("both scanners", features), ("Neural Cleanse alone", nc_only),
                         ("maximum margin alone", mm_only)):
        print(f"leave-one-out logistic, {label}: {scores(left_out(feats, truth), truth)}")
    print("goals: ROC-AUC >= 0.95, cross-entropy <= 0.3465 (random 0.693)")
    if args.fit:
        fitted = TrojanLogistic.fit(features, truth)
        print(f"fitted to all {len(features)} models: {fitted}; as the check's 'calibration' "
              f"file: {json.dumps(fitted.to_dict())}")
    if args.time_groups:
        time_groups(trained(args.first, train, test, args.epochs, False)[0], probe)


if __name__ == "__main__":
    main()
