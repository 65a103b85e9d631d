"""Membership inference at low false-positive rates: assay's LiRA, RMIA and threshold attacks
against ART's shadow-model attack, on one overfit target (issue 14).

The target (Carlini et al. 2022's setting, small): the zoo's ``small_cnn`` trained with
Adam on ``--train-images`` (default 1000) training images of ``--data`` (default cifar10;
also fashion-mnist, mnist, or digits for a quick try; read from $ASSAY_DATA_DIR, default
../shared/data) for ``--epochs`` (default 30) epochs, so that its test accuracy is well
below its training accuracy. Members: those images; non-members: the first as many test
images. Both audits below run the ``membership_inference`` check through ``run_audit``
with the target's recipe as the plan's ``[training]`` table:

(a) ``loss``, ``confidence``, ``entropy``, ``shadow`` (Shokri et al. 2017), ``lira`` and
    ``lira_offline`` with ``--references`` reference models (default 16), the pool being
    the targets alone: each reference model trains on half of it, as many images as the
    target;
(b) ``rmia`` with ``--rmia-references`` reference models (default 2; each target is OUT
    of one of them), the pool being the targets and ``--population`` further training
    images (default 500), its population z;
(c) ART 1.20's ``MembershipInferenceBlackBox`` (random forest attack model) trained on
    the member and non-member outputs of ``--art-shadows`` (default 3) ART
    ``ShadowModels`` (``PyTorchClassifier`` of the same network, ART's own ``fit``:
    ``--epochs`` epochs, batch 64), trained on ``2 * --train-images`` training images
    beyond the members (disjoint from them), and then scored on the same targets with
    assay's metrics.

Each row prints AUC, TPR at 0.1% and 1% FPR, and the seconds of the audit (training of
the reference models included) or of ART's shadow training, attack fit and inference;
then LiRA's and RMIA's TPR at 0.1% FPR over the loss attack's. With fewer than 1,000
non-members, "TPR at 0.1% FPR" is the TPR at no false positive.

Usage (ART is for benchmarking only):

    python benchmarks/membership.py [--data cifar10] [--train-images 1000] [--epochs 30]
        [--references 16] [--rmia-references 2] [--population 500] [--art-shadows 3]
        [--threads 2] [--seed 0] [--no-art]
"""

from __future__ import annotations

import argparse
import logging
import warnings

import numpy as np
import torch
from torch import nn

from _machine import data_root, machine, timed
from assay.audit.plan import plan_from_dict
from assay.audit.runner import run_audit
from assay.core import zoo
from assay.core.data import Dataset, load_data
from assay.core.model import ModelWrapper
from assay.core.training import TrainConfig, fit
from assay.metrics.privacy import membership_metrics

ARCH, LR, BATCH = "small_cnn", 1e-3, 64


def audit(model: ModelWrapper, members: Dataset, nonmembers: Dataset, recipe: dict,
          params: dict) -> tuple[dict, float]:
    plan = plan_from_dict({"training": recipe, "checks": [
        {"name": "membership_inference", "params": {"n": len(members), **params}}]})
    result, seconds = timed(lambda: run_audit(model, nonmembers, plan, train_data=members,
                                              progress=False, threads=None))
    (check,) = result.checks
    if check.status == "error":
        raise SystemExit(f"the membership_inference check failed: {check.error}")
    return check.metrics, seconds


def art_shadow_attack(net: nn.Module, members: Dataset, nonmembers: Dataset, shadow_data: Dataset,
                      args: argparse.Namespace) -> tuple[dict, float]:
    """ART's shadow models and black-box attack; its scores measured with assay's metrics."""
    from art.attacks.inference.membership_inference import (MembershipInferenceBlackBox,
                                                            ShadowModels)
    from art.estimators.classification import PyTorchClassifier

    classes = len(members.classes)

    def classifier(module: nn.Module) -> PyTorchClassifier:
        return PyTorchClassifier(model=module, loss=nn.CrossEntropyLoss(),
                                 optimizer=torch.optim.Adam(module.parameters(), lr=LR),
                                 input_shape=members.input_shape, nb_classes=classes,
                                 clip_values=(0.0, 1.0))

    def one_hot(y: torch.Tensor) -> np.ndarray:
        return np.eye(classes, dtype=np.float32)[y.numpy()]

    def run() -> np.ndarray:
        template = classifier(zoo.build(ARCH, input_shape=members.input_shape,
                                        num_classes=classes, seed=args.seed + 7))
        shadows = ShadowModels(template, num_shadow_models=args.art_shadows,
                               random_state=args.seed)
        # ShadowModels calls fit(x, y) without epochs or batch size (ART's defaults: 10 and
        # 128): give its shadow models the target's instead.
        for shadow in shadows.get_shadow_models():
            shadow.fit = _with_defaults(shadow.fit, nb_epochs=args.epochs, batch_size=BATCH)
        (in_x, in_y, in_pred), (out_x, out_y, out_pred) = shadows.generate_shadow_dataset(
            shadow_data.x.numpy(), one_hot(shadow_data.y))
        attack = MembershipInferenceBlackBox(classifier(net), attack_model_type="rf")
        attack.fit(x=in_x, y=in_y, test_x=out_x, test_y=out_y, pred=in_pred, test_pred=out_pred)
        x = torch.cat([members.x, nonmembers.x]).numpy()
        y = one_hot(torch.cat([members.y, nonmembers.y]))
        return np.asarray(attack.infer(x, y, probabilities=True)).reshape(len(x), -1)[:, -1]

    probabilities, seconds = timed(run)
    scores = torch.from_numpy(probabilities.astype(np.float64))
    result = membership_metrics(scores[:len(members)], scores[len(members):])
    return {"auc@art": result.auc[0], "tpr_at_fpr_0.001@art": result.tpr[0.001][0],
            "tpr_at_fpr_0.01@art": result.tpr[0.01][0]}, seconds


