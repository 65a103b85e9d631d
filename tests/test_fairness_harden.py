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


def _gap_after(tmp_path, out):
    after = json.loads((tmp_path / f"{out.stem}-report" / "after" / "report.json").read_text())
    fairness = next(c for c in after["checks"] if c["name"] == "fairness")
    return fairness["metrics"]["demographic_parity_difference@group"]


def test_both_methods_leave_a_smaller_gap_than_plain_training(biased_csv, tmp_path):
    runs = {"plain": ("--method", "regularised", "--lam", "0"),  # lam 0: plain cross-entropy
            "reweighed": ("--method", "reweighing"),
            "regularised": ("--method", "regularised", "--lam", "2")}
    gaps = {}
    for name, flags in runs.items():
        out = tmp_path / f"{name}.safetensors"
        assert _harden(biased_csv, out, "--attribute", "group", *flags) in (0, 1)
        assert out.is_file()
        gaps[name] = _gap_after(tmp_path, out)
    comparison = json.loads((tmp_path / "reweighed-report" / "comparison.json").read_text())
    assert comparison["training"]["method"]["method"] == "reweighing"
    assert gaps["reweighed"] < gaps["plain"] - 0.05, gaps
    assert gaps["regularised"] < gaps["plain"] - 0.1, gaps


def test_a_missing_attribute_is_refused_before_training(biased_csv, tmp_path, capsys):
    assert _harden(biased_csv, tmp_path / "m.safetensors", "--attribute", "sex") == 2
    err = capsys.readouterr().err
    assert "'sex', which test:file does not have" in err and not (tmp_path / "m.safetensors").exists()
    assert _harden(biased_csv, tmp_path / "m.safetensors", "--attribute", "group",
                   "--lam", "-1") == 2
    assert "--lam -1" in capsys.readouterr().err
