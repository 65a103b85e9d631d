"""Speed of assay's group-fairness table and bootstrap against fairlearn's MetricFrame.

``--rows`` synthetic rows (default 1,000,000; seeded) with two sensitive attributes, sex
(2 groups) and race (3 groups), base rates and predictions that depend on both. Timed:

(a) assay: ``fairness_report`` without bootstrap for sex, race and sex*race (all per-group
    rates: selection rate, accuracy, TPR, FPR, FNR, TNR, precision; and every summary
    metric), from the tensors; turning the string columns into ``Groups``
    (``Groups.from_labels``, NumPy's unique) is timed apart and the ratio given with and
    without it;
(b) fairlearn: one ``MetricFrame`` with 4 metrics (selection_rate, accuracy_score,
    true_positive_rate, false_positive_rate) over both attributes (a DataFrame of the two
    columns, so its groups are the 6 intersections), from NumPy arrays; the ratio (b) / (a)
    is printed, and the two tables' shared numbers are compared;
(c) assay's bootstrap: ``fairness_report`` of sex*race with ``--resamples`` (default 1000)
    percentile intervals for every rate and summary metric (multinomial cell draws).

The issue's figures: MetricFrame took 13.7 s on this CPU; the goal is (a) >= 10x faster
(50x the aim) and (c) under 10 s.

Usage:

    python benchmarks/fairness_metrics.py [--rows 1000000] [--resamples 1000] [--threads 2]
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import pandas as pd
import torch

from _machine import machine, timed
from assay.metrics.fairness import Groups, fairness_report


def synthetic(rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Labels, predictions and the two attributes as NumPy arrays (strings for the groups)."""
    rng = np.random.default_rng(seed)
    sex = rng.choice(np.array(["Female", "Male"]), rows, p=[0.45, 0.55])
    race = rng.choice(np.array(["Black", "Other", "White"]), rows, p=[0.15, 0.1, 0.75])
    base = 0.2 + 0.1 * (sex == "Male") + 0.05 * (race == "White")
    y = (rng.random(rows) < base).astype(np.int64)
    score = 0.3 * y + 0.3 * rng.random(rows) + 0.1 * (sex == "Male") + 0.25 * rng.random(rows)
    return {"y": y, "pred": (score > 0.5).astype(np.int64), "sex": sex, "race": race}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{machine()}; {args.rows:,} rows, sex (2) x race (3)")

    data = synthetic(args.rows)
    y, pred = torch.from_numpy(data["y"]), torch.from_numpy(data["pred"])
    # fairlearn groups the strings itself: the encoding is timed apart, and counted below
    (sex, race), encode = timed(lambda: (Groups.from_labels(data["sex"], "sex"),
                                         Groups.from_labels(data["race"], "race")))
    attributes = (sex, race, sex.intersect(race))

    reports, ours = timed(lambda: [fairness_report(y, pred, g, n_bootstrap=0)
                                   for g in attributes])

    from fairlearn.metrics import MetricFrame, false_positive_rate, selection_rate, \
        true_positive_rate
    from sklearn.metrics import accuracy_score

    metrics = {"selection_rate": selection_rate, "accuracy": accuracy_score,
               "tpr": true_positive_rate, "fpr": false_positive_rate}
    features = pd.DataFrame({"sex": data["sex"], "race": data["race"]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame, theirs = timed(lambda: MetricFrame(metrics=metrics, y_true=data["y"],
                                                  y_pred=data["pred"],
                                                  sensitive_features=features))
    joint = reports[2]
    worst = max(abs(value - frame.by_group.loc[tuple(name.split("*")), rate])
                for rate in metrics
                for name, value in zip(joint.groups, joint.by_group[rate]))
    print(f"(a) assay table, 7 rates + summary metrics over sex, race, sex*race: {ours:.3f} s")
    print(f"(b) fairlearn MetricFrame, 4 metrics over sex x race: {theirs:.3f} s")
    print(f"    encoding the string columns as Groups (np.unique), not in (a): {encode:.3f} s")
    print(f"    fairlearn / assay: {theirs / ours:.1f}x, {theirs / (ours + encode):.1f}x with "
          f"the encoding (goal >= 10x, aim 50x); "
          f"largest difference of the shared per-group numbers: {worst:.1e}")

    report, boot = timed(lambda: fairness_report(y, pred, attributes[2],
                                                 n_bootstrap=args.resamples, seed=0))
    low, high = report.summary_intervals["demographic_parity_difference"]
    print(f"(c) assay bootstrap, {args.resamples} resamples of sex*race: {boot:.3f} s "
          f"(goal < 10 s); demographic parity difference "
          f"{report.summary['demographic_parity_difference']:.4f} [{low:.4f}, {high:.4f}]")


if __name__ == "__main__":
    main()