def _with_defaults(fit_fn, **defaults):
    def wrapped(*args, **kwargs):
        return fit_fn(*args, **{**defaults, **kwargs})
    return wrapped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="cifar10")
    parser.add_argument("--train-images", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--references", type=int, default=16)
    parser.add_argument("--rmia-references", type=int, default=2)
    parser.add_argument("--population", type=int, default=500)
    parser.add_argument("--art-shadows", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-art", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning, module="art")
    print(machine())

    root, count = data_root(), args.train_images
    train, test = (load_data(f"{args.data}:{split}", data_root=root) for split in ("train", "test"))
    needed = count + max(args.population, 2 * count if not args.no_art else 0)
    if len(train) < needed or len(test) < count:
        raise SystemExit(f"{args.data} has {len(train)} training and {len(test)} test images; "
                         f"this run needs {needed} and {count}: lower --train-images")
    members, nonmembers = train.subset(count), test.subset(count)
    beyond = train.take(torch.arange(count, needed))
    recipe = {"arch": ARCH, "epochs": args.epochs, "batch_size": BATCH, "lr": LR,
              "seed": args.seed}
    net = zoo.build(ARCH, input_shape=members.input_shape, num_classes=len(members.classes),
                    seed=args.seed)
    _, train_seconds = timed(lambda: fit(net, members, TrainConfig(
        **{k: v for k, v in recipe.items() if k != "arch"}), show_progress=False))
    model = ModelWrapper(net, num_classes=len(members.classes), input_shape=members.input_shape,
                         name="overfit target")
    accuracy = {name: float((model.predict(d.x) == d.y).float().mean())
                for name, d in (("train", members), ("test", nonmembers))}
    print(f"target: {ARCH} on {count} {args.data} images, {args.epochs} epochs "
          f"({train_seconds:.1f} s): train accuracy {accuracy['train']:.3f}, "
          f"test accuracy {accuracy['test']:.3f}")

    rows: list[tuple[str, str, dict, float]] = []
    lira, seconds = audit(model, members, nonmembers, recipe, {
        "attacks": ["loss", "confidence", "entropy", "shadow", "lira", "lira_offline"],
        "reference_models": args.references})
    for attack in ("loss", "confidence", "entropy", "shadow", "lira", "lira_offline"):
        rows.append((attack, f"{args.references} refs", lira, seconds))
    population = f"/tmp/assay-membership-population-{args.seed}.npz"
    np.savez(population, x=beyond.x[:args.population].numpy(),
             y=beyond.y[:args.population].numpy())
    rmia, seconds = audit(model, members, nonmembers, recipe, {
        "attacks": ["rmia"], "reference_models": args.rmia_references,
        "reference_data": population})
    rows.append(("rmia", f"{args.rmia_references} refs", rmia, seconds))
    if not args.no_art:
        art, seconds = art_shadow_attack(net, members, nonmembers, beyond.subset(2 * count), args)
        rows.append(("art", f"{args.art_shadows} shadows", art, seconds))

    print(f"{'attack':<14}{'models':>12}{'AUC':>8}{'TPR@0.1%':>10}{'TPR@1%':>9}{'seconds':>9}")
    for attack, models, metrics, secs in rows:
        print(f"{attack:<14}{models:>12}{metrics[f'auc@{attack}']:>8.3f}"
              f"{metrics[f'tpr_at_fpr_0.001@{attack}']:>10.4f}"
              f"{metrics[f'tpr_at_fpr_0.01@{attack}']:>9.4f}{secs:>9.1f}")
    loss = lira["tpr_at_fpr_0.001@loss"]
    for attack, metrics in (("lira", lira), ("rmia", rmia)):
        tpr = metrics[f"tpr_at_fpr_0.001@{attack}"]
        ratio = f"{tpr / loss:.1f}x" if loss > 0 else ("inf" if tpr > 0 else "-")
        print(f"{attack} TPR at 0.1% FPR over the loss attack's: {ratio} "
              f"({tpr:.4f} / {loss:.4f})")


if __name__ == "__main__":
    main()
