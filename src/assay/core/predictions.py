"""A model's recorded predictions, audited as if they were the model.

Most fairness users have no PyTorch model: a scikit-learn pipeline, XGBoost or an API
made the decisions. ``assay audit --predictions preds.csv`` reads them from a CSV file
with a header line and one row per sample:

* ``label``: the true class, an integer 0..K-1;
* the model's output, one of: ``score`` (the probability of class 1, two classes),
  ``score_0`` .. ``score_{K-1}`` (every class's probability; each row sums to 1), or
  ``prediction`` (the predicted class only: the checks that need probabilities, such as
  calibration, are then refused);
* the sensitive attributes: the columns ``sensitive`` names, else every other column.

The rows become a :class:`~assay.core.data.Dataset` whose input is the row number and a
:class:`PredictionTable`, a module that looks each row's log-probabilities up, so the
checks that use only outputs (:data:`PREDICTION_CHECKS`) run unchanged on them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import AssayValueError
from .dataset import Dataset
from .model import ModelWrapper
from .tabular import Table, attribute_codes, fit_sensitive, is_number, read_csv

# The checks that read nothing but the model's outputs on the evaluation split.
PREDICTION_CHECKS = ("accuracy", "calibration", "conformal", "fairness")
# ... and those of them that need probabilities, not only the predicted class.
NEEDS_SCORES = ("calibration", "conformal")
_SUM_TOLERANCE = 1e-3  # scores written with a few decimals still sum to 1 within this
_FLOOR = 1e-12  # the smallest probability taken for log: a score of 0 stays finite


class PredictionTable(nn.Module):
    """Row ``i`` of the input (its first value, the row number) -> row ``i`` of the
    recorded log-probabilities."""

    log_probs: Tensor

    def __init__(self, log_probs: Tensor) -> None:
        super().__init__()
        self.register_buffer("log_probs", log_probs)

    def forward(self, x: Tensor) -> Tensor:
        rows = x[:, 0].round().long().clamp(0, int(self.log_probs.shape[0]) - 1)
        return self.log_probs[rows]


def load_predictions(path: str | Path, *, sensitive: Sequence[str] | None = None
                     ) -> tuple[ModelWrapper, Dataset, bool]:
    """The recorded predictions in ``path`` as (model, data, whether they hold scores);
    raises ``AssayValueError`` naming the file, column and rows for anything unusable."""
    path = Path(path)
    table = read_csv(path)
    labels = _integers(table, "label")
    scores, outputs = _scores(table, path)
    if scores is None:
        predicted = _integers(table, "prediction")
        classes = max(max(labels), max(predicted)) + 1
        scores = torch.nn.functional.one_hot(torch.tensor(predicted), max(classes, 2)).double()
    classes = scores.shape[1]
    if max(labels) >= classes:
        raise AssayValueError(f"{path}: column 'label' has class {max(labels)}, but the scores "
                              f"cover {classes} classes. Fix: one score column per class.")
    names = list(sensitive) if sensitive else [c for c in table.columns
                                               if c != "label" and c not in outputs]
    if not names:
        raise AssayValueError(f"{path}: no sensitive attribute columns; add one (e.g. 'sex') "
                              "beside 'label' and the scores, or name them with --sensitive.")
    attributes, values = {}, {}
    for name in names:
        if name == "label" or name in outputs:
            raise AssayValueError(f"{path}: --sensitive names {name!r}, a column of labels or "
                                  "outputs; name attribute columns.")
        entry = fit_sensitive(table, name)
        attributes[name], values[name] = attribute_codes(table, entry, str(path))
    n = len(labels)
    rows = torch.arange(n, dtype=torch.float32).unsqueeze(1)
    data = Dataset(rows, torch.tensor(labels, dtype=torch.int64), path.stem, "predictions",
                   tuple(str(k) for k in range(classes)), source=str(path),
                   attributes=attributes, attribute_values=values)
    log_probs = scores.clamp_min(_FLOOR).log().float()
    model = ModelWrapper(PredictionTable(log_probs).eval(), num_classes=classes,
                         input_shape=(1,), bounds=(0.0, float(max(n - 1, 1))),
                         name=f"predictions in {path.name}")
    return model, data, outputs != ["prediction"]


def _integers(table: Table, column: str) -> list[int]:
    cells = table.column(column, "column")
    bad = [i for i, c in enumerate(cells) if not (is_number(c) and float(c).is_integer()
                                                  and float(c) >= 0)]
    if bad:
        raise AssayValueError(f"{table.source}: column {column!r} must hold class indices 0, 1, "
                              f"...; line {table.lines[bad[0]]} has {cells[bad[0]]!r} "
                              f"({len(bad)} such rows).")
    return [int(float(c)) for c in cells]


def _scores(table: Table, path: Path) -> tuple[Tensor | None, list[str]]:
    """The probabilities [N, K] and the columns they came from; (None, ["prediction"])
    when the file has predicted classes only."""
    columns = table.columns
    per_class = sorted((c for c in columns if c.startswith("score_")),
                       key=lambda c: int(c[6:]) if c[6:].isdigit() else -1)
    if "score" in columns and per_class:
        raise AssayValueError(f"{path}: give either 'score' or 'score_0', 'score_1', ...; "
                              "not both.")
    if "score" in columns:
        p = _probabilities(table, "score")
        return torch.stack([1 - p, p], dim=1), ["score"]
    if per_class:
        expected = [f"score_{k}" for k in range(len(per_class))]
        if per_class != expected:
            raise AssayValueError(f"{path}: the score columns must be {expected[:3]} ... "
                                  f"(one per class, numbered from 0); got {per_class[:4]}.")
        probs = torch.stack([_probabilities(table, c) for c in per_class], dim=1)
        off = (probs.sum(1) - 1).abs() > _SUM_TOLERANCE
        if bool(off.any()):
            row = int(off.nonzero()[0])
            raise AssayValueError(f"{path}: the scores of line {table.lines[row]} sum to "
                                  f"{float(probs[row].sum()):.4g}, not 1 ({int(off.sum())} "
                                  "such rows). Fix: write each class's probability.")
        return probs, per_class
    if "prediction" in columns:
        return None, ["prediction"]
    raise AssayValueError(f"{path}: no output column: add 'score' (probability of class 1), "
                          "'score_0' .. 'score_K-1', or 'prediction' (the predicted class).")


def _probabilities(table: Table, column: str) -> Tensor:
    cells = table.column(column, "column")
    values = [float(c) if is_number(c) else math.nan for c in cells]
    bad = [i for i, v in enumerate(values) if not 0.0 <= v <= 1.0]  # False for NaN
    if bad:
        raise AssayValueError(f"{table.source}: column {column!r} must hold probabilities in "
                              f"[0, 1]; line {table.lines[bad[0]]} has {cells[bad[0]]!r} "
                              f"({len(bad)} such rows).")
    return torch.tensor(values, dtype=torch.float64)
