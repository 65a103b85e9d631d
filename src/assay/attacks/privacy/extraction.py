"""Model extraction by querying: train a copy of a model on its answers to chosen inputs.

References: F. Tramer, F. Zhang, A. Juels, M. Reiter, T. Ristenpart. "Stealing Machine
Learning Models via Prediction APIs". USENIX Security 2016 (the framing: an attacker who
can only query the model, measured by the copy's agreement with it). T. Orekondy, B.
Schiele, M. Fritz. "Knockoff Nets: Stealing Functionality of Black-Box Models". CVPR 2019
(query with a transfer set, train the copy on the victim's probabilities). J. R.
Correia-Silva, R. F. Berriel, C. Badue, A. F. de Souza, T. Oliveira-Santos. "Copycat CNN:
Stealing Knowledge by Persuading Confession with Random Non-Labeled Data". IJCNN 2018 (the
victim's labels alone, on non-problem-domain data).

Queries are drawn at random from the attacker's pool (Knockoff's "random" strategy; its
adaptive bandit is not implemented), and the budgets are nested: the copy of budget B
trains on the first B queries, so a larger budget only adds queries.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..._params import Choice, Configured, Int
from ...core.data import Dataset
from ...core.inference import batched_logits
from ...core.model import ModelWrapper
from ...core.rng import seeded_generator
from ...core.tabular import TabularSchema
from ...core.training import IndexedLoss, TrainingRecipe
from ...errors import AssayValueError
from .reference import train_reference

__all__ = ["KnockoffNets", "NOISE_QUERIES", "agreement", "noise_queries", "query_order"]

Output = Literal["probabilities", "labels"]
#: Query sources that need no data: noise in the model's input bounds.
NOISE_QUERIES = ("uniform", "gaussian")


def noise_queries(kind: str, n: int, shape: tuple[int, ...], bounds: tuple[float, float],
                  generator: torch.Generator) -> Tensor:
    """``n`` inputs of ``shape`` inside ``bounds``: "uniform" over the box, or "gaussian"
    around its centre with a standard deviation of a quarter of its width, clipped to it
    (Copycat's random non-problem-domain data at its most extreme)."""
    low, high = bounds
    if kind == "uniform":
        return low + (high - low) * torch.rand(n, *shape, generator=generator)
    if kind == "gaussian":
        centre, spread = (low + high) / 2, (high - low) / 4
        return (centre + spread * torch.randn(n, *shape, generator=generator)).clamp(low, high)
    raise AssayValueError(f"The 'kind' parameter of noise_queries must be one of "
                          f"{list(NOISE_QUERIES)}. Got {kind!r} instead.")


def agreement(a: Tensor, b: Tensor) -> float:
    """The share of positions where the labels ``a`` and ``b`` agree: a copy's fidelity
    to its victim when they are the two models' predictions on the same inputs."""
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise AssayValueError(f"agreement needs two non-empty label vectors of one length; "
                              f"got shapes {list(a.shape)} and {list(b.shape)}.")
    return float((a == b).double().mean())


class KnockoffNets(Configured):
    """Copy a classifier from its answers to queries (Knockoff Nets, Orekondy et al. CVPR
    2019; with ``output="labels"``, Copycat CNN, Correia-Silva et al. IJCNN 2018).

    :meth:`answers` asks the victim about the queries once; :meth:`copy` trains a copy of
    a given architecture (a :class:`~assay.core.training.TrainingRecipe`, through the one
    training loop) on the first ``budget`` of them: on the cross-entropy against the
    victim's probabilities (Knockoff: the soft labels carry its whole output), or against
    its predicted labels only (Copycat). The copy is wrapped with the victim's bounds and
    normalisation, so it reads the same inputs.

    Parameters (keyword-only)
    -------------------------
    output : {"probabilities", "labels"}, default "probabilities" - what the victim
        answers: its softmax, or its top label (a label-only API)
    batch_size : int >= 1, default 256 - queries per forward pass of the victim

    Shapes: queries ``x`` [N, ...] in the victim's bounds; :meth:`answers` returns [N, K]
    float32 (probabilities, or one-hot labels), on the CPU.

    Example
    -------
    >>> import torch
    >>> from torch import nn
    >>> from assay.core.model import ModelWrapper
    >>> from assay.core.training import TrainConfig, TrainingRecipe
    >>> victim = ModelWrapper(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), num_classes=2,
    ...                       input_shape=(4,))
    >>> x = torch.rand(64, 4)
    >>> attack = KnockoffNets()
    >>> copy = attack.copy(victim, x, attack.answers(victim, x),
    ...                    TrainingRecipe("mlp", TrainConfig(epochs=5)), budget=64, seed=0)
    >>> 0.0 <= agreement(copy.predict(x), victim.predict(x)) <= 1.0
    True
    """

    constraints = {"output": Choice(("probabilities", "labels")), "batch_size": Int(low=1)}

    def __init__(self, *, output: Output = "probabilities", batch_size: int = 256) -> None:
        self.output = self._validated("output", output)
        self.batch_size = self._validated("batch_size", batch_size)

    def answers(self, victim: ModelWrapper, x: Tensor) -> Tensor:
        """The victim's answers to the queries ``x``: [N, K] probabilities, or one-hot
        labels for ``output="labels"`` (float32, CPU)."""
        logits = batched_logits(victim, x, batch_size=self.batch_size, output_device="cpu")
        if not bool(torch.isfinite(logits).all()):
            raise AssayValueError("the victim returned NaN or infinite logits on the "
                                  "extraction queries; a copy cannot be trained on them.")
        if self.output == "labels":
            return F.one_hot(logits.argmax(1), logits.shape[1]).float()
        return torch.softmax(logits.float(), dim=1)

    def copy(self, victim: ModelWrapper, x: Tensor, answers: Tensor, recipe: TrainingRecipe,
             *, budget: int, seed: int,
             schema: TabularSchema | None = None) -> ModelWrapper:
        """A copy of ``recipe``'s architecture trained on the first ``budget`` queries and
        their ``answers`` (from :meth:`answers`), with weights and batch order from
        ``seed``; ``schema`` is the tabular schema of the rows, if any."""
        if answers.shape != (len(x), victim.num_classes):
            raise AssayValueError(f"answers must be [N, K] = {[len(x), victim.num_classes]}; "
                                  f"got {list(answers.shape)}.")
        if not 1 <= budget <= len(x):
            raise AssayValueError(f"The 'budget' parameter of KnockoffNets.copy must be an int "
                                  f"in [1, {len(x)}] (the queries given). Got {budget!r} "
                                  "instead.")
        x, soft = x[:budget].cpu(), answers[:budget].cpu()
        queries = Dataset(x, soft.argmax(1), "extraction queries", "queries",
                          tuple(str(k) for k in range(victim.num_classes)), schema=schema)
        keep = torch.ones(budget, dtype=torch.bool)
        return train_reference(recipe, queries, keep, victim, seed=seed,
                               loss_fn=IndexedLoss(_soft_cross_entropy(soft)))


def _soft_cross_entropy(targets: Tensor):
    """The loss of a batch at ``index``: cross-entropy against ``targets[index]`` (soft
    labels; for one-hot rows it is the usual cross-entropy on the labels)."""

    def loss(model: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> Tensor:
        target = targets[index].to(x.device)
        return -(target * torch.log_softmax(model(x), dim=1)).sum(1).mean()

    return loss


def query_order(n: int, seed: int) -> Tensor:
    """The seeded order in which an attacker draws ``n`` pool samples (random sampling)."""
    return torch.randperm(n, generator=seeded_generator(seed))
