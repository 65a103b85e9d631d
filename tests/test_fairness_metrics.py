"""assay.metrics.fairness against fairlearn (the reference implementation) and closed forms."""

import csv
import math
import os
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import require_data
from fairlearn import metrics as flm
from sklearn.metrics import accuracy_score, precision_score

from assay.errors import AssayValueError
from assay.metrics import fairness as fm
from assay.metrics.fairness import Groups, fairness_report

TOL = 1e-9

# fairlearn's per-group metrics, by assay's rate names
FAIRLEARN_RATES = {
    "selection_rate": flm.selection_rate,
    "accuracy": accuracy_score,
    "tpr": flm.true_positive_rate,
    "fpr": flm.false_positive_rate,
    "fnr": flm.false_negative_rate,
    "tnr": flm.true_negative_rate,
    "precision": precision_score,
}
# assay's summary functions that fairlearn has under the same name
FAIRLEARN_SUMMARY = ("demographic_parity_difference", "demographic_parity_ratio",
                     "equalized_odds_difference", "equalized_odds_ratio",
                     "equal_opportunity_difference", "equal_opportunity_ratio")


def biased_data(n=4000, seed=0):
    """Two attributes (sex: 2 groups, race: 3) with known bias: base rates and the
    model's selection rates depend on the group."""
    rng = np.random.default_rng(seed)
    sex = rng.choice(np.array(["Female", "Male"]), n, p=[0.4, 0.6])
    race = rng.choice(np.array(["Black", "Other", "White"]), n, p=[0.2, 0.1, 0.7])
    base = 0.2 + 0.15 * (sex == "Male") + 0.1 * (race == "White")
    y = (rng.random(n) < base).astype(np.int64)
    score = np.clip(0.3 * y + 0.3 * rng.random(n) + 0.1 * (sex == "Male")
                    + 0.05 * (race == "Other") + 0.25 * rng.random(n), 0, 1)
    pred = (score > 0.5).astype(np.int64)
    return y, pred, score, sex, race


def assert_matches_fairlearn(y, pred, columns, groups):
    """Every per-group rate and summary metric of assay equals fairlearn's to 1e-9."""
    features = columns[0] if len(columns) == 1 else pd.DataFrame(
        {f"a{i}": c for i, c in enumerate(columns)})
    yt, yp = torch.from_numpy(y), torch.from_numpy(pred)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame = flm.MetricFrame(metrics=FAIRLEARN_RATES, y_true=y, y_pred=pred,
                                sensitive_features=features)
        expected_summary = {name: getattr(flm, name)(y, pred, sensitive_features=features)
                            for name in FAIRLEARN_SUMMARY}
    report = fairness_report(yt, yp, groups, min_group_size=0, n_bootstrap=0)
    compared = 0
    for rate in FAIRLEARN_RATES:
        for name, ours in zip(groups.names, report.by_group[rate]):
            key = name if len(columns) == 1 else tuple(name.split("*"))
            theirs = frame.by_group.loc[key, rate]
            if math.isnan(theirs):  # a combination without members, in both
                assert math.isnan(ours), (rate, name)
                continue
            assert ours == pytest.approx(theirs, abs=TOL), (rate, name)
            compared += 1
        assert report.overall[rate] == pytest.approx(frame.overall[rate], abs=TOL), rate
    assert compared >= len(FAIRLEARN_RATES) * 2
    for name, theirs in expected_summary.items():
        assert report.summary[name] == pytest.approx(theirs, abs=TOL), name
        assert getattr(fm, name)(yt, yp, groups) == pytest.approx(theirs, abs=TOL), name
    difference, ratio = frame.difference(), frame.ratio()
    assert report.summary["predictive_parity_difference"] == pytest.approx(
        difference["precision"], abs=TOL)
    assert report.summary["predictive_parity_ratio"] == pytest.approx(ratio["precision"], abs=TOL)
    assert report.summary["accuracy_difference"] == pytest.approx(difference["accuracy"], abs=TOL)
    return report


