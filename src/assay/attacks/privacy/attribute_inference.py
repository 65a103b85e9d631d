"""Attribute inference: recover a sensitive input attribute of a row from the model.

References: M. Fredrikson, E. Lantz, S. Jha, S. Lin, D. Page, T. Ristenpart. "Privacy in
Pharmacogenetics: An End-to-End Case Study of Personalized Warfarin Dosing". USENIX
Security 2014 (the attacker knows a row's other features and its label, tries each value
of the missing one, and keeps the most probable given the model's output and the value's
prior). S. Yeom, I. Giacomelli, M. Fredrikson, S. Jha. "Privacy Risk in Machine Learning:
Analyzing the Connection to Overfitting". CSF 2018 (the value whose row the model fits
best, lowest loss; the attack's advantage on training rows over other rows measures what
the model memorised). B. Jayaraman, D. Evans. "Are Attribute Inference Attacks Just
Imputation?". CCS 2022 (the baseline that matters: an imputation model that predicts the
attribute from the other features and the label, without the target model).

Rows are tabular raw rows (:mod:`assay.core.tabular`): the attribute is one feature column
of them, a categorical code, or a numeric column cut at a threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

from ..._params import Bool, Configured, Float, Int
from ...core import zoo
from ...core.data import Dataset
from ...core.inference import batched_logits, batched_predict
from ...core.tabular import TabularEncoder, TabularSchema
from ...core.training import TrainConfig, fit
from ...errors import AssayValueError

__all__ = ["AttributeColumn", "AttributeInference", "ImputationBaseline", "attribute_column",
           "value_prior"]


@dataclass(frozen=True)
class AttributeColumn:
    """Where sensitive attribute ``name`` sits in the raw rows: feature column ``index``;
    setting it to ``candidates[v]`` gives the row value ``v`` of the attribute (code
    ``v`` of ``values``); ``blank`` is the cell that says nothing (the numeric column's
    training mean, which standardises to 0, or -1 for a category: no one-hot slot)."""

    name: str
    index: int
    values: tuple[str, ...]
    candidates: Tensor
    blank: float


def attribute_column(schema: TabularSchema, name: str, public: Dataset) -> AttributeColumn:
    """The :class:`AttributeColumn` of sensitive attribute ``name`` of ``schema``.

    A categorical attribute's candidates are its values' vocabulary codes (-1 for a value
    the training split never had). An attribute cut from a numeric column (German
    credit's age at 25) has one candidate per side: the median of the ``public`` rows on
    that side (the threshold itself, or the largest public value, where a side has none).
    Raises when the attribute is not one of the model's input features."""
    entry = {s.name: s for s in schema.sensitive}.get(name)
    if entry is None:
        raise AssayValueError(f"the tabular schema has no sensitive attribute {name!r} (it has: "
                              f"{', '.join(schema.sensitive_names) or 'none'}).")
    if entry.column not in schema.feature_names:
        raise AssayValueError(
            f"the sensitive attribute {name!r} (column {entry.column!r}) is not an input "
            f"feature of the model (its features: {', '.join(schema.feature_names)}): there is "
            "nothing to infer from the model's outputs. Fix: name an attribute whose column "
            "the model reads")
    index = schema.feature_names.index(entry.column)
    column = schema.features[index]
    if column.kind == "categorical":
        codes = [column.vocabulary.index(v) if v in column.vocabulary else -1
                 for v in entry.values]
        return AttributeColumn(name, index, entry.values, torch.tensor(codes, dtype=torch.float32),
                               -1.0)
    if entry.threshold is None:  # a numeric column taken as it is: its values are numbers
        candidates = torch.tensor([float(v) for v in entry.values], dtype=torch.float32)
        return AttributeColumn(name, index, entry.values, candidates, column.mean)
    cells = public.x[:, index]
    below, above = cells[cells <= entry.threshold], cells[cells > entry.threshold]
    low = float(below.median()) if len(below) else entry.threshold
    high = float(above.median()) if len(above) else max(entry.threshold,
                                                          float(cells.max())) + 1.0
    return AttributeColumn(name, index, entry.values, torch.tensor([low, high]), column.mean)


def value_prior(codes: Tensor, values: int) -> Tensor:
    """The attribute's value frequencies in ``codes`` (the public rows), add-one smoothed
    so that a value absent from them keeps a small prior: [values] summing to 1."""
    counts = torch.bincount(codes.long(), minlength=values)[:values].double() + 1.0
    return (counts / counts.sum()).float()


class AttributeInference(Configured):
    """Infer a sensitive attribute of rows from the model's output on their known label
    (Fredrikson et al. 2014; Yeom et al. 2018).

    For each row and each candidate value ``v`` of the attribute, the row with its
    attribute column set to ``v`` goes through the model; the guess is the value with the
    highest ``log p(y | row_v) + log prior(v)`` (``prior=True``: Fredrikson et al.'s most
    probable value given the output) or the lowest loss ``-log p(y | row_v)``
    (``prior=False``: Yeom et al.'s). Ties, e.g. every value when the model ignores the
    attribute, go to the value with the highest prior: such a model yields the
    majority guess, no more.

    Parameters (keyword-only)
    -------------------------
    prior : bool, default True - weigh each value by its prior
    batch_size : int >= 1, default 1024 - rows per forward pass (each row is sent once
        per candidate value)

    Call: ``attack(model, x, y, column, prior)`` with raw rows ``x`` [N, D], labels ``y``
    [N], the :class:`AttributeColumn` and the values' prior [V] (:func:`value_prior`);
    returns the guessed codes [N] int64 on the CPU.
    """

    constraints = {"prior": Bool(), "batch_size": Int(low=1)}

    def __init__(self, *, prior: bool = True, batch_size: int = 1024) -> None:
        self.prior = self._validated("prior", prior)
        self.batch_size = self._validated("batch_size", batch_size)

    def __call__(self, model: torch.nn.Module, x: Tensor, y: Tensor, column: AttributeColumn,
                 prior: Tensor) -> Tensor:
        values = len(column.candidates)
        if prior.shape != (values,):
            raise AssayValueError(f"the prior must hold one probability per value ({values}); "
                                  f"got shape {list(prior.shape)}.")
        if len(x) != len(y) or x.ndim != 2 or not 0 <= column.index < x.shape[1]:
            raise AssayValueError(f"attribute inference needs rows [N, D] with column "
                                  f"{column.index} and one label each; got rows "
                                  f"{list(x.shape)} and {len(y)} labels.")
        # every row once per value: [N * V, D], row-major so row i's values are adjacent
        rows = x.cpu().repeat_interleave(values, dim=0)
        rows[:, column.index] = column.candidates.repeat(len(x))
        logits = batched_logits(model, rows, batch_size=self.batch_size, output_device="cpu")
        log_p = torch.log_softmax(logits.double(), dim=1)
        score = log_p.gather(1, y.cpu().long().repeat_interleave(values)[:, None])
        score = score.view(len(x), values)
        log_prior = prior.double().log()
        if self.prior:
            score = score + log_prior
        best = score.max(dim=1, keepdim=True).values
        # among the tied best, the most probable value a priori
        return torch.where(score == best, log_prior, -torch.inf).argmax(dim=1)


class ImputationBaseline(Configured):
    """The imputation baseline of attribute inference (Jayaraman & Evans 2022): a model
    trained on public rows to predict the attribute from the other features and the label,
    never asking the target model. An attack that does no better learns nothing from the
    model that the data did not already tell.

    The imputer is the zoo's ``mlp`` on the rows' encoding (the schema's
    :class:`~assay.core.tabular.TabularEncoder`) with the attribute's column blanked,
    next to the label's one-hot, trained through :func:`~assay.core.training.fit`.

    Parameters (keyword-only)
    -------------------------
    epochs : int >= 1, default 20
    lr : float > 0, default 1e-3 (Adam)
    batch_size : int >= 1, default 128
    seed : int >= 0, default 0 - weights and batch order

    Call: ``baseline(schema, column, public, targets)`` with ``public`` (rows [P, D],
    labels [P], attribute codes [P]) to fit on and ``targets`` (rows [N, D], labels [N]);
    returns the imputed codes [N] int64 on the CPU.
    """

    constraints = {"epochs": Int(low=1), "lr": Float(low=0.0, low_open=True),
                   "batch_size": Int(low=1), "seed": Int(low=0)}

    def __init__(self, *, epochs: int = 20, lr: float = 1e-3, batch_size: int = 128,
                 seed: int = 0) -> None:
        self.epochs = self._validated("epochs", epochs)
        self.lr = self._validated("lr", lr)
        self.batch_size = self._validated("batch_size", batch_size)
        self.seed = self._validated("seed", seed)

    def __call__(self, schema: TabularSchema, column: AttributeColumn,
                 public: tuple[Tensor, Tensor, Tensor],
                 targets: tuple[Tensor, Tensor]) -> Tensor:
        px, py, codes = public
        values = len(column.values)
        if len(px) == 0 or values < 2:
            raise AssayValueError(f"the imputation baseline needs public rows and an attribute "
                                  f"of two or more values; got {len(px)} rows and the values "
                                  f"{list(column.values)}.")
        encoder = TabularEncoder(schema)
        classes = len(schema.classes)
        features = self._features(encoder, column, px, py, classes)
        train = Dataset(features, codes.long(), "public rows", "imputation", column.values)
        net = zoo.build("mlp", input_shape=(features.shape[1],), num_classes=values,
                        seed=self.seed)
        fit(net, train, TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                                    seed=self.seed), show_progress=False)
        tx, ty = targets
        return batched_predict(net, self._features(encoder, column, tx, ty, classes),
                               batch_size=1024).cpu()

    @staticmethod
    def _features(encoder: TabularEncoder, column: AttributeColumn, x: Tensor, y: Tensor,
                  classes: int) -> Tensor:
        """The encoded rows with the attribute's column blanked, then the label's one-hot."""
        rows = x.cpu().clone()
        rows[:, column.index] = column.blank
        with torch.no_grad():
            encoded = encoder(rows)
        return torch.cat([encoded, F.one_hot(y.cpu().long(), classes).float()], dim=1)
