"""``assay audit --predictions``: recorded outputs of any model audited like a model."""

import csv
import json

import pytest
import torch

from assay.cli.main import main
from assay.core.predictions import load_predictions
from assay.errors import AssayValueError


def _write(path, header, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _biased_rows(n=600, seed=0):
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        sex = "M" if i % 2 else "F"
        label = int(torch.rand(1, generator=g) < (0.5 if sex == "M" else 0.3))
        score = min(max(0.5 * label + (0.3 if sex == "M" else 0.0)
                        + 0.2 * float(torch.randn(1, generator=g)), 0.0), 1.0)
        rows.append([label, f"{score:.4f}", sex, "ab"[i % 3 == 0]])
    return rows


def test_scores_become_the_model_outputs_row_by_row(tmp_path):
    rows = _biased_rows()
    path = _write(tmp_path / "preds.csv", ["label", "score", "sex", "site"], rows)
    model, data, scores = load_predictions(path)
    assert scores and sorted(data.attributes) == ["sex", "site"]
    probs = torch.softmax(model.predict_logits(data.x), dim=1)
    expected = torch.tensor([float(r[1]) for r in rows])
    assert torch.allclose(probs[:, 1], expected.clamp(1e-12, 1 - 1e-7), atol=1e-6)
    subset = data.take(torch.tensor([5, 2]))  # the row number travels with the row
    assert torch.allclose(torch.softmax(model.predict_logits(subset.x), 1)[:, 1],
                          expected[[5, 2]], atol=1e-6)
    assert data.y.tolist() == [r[0] for r in rows]


def test_the_cli_audits_predictions_and_the_fairness_gate_fails(tmp_path):
    path = _write(tmp_path / "preds.csv", ["label", "score", "sex", "site"], _biased_rows())
    plan = tmp_path / "plan.toml"
    plan.write_text('[[checks]]\nname = "fairness"\n'
                    'gates = ["demographic_parity_ratio@sex >= 0.8"]\n'
                    '[[checks]]\nname = "calibration"\n')
    out = tmp_path / "out"
    assert main(["audit", "--predictions", str(path), "--plan", str(plan), "--out", str(out),
                 "--quiet"]) == 1
    report = json.loads((out / "report.json").read_text())
    fairness = report["checks"][0]
    assert fairness["gates"][0]["passed"] is False
    assert report["model"]["file"]["format"] == "predictions"


def test_predicted_classes_alone_run_the_default_plan_without_calibration(tmp_path):
    rows = [[r[0], int(float(r[1]) > 0.5), r[2]] for r in _biased_rows()]
    path = _write(tmp_path / "preds.csv", ["label", "prediction", "sex"], rows)
    out = tmp_path / "out"
    assert main(["audit", "--predictions", str(path), "--out", str(out), "--quiet"]) in (0, 1)
    names = [c["name"] for c in json.loads((out / "report.json").read_text())["checks"]]
    assert names == ["accuracy", "fairness"]


@pytest.mark.parametrize("header, rows, match", [
    (["label", "score", "sex"], [[0, "1.5", "F"], [1, "0.2", "M"]], "probabilities in"),
    (["label", "score", "sex"], [[0, "nan", "F"], [1, "0.2", "M"]], "probabilities in"),
    (["label", "score", "sex"], [["yes", "0.5", "F"], [1, "0.2", "M"]], "class indices"),
    (["label", "sex"], [[0, "F"], [1, "M"]], "no output column"),
    (["label", "score"], [[0, "0.1"], [1, "0.2"]], "no sensitive attribute"),
    (["label", "score_0", "score_1", "sex"], [[0, "0.5", "0.2", "F"]], "sum to"),
    (["score", "sex"], [["0.5", "F"]], "no column 'label'"),
])
def test_bad_prediction_files_are_refused_naming_the_column(tmp_path, header, rows, match):
    path = _write(tmp_path / "preds.csv", header, rows)
    with pytest.raises(AssayValueError, match=match):
        load_predictions(path)


def test_the_cli_refuses_checks_and_flags_that_need_a_model(tmp_path, capsys):
    path = _write(tmp_path / "preds.csv", ["label", "prediction", "sex"],
                  [[0, 1, "F"], [1, 1, "M"]] * 20)
    plan = tmp_path / "plan.toml"
    plan.write_text('[[checks]]\nname = "robustness"\n')
    assert main(["audit", "--predictions", str(path), "--plan", str(plan),
                 "--out", str(tmp_path / "o")]) == 2
    assert "needs a torch model" in capsys.readouterr().err
    plan.write_text('[[checks]]\nname = "calibration"\n')
    assert main(["audit", "--predictions", str(path), "--plan", str(plan),
                 "--out", str(tmp_path / "o")]) == 2
    assert "needs probabilities" in capsys.readouterr().err
    assert main(["audit", "--predictions", str(path), "--data", "digits",
                 "--out", str(tmp_path / "o")]) == 2
    assert "drop --data" in capsys.readouterr().err