def test_matches_fairlearn_on_biased_data():
    y, pred, _, sex, race = biased_data()
    report = assert_matches_fairlearn(y, pred, [sex], Groups.from_labels(sex, "sex"))
    assert report.summary["demographic_parity_difference"] > 0.05  # the bias is there
    assert_matches_fairlearn(y, pred, [race], Groups.from_labels(race, "race"))


def test_matches_fairlearn_on_intersectional_groups():
    y, pred, _, sex, race = biased_data()
    groups = Groups.from_labels(sex, "sex").intersect(Groups.from_labels(race, "race"))
    assert groups.attribute == "sex*race"
    assert groups.names[0] == "Female*Black" and len(groups.names) == 6
    assert_matches_fairlearn(y, pred, [sex, race], groups)


def test_matches_fairlearn_with_an_empty_intersection():
    y, pred, _, sex, race = biased_data()
    keep = ~((sex == "Male") & (race == "Other"))
    y, pred, sex, race = y[keep], pred[keep], sex[keep], race[keep]
    groups = Groups(  # names from the full label sets, so the empty combination exists
        Groups.from_labels(sex, "sex").codes * 3 + Groups.from_labels(race, "race").codes,
        ("Female*Black", "Female*Other", "Female*White", "Male*Black", "Male*Other",
         "Male*White"), "sex*race")
    report = assert_matches_fairlearn(y, pred, [sex, race], groups)
    assert report.sizes[4] == 0 and "Male*Other" in report.too_small


def read_adult(path):
    rows = [r for r in csv.reader(path.open(), skipinitialspace=True) if len(r) == 15]
    features = np.array([[float(r[i]) for i in (0, 4, 10, 11, 12)] for r in rows])
    label = np.array([r[14].rstrip(".") == ">50K" for r in rows], dtype=np.int64)
    return features, label, np.array([r[9] for r in rows]), np.array([r[8] for r in rows])


@pytest.mark.data
def test_matches_fairlearn_on_adult():
    root = require_data("adult", "adult.test")
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x, y, _, _ = read_adult(root / "adult" / "adult.data")
    x_test, y_test, sex, race = read_adult(root / "adult" / "adult.test")
    scaler = StandardScaler().fit(x)  # age, education-num, capital-gain/loss, hours-per-week
    model = LogisticRegression(max_iter=1000).fit(scaler.transform(x), y)
    pred = model.predict(scaler.transform(x_test)).astype(np.int64)
    sex_groups, race_groups = Groups.from_labels(sex, "sex"), Groups.from_labels(race, "race")
    assert_matches_fairlearn(y_test, pred, [sex], sex_groups)
    assert_matches_fairlearn(y_test, pred, [race], race_groups)
    report = assert_matches_fairlearn(y_test, pred, [sex, race], sex_groups.intersect(race_groups))
    assert len(report.groups) == 10


