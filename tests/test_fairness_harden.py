"""``assay harden fairness``: a fairness-trained copy of a tabular model, audited before
and after, on a CSV whose label depends on the group."""

import csv
import json

import pytest
import torch

from assay.cli import main


@pytest.fixture(scope="module")
def biased_csv(tmp_path_factory):
    """Rows whose label is far more often 1 for group b; the features hint at the group."""
    g = torch.Generator().manual_seed(0)
    folder = tmp_path_factory.mktemp("fair")
    for name, n in (("train", 1200), ("test", 600)):
        with open(folder / f"{name}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["x1", "x2", "group", "y"])
            for _ in range(n):
                group = int(torch.rand(1, generator=g) < 0.5)
                x1 = float(torch.randn(1, generator=g)) + 1.5 * group
                x2 = float(torch.randn(1, generator=g))
                y = int(x1 + 0.3 * x2 + 0.5 * float(torch.randn(1, generator=g)) > 0.75)
                writer.writerow([f"{x1:.4f}", f"{x2:.4f}", "ab"[group], y])
    return folder


def _harden(folder, out, *extra):
    return main(["harden", "fairness", "--arch", "mlp", "--data", str(folder / "train.csv"),
                 "--eval-data", str(folder / "test.csv"), "--target", "y",
                 "--sensitive", "group", "--epochs", "8", "--batch-size", "64", "--lr", "3e-3",
                 "--out", str(out), "--quiet", *extra])


def test_reweighing_narrows_the_demographic_parity_gap(biased_csv, tmp_path):
    out = tmp_path / "fair.safetensors"
    assert _harden(biased_csv, out, "--attribute", "group") in (0, 1)
    comparison = json.loads((tmp_path / "fair-report" / "comparison.json").read_text())
    text = json.dumps(comparison)
    assert "demographic_parity_difference@group" in text
    before, after = (json.loads((tmp_path / "fair-report" / part / "report.json").read_text())
                     for part in ("before", "after"))
    gap = [next(c for c in r["checks"] if c["name"] == "fairness")["metrics"][
        "demographic_parity_difference@group"] for r in (before, after)]
    assert out.is_file() and gap[1] < 0.9  # the untrained model is before: only sanity here


def test_regularised_training_has_a_smaller_gap_than_plain_training(biased_csv, tmp_path):
    plain, fair = tmp_path / "plain.safetensors", tmp_path / "fair.safetensors"
    assert _harden(biased_csv, plain, "--attribute", "group", "--method", "regularised",
                   "--lam", "0") in (0, 1)
    assert _harden(biased_csv, fair, "--attribute", "group", "--method", "regularised",
                   "--lam", "2") in (0, 1)
    gaps = []
    for out in (plain, fair):
        after = json.loads((tmp_path / f"{out.stem}-report" / "after" / "report.json").read_text())
        fairness = next(c for c in after["checks"] if c["name"] == "fairness")
        gaps.append(fairness["metrics"]["demographic_parity_difference@group"])
    assert gaps[1] < gaps[0] - 0.1, gaps


def test_a_missing_attribute_is_refused_before_training(biased_csv, tmp_path, capsys):
    assert _harden(biased_csv, tmp_path / "m.safetensors", "--attribute", "sex") == 2
    err = capsys.readouterr().err
    assert "'sex', which test:file does not have" in err and not (tmp_path / "m.safetensors").exists()
    assert _harden(biased_csv, tmp_path / "m.safetensors", "--attribute", "group",
                   "--lam", "-1") == 2
    assert "--lam -1" in capsys.readouterr().err
