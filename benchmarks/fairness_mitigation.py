"""Fairness mitigation on UCI Adult (sensitive attribute: sex): the zoo MLP before and
after each of assay's mitigations, and fairlearn's ThresholdOptimizer on the same scores.

The training split ``adult:train`` (32,561 rows) is cut into a held-out part
(``--held-out``, default 20%, seeded) and the rest. On the rest, the zoo ``mlp`` with the
split's schema encoder is trained four ways through the one training loop, with the same
seed and settings:

1. unmitigated (cross-entropy);
2. reweighing (Kamiran & Calders 2012);
3. in-processing: cross-entropy plus ``--lam`` times the batch's demographic parity gap
   (``--penalty``, gap regularisation, Chuang & Mroueh 2021);
4. and 5. post-processing of the unmitigated model: group thresholds (Hardt et al. 2016)
   for demographic parity and for equalized odds, fitted on the held-out part's scores;
   fairlearn's ``ThresholdOptimizer(prefit=True, predict_method="predict_proba",
   objective="accuracy_score")`` with each constraint on the same scores.

Every row is measured on ``adult:test`` (16,281 rows): accuracy, demographic parity
difference and ratio, equalized odds difference (assay.metrics.fairness). Randomised
predictions use seed 0 (assay) and random_state 0 (fairlearn). Target: post-processing
for demographic parity reaches a ratio >= 0.8 (the four-fifths rule).

Anchor (fairlearn's quickstart, a decision tree on Adult): demographic parity difference
0.150 before and 0.016 after ExponentiatedGradient, accuracy 0.844.

Usage:

    python benchmarks/fairness_mitigation.py [--epochs 10] [--batch-size 256] [--lr 1e-3]
        [--lam 1.0] [--penalty absolute] [--held-out 0.2] [--threads 2] [--seed 0]

Adult is read from $ASSAY_DATA_DIR (default ../shared/data).
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import torch

from _machine import data_root, machine, timed
from assay.core import zoo
from assay.core.data import load_data
from assay.core.inference import batched_predict
from assay.core.training import TrainConfig, fit
from assay.defenses.fairness import (FairnessRegularisedLoss, fit_regularised, fit_reweighed,
                                     fit_thresholds, positive_class_scores)
from assay.metrics.fairness import (Groups, demographic_parity_difference,
                                    demographic_parity_ratio, equalized_odds_difference)

ATTRIBUTE = "sex"
ANCHOR = "fairlearn quickstart (decision tree): DP difference 0.150 -> 0.016 " \
         "(ExponentiatedGradient), accuracy 0.844"


def fairlearn_thresholds(constraint, scores, y, groups, test_scores, test_groups):
    """fairlearn's ThresholdOptimizer prefit on a classifier whose positive-class
    probability is the first column of X, fitted on (scores, y, groups); its predictions
    of the test scores (random_state 0)."""
    from fairlearn.postprocessing import ThresholdOptimizer
    from sklearn.base import BaseEstimator, ClassifierMixin

    class Scores(ClassifierMixin, BaseEstimator):
        def fit(self, x, y):
            self.classes_ = np.array([0, 1])
            return self

        def predict_proba(self, x):
            s = np.asarray(x, dtype=np.float64)[:, 0]
            return np.stack([1 - s, s], axis=1)

    optimizer = ThresholdOptimizer(estimator=Scores().fit(None, None), constraints=constraint,
                                   predict_method="predict_proba", prefit=True,
                                   objective="accuracy_score")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optimizer.fit(scores.double().cpu().numpy()[:, None], y.cpu().numpy(),
                      sensitive_features=groups.cpu().numpy())
        predicted = optimizer.predict(test_scores.double().cpu().numpy()[:, None],
                                      sensitive_features=test_groups.cpu().numpy(),
                                      random_state=0)
    return torch.from_numpy(np.asarray(predicted)).long()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--lam", type=float, default=1.0, help="in-processing penalty weight")
    parser.add_argument("--penalty", choices=("squared", "absolute"), default="absolute")
    parser.add_argument("--held-out", type=float, default=0.2,
                        help="share of adult:train held out for the thresholds")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = data_root()
    held_out, train = load_data("adult:train", data_root=root).split_off(args.held_out,
                                                                          seed=args.seed)
    test = load_data("adult:test", data_root=root)
    codes, names = test.attribute(ATTRIBUTE)
    groups = Groups(codes, names, ATTRIBUTE)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         seed=args.seed)
    print(f"{machine()}; Adult, sensitive attribute {ATTRIBUTE}; zoo mlp with the schema "
          f"encoder, {args.epochs} epochs, batch {args.batch_size}, Adam lr {args.lr}, "
          f"seed {args.seed}; trained on {len(train)} rows, thresholds fitted on "
          f"{len(held_out)} held-out rows, measured on {len(test)} test rows")

    def new_model() -> torch.nn.Module:
        return zoo.build("mlp", input_shape=train.input_shape, num_classes=2,
                         seed=args.seed, schema=train.schema)

    rows: list[tuple[str, torch.Tensor, float]] = []
    plain = new_model()
    _, seconds = timed(lambda: fit(plain, train, config, show_progress=False))
    rows.append(("unmitigated", batched_predict(plain, test.x, batch_size=4096), seconds))
    reweighed = new_model()
    _, seconds = timed(lambda: fit_reweighed(reweighed, train, ATTRIBUTE, config))
    rows.append(("reweighing", batched_predict(reweighed, test.x, batch_size=4096), seconds))
    regularised = new_model()
    regulariser = FairnessRegularisedLoss(lam=args.lam, penalty=args.penalty)
    _, seconds = timed(lambda: fit_regularised(regularised, train, ATTRIBUTE, regulariser,
                                               config))
    rows.append((f"in-processing (DP gap, {args.penalty}, lam {args.lam:g})",
                 batched_predict(regularised, test.x, batch_size=4096), seconds))

    held_scores = positive_class_scores(plain, held_out.x)
    test_scores = positive_class_scores(plain, test.x)
    held_groups = held_out.attributes[ATTRIBUTE]
    for constraint, label in (("demographic_parity", "DP"), ("equalized_odds", "EO")):
        rule, seconds = timed(lambda c=constraint: fit_thresholds(held_scores, held_out.y,
                                                                  held_groups, constraint=c))
        rows.append((f"thresholds for {label} (assay)", rule.predict(test_scores, codes, seed=0),
                     seconds))
        predicted, seconds = timed(lambda c=constraint: fairlearn_thresholds(
            c, held_scores, held_out.y, held_groups, test_scores, codes))
        rows.append((f"thresholds for {label} (fairlearn ThresholdOptimizer)", predicted,
                     seconds))

    print(f"{'model':<52} {'accuracy':>8} {'DP diff':>8} {'DP ratio':>8} {'EO diff':>8} "
          f"{'seconds':>8}")
    ratios = {}
    for name, predicted, seconds in rows:
        predicted = predicted.cpu()
        accuracy = float((predicted == test.y).double().mean())
        ratio = demographic_parity_ratio(test.y, predicted, groups)
        ratios[name] = ratio
        print(f"{name:<52} {accuracy:>8.4f} "
              f"{demographic_parity_difference(test.y, predicted, groups):>8.4f} "
              f"{ratio:>8.4f} {equalized_odds_difference(test.y, predicted, groups):>8.4f} "
              f"{seconds:>8.1f}")
    print(f"anchor: {ANCHOR}")
    ratio = ratios["thresholds for DP (assay)"]
    verdict = "met" if ratio >= 0.8 else "NOT met"
    print(f"target: post-processing for demographic parity reaches ratio >= 0.8: {verdict} "
          f"({ratio:.4f})")


if __name__ == "__main__":
    main()