def test_hand_built_two_groups():
    # A: y 1 1 0 0, pred 1 0 0 0 -> TPR 1/2, FPR 0, selection 1/4, accuracy 3/4, precision 1
    # B: y 1 1 1 0 0, pred 1 1 0 1 0 -> TPR 2/3, FPR 1/2, selection 3/5, accuracy 3/5,
    #    precision 2/3
    y = torch.tensor([1, 1, 0, 0, 1, 1, 1, 0, 0])
    pred = torch.tensor([1, 0, 0, 0, 1, 1, 0, 1, 0])
    groups = Groups(torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1]), ("A", "B"), "g")
    counts = fm.confusion_counts(y, pred, groups)
    assert counts.tolist() == [[[2, 0], [1, 1]], [[1, 1], [1, 2]]]
    report = fairness_report(y, pred, groups, min_group_size=1, n_bootstrap=0)
    expected = {"selection_rate": (1 / 4, 3 / 5), "accuracy": (3 / 4, 3 / 5), "tpr": (1 / 2, 2 / 3),
                "fpr": (0, 1 / 2), "fnr": (1 / 2, 1 / 3), "tnr": (1, 1 / 2),
                "precision": (1, 2 / 3)}
    for rate, values in expected.items():
        assert report.by_group[rate] == pytest.approx(values, abs=TOL), rate
    assert report.overall["selection_rate"] == pytest.approx(4 / 9)
    summary = {"demographic_parity_difference": 0.35, "demographic_parity_ratio": 5 / 12,
               "equal_opportunity_difference": 1 / 6, "equal_opportunity_ratio": 3 / 4,
               "equalized_odds_difference": 1 / 2, "equalized_odds_ratio": 0.0,
               "predictive_parity_difference": 1 / 3, "predictive_parity_ratio": 2 / 3,
               "accuracy_difference": 0.15}
    assert report.summary == pytest.approx(summary, abs=TOL)
    assert report.four_fifths_rule is False
    assert report.sizes == (4, 5) and report.too_small == ()


def test_zero_member_intersection_is_reported_and_left_out():
    sex = Groups(torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0]), ("F", "M"), "sex")
    race = Groups(torch.tensor([0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1]), ("A", "B"), "race")
    y = torch.tensor([1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0])
    pred = torch.tensor([1, 0, 0, 0, 1, 1, 1, 0, 1, 1, 1, 1])  # selection 1/4, 3/4, 1
    groups = sex.intersect(race)
    assert groups.names == ("F*A", "F*B", "M*A", "M*B")
    report = fairness_report(y, pred, groups, min_group_size=0, n_bootstrap=50)
    assert report.sizes == (4, 4, 4, 0)
    assert report.too_small == ("M*B",)
    assert all(math.isnan(v[3]) for v in report.by_group.values())
    assert report.summary["demographic_parity_difference"] == pytest.approx(0.75)
    assert report.summary["demographic_parity_ratio"] == pytest.approx(0.25)
    low, high = report.summary_intervals["demographic_parity_difference"]
    assert low <= 0.75 <= high  # the empty cell never enters a resample's gap


def test_group_without_positives_has_nan_tpr_and_gaps_over_the_rest():
    y = torch.tensor([1, 1, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0])
    pred = torch.tensor([1, 0, 0, 1, 1, 1, 0, 0, 1, 0, 0, 0])
    groups = Groups(torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]), ("a", "b", "c"), "g")
    report = fairness_report(y, pred, groups, min_group_size=1, n_bootstrap=0)
    tpr = report.by_group["tpr"]
    assert tpr[:2] == (0.5, 1.0) and math.isnan(tpr[2])
    assert math.isnan(report.by_group["fnr"][2])
    assert math.isnan(report.by_group["precision"][2]) is False  # c has a predicted positive
    assert report.summary["equal_opportunity_difference"] == pytest.approx(0.5)
    assert report.summary["equal_opportunity_ratio"] == pytest.approx(0.5)
    # FPR is defined everywhere (1/2, 0, 1/4): equalized odds takes the larger gap
    assert report.summary["equalized_odds_difference"] == pytest.approx(0.5)
    assert report.summary["equalized_odds_ratio"] == pytest.approx(0.0)


def test_one_eligible_group_gives_nan_gaps_and_fails_four_fifths():
    y = torch.tensor([1, 0] * 20 + [1, 0])
    pred = torch.tensor([1, 0] * 20 + [1, 1])
    groups = Groups(torch.tensor([0] * 40 + [1, 1]), ("big", "small"), "g")
    report = fairness_report(y, pred, groups, n_bootstrap=20)  # default min_group_size 30
    assert fm.DEFAULT_MIN_GROUP_SIZE == 30 and report.min_group_size == 30
    assert report.too_small == ("small",)
    assert all(math.isnan(v) for v in report.summary.values())
    assert all(math.isnan(v) for iv in report.summary_intervals.values() for v in iv)
    assert report.four_fifths_rule is False
    assert report.by_group["selection_rate"] == (0.5, 1.0)  # still reported


