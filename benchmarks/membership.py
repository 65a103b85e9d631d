"""Membership inference at low false-positive rates: assay's LiRA, RMIA and threshold attacks
against ART's shadow-model attack, on one overfit target (issue 14).

The target (Carlini et al. 2022's setting, small): the zoo's ``small_cnn`` trained with
Adam on ``--train-images`` (default 1000) training images of ``--data`` (default cifar10;
also fashion-mnist, mnist, or digits for a quick try; read from $ASSAY_DATA_DIR, default
../shared/data) for ``--epochs`` (default 30) epochs, so that its test accuracy is well
below its training accuracy. Members: those images.

Part 1, through the ``membership_inference`` check (``run_audit`` with the target's recipe
as the plan's ``[training]`` table); non-members: the first ``--train-images`` test images:

(a) ``--check-attacks`` (default loss, confidence, entropy, shadow (Shokri et al. 2017),
    lira and lira_offline) with ``--references`` reference models (default 16), the pool
    being the targets alone: each reference model trains on half of it, as many images
    as the target;
(b) ``rmia`` (unless ``--no-check-rmia``) with ``--rmia-references`` reference models
    (default 2; each target is OUT of one of them), the pool being the targets and
    ``--population`` further training images (default 500), its population z;
(c) ART 1.20's ``MembershipInferenceBlackBox`` (random forest attack model) trained on
    the member and non-member outputs of ``--art-shadows`` (default 3) ART
    ``ShadowModels`` (``PyTorchClassifier`` of the same network, ART's own ``fit``:
    ``--epochs`` epochs, batch 64), trained on ``2 * --train-images`` training images
    beyond the members (disjoint from them), and then scored on the same targets with
    assay's metrics.

Part 2 (unless ``--no-offline``), RMIA in the paper's offline setting, where 0.1% FPR is
measurable: non-members are the first ``--nonmembers`` (default 5000) test images. Each
of ``--rmia-references`` reference models trains with the target's recipe on its own
``--train-images`` training images beyond the members (no target is in any of them);
the population z are ``--offline-population`` (default 5000) further training images that
no model trained on. The loss attack (as the check scores it, and ranked by the plain
query's phi, the same order without float32's ties at loss 0) and RMIA (1 reference
model, and all of them; ``a`` = 0.3, the default, and ``a`` tuned the paper's way: each
reference model in turn plays the target, attacked by the others, on its training images
against ``--tune-nonmembers`` (default 1000) further training images, and the ``a`` of
0, 0.1, ..., 1 with the best mean AUC wins) are scored on the same members and
non-members, each TPR with its 95% Clopper-Pearson interval.

Part 3 (unless ``--lira-models 0``), LiRA evaluated as its paper evaluates it, where 0.1%
FPR is measurable: ``--lira-models`` (default 17) models train with the target's recipe
on a membership matrix over the first ``2 * --train-images`` training images (each image
in half of them); each model in turn is the target and the other 16 its reference models
(online and offline LiRA, fixed variance, the 10 augmented queries), and the loss attack
(phi of the plain query) scores the same model. Scores are pooled over the 17 targets:
17 x 1,000 members against as many non-members.

Each row prints AUC, TPR at 0.1% and 1% FPR, and the seconds of the audit (training of
the reference models included) or of ART's shadow training, attack fit and inference;
then LiRA's and RMIA's TPR at 0.1% FPR over the loss attack's. With fewer than 1,000
non-members, "TPR at 0.1% FPR" is the TPR at no false positive.

Usage (ART is for benchmarking only):

    python benchmarks/membership.py [--data cifar10] [--train-images 1000] [--epochs 30]
        [--references 16] [--check-attacks loss,lira] [--rmia-references 2]
        [--population 500] [--nonmembers 5000] [--offline-population 5000]
        [--tune-nonmembers 1000] [--art-shadows 3] [--threads 2] [--seed 0] [--no-art]
        [--no-check-rmia] [--no-offline] [--lira-models 17]
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from typing import Literal

import numpy as np
import torch
from torch import nn

from _machine import data_root, machine, timed
from assay.attacks.privacy import image_queries, query_scores, threshold_scores
from assay.attacks.privacy.lira import LiRA
from assay.attacks.privacy.reference import (membership_matrix, reference_scores,
                                             reference_seed, train_reference)
from assay.attacks.privacy.rmia import RMIA, tune_offline_a
from assay.audit.plan import plan_from_dict
from assay.audit.runner import run_audit
from assay.core import zoo
from assay.core.data import Dataset, load_data
from assay.core.model import ModelWrapper
from assay.core.training import TrainConfig, TrainingRecipe, fit
from assay.metrics.privacy import MembershipMetrics, membership_metrics

ARCH, LR, BATCH = "small_cnn", 1e-3, 64
CHECK_ATTACKS = ("loss", "confidence", "entropy", "shadow", "lira", "lira_offline")


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


Row = tuple[str, str, MembershipMetrics, float]


def offline_rmia(model: ModelWrapper, members: Dataset, nonmembers: Dataset, train: Dataset,
                 recipe: dict, args: argparse.Namespace) -> list[Row]:
    """Part 2: the loss attack and RMIA in the paper's offline setting on the same members
    and ``nonmembers``; rows of (attack, models, MembershipMetrics, seconds)."""
    count, refs = len(members), args.rmia_references
    start = count * (1 + refs)
    population = train.take(torch.arange(start, start + args.offline_population))
    held_out = train.take(torch.arange(start + args.offline_population,
                                       start + args.offline_population + args.tune_nonmembers))
    training = TrainingRecipe(ARCH, TrainConfig(**{k: v for k, v in recipe.items()
                                                   if k != "arch"}))
    queries = image_queries(members.input_shape, True)
    x = torch.cat([members.x, nonmembers.x])
    y = torch.cat([members.y, nonmembers.y])
    n1 = len(members)

    def phi(net: torch.nn.Module, data_x: torch.Tensor, data_y: torch.Tensor) -> torch.Tensor:
        return query_scores(net, data_x, data_y, queries).cpu()

    target_x, target_z = phi(model, x, y), phi(model, population.x, population.y)
    reference_x, reference_z, own = [], [], []  # own: phi on its training images + held-out
    trained = 0.0
    for r in range(refs):
        images = train.take(torch.arange(count * (1 + r), count * (2 + r)))
        clock = time.perf_counter()
        net = train_reference(training, images, torch.ones(len(images), dtype=torch.bool),
                              model, seed=reference_seed(args.seed, r))
        trained += time.perf_counter() - clock
        reference_x.append(phi(net, x, y))
        reference_z.append(phi(net, population.x, population.y))
        own.append((images, net))
    ref_x, ref_z = torch.stack(reference_x), torch.stack(reference_z)

    # a tuned from the reference models alone: each plays the target, the others attack it
    aucs: dict[float, list[float]] = {}
    tuned = 0.3
    if refs >= 2:
        for r, (images, net) in enumerate(own):
            others = [m for m in range(refs) if m != r]
            game_x = torch.cat([images.x, held_out.x])
            game_y = torch.cat([images.y, held_out.y])
            paired_x = phi(net, game_x, game_y)
            others_x = torch.stack([phi(own[m][1], game_x, game_y) for m in others])
            member = torch.arange(len(game_x)) < len(images)
            _, by_a = tune_offline_a(RMIA(), paired_x, others_x,
                                     torch.zeros(len(others), len(game_x), dtype=torch.bool),
                                     member, reference_z[r], ref_z[others],
                                     torch.zeros(len(others), len(population), dtype=torch.bool))
            for a, auc in by_a.items():
                aucs.setdefault(a, []).append(auc)
        tuned = max(aucs, key=lambda a: sum(aucs[a]) / len(aucs[a]))
        print("a tuned on the reference models (mean AUC of each as the target): "
              + ", ".join(f"{a:g}: {sum(v) / len(v):.4f}" for a, v in aucs.items())
              + f" -> a = {tuned:g}")

    # the loss attack as the check scores it (minus the float32 cross-entropy, which is 0
    # for many members), and ranked by phi of the plain query: the same order in exact
    # arithmetic (both rise with p), without those ties
    loss = threshold_scores(model.predict_logits(x).cpu(), y, "loss")
    rows: list[Row] = [
        ("loss", "", membership_metrics(loss[:n1], loss[n1:]), 0.0),
        ("loss (phi)", "", membership_metrics(target_x[0, :n1], target_x[0, n1:]), 0.0)]
    # the authors' vote over the queries (the default), and for comparison the mean
    settings: list[tuple[int, float, Literal["vote", "mean"]]] = [(1, 0.3, "vote")]
    if refs >= 2:
        settings += [(refs, a, "vote") for a in (0.3, tuned)]
        settings += [(refs, a, "mean") for a in (0.3, tuned)]
    for models, a, aggregate in settings:
        out_x = torch.zeros(models, len(x), dtype=torch.bool)
        out_z = torch.zeros(models, len(population), dtype=torch.bool)
        clock = time.perf_counter()
        scores = RMIA(a=a, aggregate=aggregate)(target_x, ref_x[:models], out_x, target_z,
                                                ref_z[:models], out_z)
        rows.append((f"rmia a={a:g}" + (" mean" if aggregate == "mean" else ""),
                     f"{models} refs",
                     membership_metrics(scores[:n1], scores[n1:]), time.perf_counter() - clock))
    print(f"{refs} reference models trained in {trained:.1f} s")
    return rows


def print_rows(rows: list[Row]) -> None:
    print(f"{'attack':<16}{'models':>8}{'AUC':>7}{'TPR@0.1% [95% CI]':>26}"
          f"{'TPR@1% [95% CI]':>26}{'seconds':>9}")
    for attack, models, result, secs in rows:
        cells = "".join(f"{t:>10.4f} [{lo:.4f}, {hi:.4f}]"
                        for t, lo, hi in (result.tpr[0.001], result.tpr[0.01]))
        print(f"{attack:<16}{models:>8}{result.auc[0]:>7.3f}{cells}{secs:>9.1f}")


def print_ratios(rows: list[Row], loss_tpr: float, baseline: str) -> None:
    for attack, models, result, _ in rows:
        tpr = result.tpr[0.001][0]
        ratio = f"{tpr / loss_tpr:.2f}x" if loss_tpr > 0 else "-"
        print(f"{attack} ({models}) TPR at 0.1% FPR over {baseline}: {ratio} "
              f"({tpr:.4f} / {loss_tpr:.4f})")


def population_lira(model: ModelWrapper, train: Dataset, recipe: dict,
                    args: argparse.Namespace) -> list[Row]:
    """Part 3: LiRA evaluated as its paper does. ``--lira-models`` models train with the
    target's recipe on a membership matrix over a pool of ``2 * --train-images`` training
    images (each sample in half of them, so each model trains on about as many images as
    the target). Each model in turn is the target, the others its reference models; the
    scores of all the targets are pooled, its half of the pool members, the other half
    non-members. Rows of (attack, models, MembershipMetrics, seconds)."""
    count, models = 2 * args.train_images, args.lira_models
    pool = train.take(torch.arange(count))
    keep = membership_matrix(models, count, seed=args.seed + 1)
    training = TrainingRecipe(ARCH, TrainConfig(**{k: v for k, v in recipe.items()
                                                   if k != "arch"}))
    queries = image_queries(pool.input_shape, True)
    clock = time.perf_counter()
    phi = torch.stack([reference_scores(training, pool, keep[m], model, queries,
                                        seed=reference_seed(args.seed, 100 + m))["phi"]
                       for m in range(models)])  # [models, queries, samples]
    trained = time.perf_counter() - clock
    scores: dict[str, list[torch.Tensor]] = {"loss (phi)": [], "lira": [], "lira_offline": []}
    truth = []
    for t in range(models):
        others = [m for m in range(models) if m != t]
        scores["loss (phi)"].append(phi[t, 0])
        for name, attack in (("lira", LiRA()), ("lira_offline", LiRA(online=False))):
            scores[name].append(attack(phi[t], phi[others], keep[others]))
        truth.append(keep[t])
    member = torch.cat(truth)
    rows: list[Row] = []
    for name, parts in scores.items():
        score = torch.cat(parts)
        rows.append((name, f"{models - 1} refs" if name != "loss (phi)" else "",
                     membership_metrics(score[member], score[~member]), 0.0))
    print(f"{models} models trained and queried in {trained:.1f} s")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="cifar10")
    parser.add_argument("--train-images", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--references", type=int, default=16)
    parser.add_argument("--check-attacks", default=",".join(CHECK_ATTACKS),
                        help="attacks of part 1 (a), comma-separated; empty: none")
    parser.add_argument("--rmia-references", type=int, default=2)
    parser.add_argument("--population", type=int, default=500)
    parser.add_argument("--nonmembers", type=int, default=5000)
    parser.add_argument("--offline-population", type=int, default=5000)
    parser.add_argument("--tune-nonmembers", type=int, default=1000)
    parser.add_argument("--art-shadows", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-art", action="store_true")
    parser.add_argument("--no-check-rmia", action="store_true")
    parser.add_argument("--no-offline", action="store_true")
    parser.add_argument("--lira-models", type=int, default=17,
                        help="part 3's models (each the target of the others); 0 skips it")
    args = parser.parse_args()
    check_attacks = [a for a in args.check_attacks.split(",") if a]
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning, module="art")
    print(machine())

    root, count = data_root(), args.train_images
    train, test = (load_data(f"{args.data}:{split}", data_root=root) for split in ("train", "test"))
    needed = count + max(args.population, 2 * count if not args.no_art else 0)
    offline_needed = (count * (1 + args.rmia_references) + args.offline_population
                      + args.tune_nonmembers) if not args.no_offline else 0
    test_needed = max(count, args.nonmembers if not args.no_offline else 0)
    if len(train) < max(needed, offline_needed) or len(test) < test_needed:
        raise SystemExit(f"{args.data} has {len(train)} training and {len(test)} test images; "
                         f"this run needs {max(needed, offline_needed)} and {test_needed}: "
                         "lower --train-images, --nonmembers or --offline-population")
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
    results: dict[str, dict] = {}
    if check_attacks:
        lira, seconds = audit(model, members, nonmembers, recipe, {
            "attacks": check_attacks, "reference_models": args.references})
        for attack in check_attacks:
            rows.append((attack, f"{args.references} refs" if attack in (
                "shadow", "lira", "lira_offline") else "", lira, seconds))
            results[attack] = lira
    if not args.no_check_rmia:
        population = f"/tmp/assay-membership-population-{args.seed}.npz"
        np.savez(population, x=beyond.x[:args.population].numpy(),
                 y=beyond.y[:args.population].numpy())
        rmia, seconds = audit(model, members, nonmembers, recipe, {
            "attacks": ["rmia"], "reference_models": args.rmia_references,
            "reference_data": population})
        rows.append(("rmia", f"{args.rmia_references} refs", rmia, seconds))
        results["rmia"] = rmia
    if not args.no_art:
        art, seconds = art_shadow_attack(net, members, nonmembers, beyond.subset(2 * count), args)
        rows.append(("art", f"{args.art_shadows} shadows", art, seconds))

    if rows:
        print(f"part 1, the check: {count} members, {len(nonmembers)} non-members")
        print(f"{'attack':<14}{'models':>12}{'AUC':>8}{'TPR@0.1%':>10}{'TPR@1%':>9}"
              f"{'seconds':>9}")
        for attack, models, metrics, secs in rows:
            print(f"{attack:<14}{models:>12}{metrics[f'auc@{attack}']:>8.3f}"
                  f"{metrics[f'tpr_at_fpr_0.001@{attack}']:>10.4f}"
                  f"{metrics[f'tpr_at_fpr_0.01@{attack}']:>9.4f}{secs:>9.1f}")
        if "loss" in results:
            loss = results["loss"]["tpr_at_fpr_0.001@loss"]
            for attack in ("lira", "rmia"):
                if attack in results:
                    tpr = results[attack][f"tpr_at_fpr_0.001@{attack}"]
                    ratio = f"{tpr / loss:.1f}x" if loss > 0 else ("inf" if tpr > 0 else "-")
                    print(f"{attack} TPR at 0.1% FPR over the loss attack's: {ratio} "
                          f"({tpr:.4f} / {loss:.4f})")

    if not args.no_offline:
        offline = offline_rmia(model, members, test.subset(args.nonmembers), train, recipe,
                               args)
        print(f"part 2, RMIA offline (the paper's setting): {count} members, "
              f"{args.nonmembers} non-members, {args.offline_population} population z")
        print_rows(offline)
        print_ratios(offline[2:], max(row[2].tpr[0.001][0] for row in offline[:2]),
                     "the better loss row's")

    if args.lira_models:
        rows3 = population_lira(model, train, recipe, args)
        print(f"part 3, LiRA the paper's way: {args.lira_models} models on a pool of "
              f"{2 * count} images, each the target of the others, scores pooled")
        print_rows(rows3)
        print_ratios(rows3[1:], rows3[0][2].tpr[0.001][0], "the loss attack's")


if __name__ == "__main__":
    main()