def test_ratio_when_no_group_is_selected_is_nan_as_in_fairlearn():
    y, _, _, sex, _ = biased_data(n=500)
    pred = np.zeros_like(y)
    groups = Groups.from_labels(sex, "sex")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = flm.demographic_parity_ratio(y, pred, sensitive_features=sex)
    ours = fm.demographic_parity_ratio(torch.from_numpy(y), torch.from_numpy(pred), groups)
    assert math.isnan(theirs) and math.isnan(ours)
    assert fm.demographic_parity_difference(torch.from_numpy(y), torch.from_numpy(pred),
                                            groups) == 0.0


def test_disaggregate_batched_and_generic():
    values = torch.tensor([[0.2, 0.5, float("nan"), 0.9], [0.4, 0.4, 0.1, 0.0]])
    sizes = torch.tensor([50, 40, 60, 10])
    out = fm.disaggregate(values, sizes, min_group_size=30, overall=torch.tensor([0.3, 0.3]))
    assert out.eligible.tolist() == [[True, True, False, False], [True, True, True, False]]
    assert out.difference.tolist() == pytest.approx([0.3, 0.3])
    assert out.ratio.tolist() == pytest.approx([0.4, 0.25])
    assert out.group_min.tolist() == pytest.approx([0.2, 0.1])
    # the rates of a batch of count tables equal the rates of each table
    counts = torch.randint(0, 9, (5, 3, 2, 2), generator=torch.Generator().manual_seed(0))
    batched = fm.confusion_rates(counts)
    for b in range(5):
        single = fm.confusion_rates(counts[b])
        for rate in fm.RATES:
            torch.testing.assert_close(batched[rate][b], single[rate], equal_nan=True)


def test_group_ece_per_group_matches_a_direct_computation():
    y, _, score, sex, _ = biased_data(n=3000)
    groups = Groups.from_labels(sex, "sex")
    ours = fm.group_ece(torch.from_numpy(y), torch.from_numpy(score), groups, n_bins=15)
    for g in range(2):
        p, t = score[groups.codes.numpy() == g], y[groups.codes.numpy() == g]
        bins = np.clip(np.ceil(p * 15).astype(int) - 1, 0, 14)  # (k/15, (k+1)/15], 0 -> 0
        expected = sum(abs(t[bins == b].sum() - p[bins == b].sum()) for b in range(15)) / len(p)
        assert float(ours[g]) == pytest.approx(expected, abs=1e-12)
    report = fairness_report(torch.from_numpy(y), torch.from_numpy(score > 0.5).long(), groups,
                             scores=torch.from_numpy(score), n_bootstrap=200)
    assert report.by_group["ece"] == pytest.approx(tuple(ours.tolist()), abs=1e-12)
    assert report.n_bins == 15
    low, high = report.summary_intervals["ece_difference"]
    assert low <= report.summary["ece_difference"] <= high


def test_bootstrap_is_seeded_and_contains_the_estimate():
    y, pred, score, sex, race = biased_data(n=3000)
    groups = Groups.from_labels(sex, "sex").intersect(Groups.from_labels(race, "race"))
    args = (torch.from_numpy(y), torch.from_numpy(pred), groups)
    first = fairness_report(*args, n_bootstrap=300, seed=3)
    again = fairness_report(*args, n_bootstrap=300, seed=3)
    other = fairness_report(*args, n_bootstrap=300, seed=4)
    assert first.to_dict() == again.to_dict()
    assert first.summary_intervals != other.summary_intervals
    assert set(first.summary_intervals) == set(fm.SUMMARY_METRICS)
    for name, (low, high) in first.summary_intervals.items():
        assert low <= first.summary[name] <= high, name
    for rate, intervals in first.by_group_intervals.items():
        for value, (low, high) in zip(first.by_group[rate], intervals):
            assert low <= value <= high, rate


def _summaries(counts):
    """Summary metrics of [B, G, 2, 2] count tables through the public primitives."""
    sizes = counts[0].sum((-2, -1))  # the same rows in every table
    per_group, overall = fm.confusion_rates(counts), fm.confusion_rates(counts.sum(-3))
    gaps = {r: fm.disaggregate(per_group[r], sizes, min_group_size=30, overall=overall[r])
            for r in fm.RATES}
    return fm.summary_metrics(gaps)


def test_multinomial_bootstrap_matches_the_row_bootstrap():
    y, pred, _, sex, race = biased_data(n=3000, seed=1)
    groups = Groups.from_labels(sex, "sex").intersect(Groups.from_labels(race, "race"))
    yt, yp = torch.from_numpy(y), torch.from_numpy(pred)
    counts = fm.confusion_counts(yt, yp, groups)
    cell = groups.codes * 4 + 2 * yt + yp
    # 200 real resamples of the rows, counted per cell
    rows = torch.randint(0, len(y), (200, len(y)), generator=torch.Generator().manual_seed(0))
    offsets = torch.arange(200).unsqueeze(1) * counts.numel()
    row_counts = torch.bincount((cell[rows] + offsets).flatten(), minlength=200 * counts.numel())
    row = _summaries(row_counts.reshape(200, *counts.shape))
    draws = fm.multinomial_resample(counts, 1000, generator=torch.Generator().manual_seed(0))
    assert (draws.sum((1, 2, 3)) == len(y)).all()
    multi = _summaries(draws)
    report = fairness_report(yt, yp, groups, n_bootstrap=1000, seed=0)
    for name in fm.SUMMARY_METRICS:
        r, m = row[name], multi[name]
        assert not torch.isnan(r).any() and not torch.isnan(m).any(), name
        # the report's interval is the percentile interval of these very draws
        q = torch.quantile(m, torch.tensor([0.025, 0.975], dtype=torch.float64))
        assert report.summary_intervals[name] == pytest.approx(tuple(q.tolist()), abs=1e-12)
        # Tolerance: the sd of a bootstrap sd from n draws is about sd / sqrt(2n): 5% for
        # 200 draws, 2% for 1000, so 0.8-1.25 is over 3.5 standard errors of the ratio.
        assert 0.8 < float(m.std() / r.std()) < 1.25, name
        # a 2.5% quantile of n draws has an sd of sqrt(.025 * .975 / n) / density(q),
        # about 0.19 sd for 200 and 0.09 sd for 1000 normal draws: 0.21 sd together, so
        # 0.85 sd is 4 standard errors (a scale off by half moves an end by ~1 sd).
        rq = torch.quantile(r, torch.tensor([0.025, 0.975], dtype=torch.float64))
        assert (q - rq).abs().max() < 0.85 * r.std(), name


def test_one_vs_rest_and_multiclass():
    labels = torch.tensor([0, 2, 1, 2, 2])
    assert fm.one_vs_rest(labels, 2).tolist() == [0, 1, 0, 1, 1]
    with pytest.raises(AssayValueError, match="'y' parameter of one_vs_rest"):
        fm.one_vs_rest(labels.float(), 2)
    groups = Groups(torch.tensor([0, 0, 1, 1, 1]), ("a", "b"), "g")
    with pytest.raises(AssayValueError, match="one_vs_rest"):  # the fix is named
        fm.confusion_counts(labels, labels, groups)


@pytest.mark.parametrize(("y_true", "y_pred", "codes", "match"), [
    ([1, 0, 1], [1, 0], [0, 1, 1], "'y_pred' parameter .* 3 entries"),
    ([1, 0, 1], [1, 0, 1], [0, 1], "'groups' parameter .* one code per row"),
    ([1, 2, 1], [1, 0, 1], [0, 1, 1], "'y_true' parameter .* binary values 0/1"),
    ([1, 0, 1], [0.5, 0, 1], [0, 1, 1], "'y_pred' parameter .* binary"),
    ([], [], [0], "'y_true' parameter .* non-empty"),
])
def test_bad_input(y_true, y_pred, codes, match):
    groups = Groups(torch.tensor(codes), ("a", "b"), "g")
    with pytest.raises(AssayValueError, match=match):
        fairness_report(torch.tensor(y_true), torch.tensor(y_pred), groups)


def test_bad_groups_and_settings():
    with pytest.raises(AssayValueError, match=r"'codes' parameter of Groups must lie in \[0, 1\]"):
        Groups(torch.tensor([0, 1, 2]), ("a", "b"), "g")
    with pytest.raises(AssayValueError, match="'codes' parameter of Groups"):
        Groups(torch.tensor([-1, 0]), ("a", "b"), "g")
    with pytest.raises(AssayValueError, match="'codes' parameter of Groups .* non-empty"):
        Groups(torch.tensor([], dtype=torch.long), ("a",), "g")
    with pytest.raises(AssayValueError, match="'names' parameter of Groups"):
        Groups(torch.tensor([0, 1]), ("a", "a"), "g")
    with pytest.raises(AssayValueError, match="same rows"):
        Groups(torch.tensor([0, 1]), ("a", "b"), "g").intersect(
            Groups(torch.tensor([0]), ("x",), "h"))
    y = torch.tensor([1, 0, 1, 0])
    groups = Groups(torch.tensor([0, 0, 1, 1]), ("a", "b"), "g")
    with pytest.raises(AssayValueError, match="'scores' parameter .* in \\[0, 1\\]"):
        fairness_report(y, y, groups, scores=torch.tensor([0.1, 2.0, 0.3, 0.4]))
    with pytest.raises(AssayValueError, match="'confidence' parameter of fairness_report"):
        fairness_report(y, y, groups, confidence=1.0)
    with pytest.raises(AssayValueError, match="'min_group_size' parameter"):
        fairness_report(y, y, groups, min_group_size=-1)
    with pytest.raises(AssayValueError, match="'groups' parameter of fairness_report"):
        fairness_report(y, y, torch.tensor([0, 0, 1, 1]))


DEVICE = torch.device(os.environ.get("ASSAY_TEST_DEVICE", "cuda"))


@pytest.mark.skipif(DEVICE.type == "cuda" and not torch.cuda.is_available(),
                    reason="no CUDA device (ASSAY_TEST_DEVICE=cpu runs it on the CPU)")
def test_report_on_the_device_matches_the_cpu():
    y, pred, score, sex, race = biased_data(n=2000)
    groups = Groups.from_labels(sex, "sex").intersect(Groups.from_labels(race, "race"))
    args = (torch.from_numpy(y), torch.from_numpy(pred))
    cpu = fairness_report(*args, groups, scores=torch.from_numpy(score), n_bootstrap=100)
    moved = Groups(groups.codes.to(DEVICE), groups.names, groups.attribute)
    dev = fairness_report(*(a.to(DEVICE) for a in args), moved,
                          scores=torch.from_numpy(score).to(DEVICE), n_bootstrap=100)
    assert dev.summary == pytest.approx(cpu.summary, abs=1e-12)
    for rate, values in cpu.by_group.items():
        assert dev.by_group[rate] == pytest.approx(values, abs=1e-12, nan_ok=True), rate
    for name, (low, high) in dev.summary_intervals.items():  # other draws, same estimate
        assert low <= dev.summary[name] <= high, name
    draws = fm.multinomial_resample(fm.confusion_counts(*(a.to(DEVICE) for a in args), moved),
                                    10, generator=torch.Generator(DEVICE).manual_seed(0))
    assert draws.device.type == DEVICE.type
