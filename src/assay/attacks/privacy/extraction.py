"""Model extraction by querying: train a copy of a model on its answers to chosen inputs.

References: F. Tramer, F. Zhang, A. Juels, M. Reiter, T. Ristenpart. "Stealing Machine
Learning Models via Prediction APIs". USENIX Security 2016 (the framing: an attacker who
can only query the model, measured by the copy's agreement with it). T. Orekondy, B.
Schiele, M. Fritz. "Knockoff Nets: Stealing Functionality of Black-Box Models". CVPR 2019
(query with a transfer set, train the copy on the victim's probabilities). J. R.
Correia-Silva, R. F. Berriel, C. Badue, A. F. de Souza, T. Oliveira-Santos. "Copycat CNN:
Stealing Knowledge by Persuading Confession with Random Non-Labeled Data". IJCNN 2018 (the
victim's labels alone, on non-problem-domain data).

Queries are drawn from the attacker's pool at random (Knockoff's "random" strategy,
:func:`query_order`) or by Knockoff's "adaptive" strategy (:class:`AdaptiveSampling`, a
gradient bandit over the pool's labels). Budgets are nested: the copy of budget B trains
on the first B queries, so a larger budget only adds queries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..._params import Choice, Configured, Float, Int
from ...core.data import Dataset
from ...core.inference import batched_logits
from ...core.model import ModelWrapper
from ...core.rng import seeded_generator
from ...core.tabular import TabularSchema
from ...core.training import IndexedLoss, TrainingRecipe, make_optimizer
from ...errors import AssayValueError
from .reference import recipe_model, train_reference

__all__ = ["AdaptiveQueries", "AdaptiveSampling", "KnockoffNets", "NOISE_QUERIES", "agreement",
           "noise_queries", "query_order"]

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


@dataclass(frozen=True)
class AdaptiveQueries:
    """What :meth:`AdaptiveSampling.select` chose: ``order`` [B] (pool positions, in the
    order queried), ``answers`` [B, K] (the victim's, from :meth:`KnockoffNets.answers`)
    and ``shares`` [A] (the share of the queries each action drew)."""

    order: Tensor
    answers: Tensor
    shares: Tensor


class AdaptiveSampling(Configured):
    """Knockoff Nets' adaptive strategy (Orekondy et al. CVPR 2019, Sec. 4.1.2): a
    gradient bandit learns which of the pool's labels (the actions) yield useful queries.

    Each round draws ``round_size`` actions from ``softmax(H)``, takes an unqueried pool
    sample of each, asks the victim, and trains an online copy one step of the recipe's
    optimizer on the answers. Each query earns the paper's three rewards: certainty (the
    victim's top probability minus its second), diversity (how far the answer rises above
    the mean of the last ``window`` answers, summed over the classes) and loss (the
    online copy's cross-entropy against the answer, before its step). Each reward is standardised by
    its running mean and deviation and the three are summed; then
    ``H += bandit_lr * (r - mean r) * (onehot(action) - softmax(H))`` (Sutton & Barto's
    gradient bandit, the paper's update). An action whose samples are all queried drops
    out. The paper's actions are the leaves of a label hierarchy; here they are the flat
    labels of the pool.

    The authors' code ships no adaptive strategy (its ``AdaptiveAdversary`` draws at
    random), and the paper states neither the step size nor the scaling of the rewards:
    ``bandit_lr`` 0.1, standardised rewards, ``window`` 100 and rounds of 16 queries are
    assay's choices.

    Parameters (keyword-only)
    -------------------------
    bandit_lr : float > 0, default 0.1
    round_size : int >= 1, default 16 - queries per round (one policy and copy update)
    window : int >= 1, default 100 - answers the diversity reward compares against
    """

    constraints = {"bandit_lr": Float(low=0.0, low_open=True), "round_size": Int(low=1),
                   "window": Int(low=1)}

    def __init__(self, *, bandit_lr: float = 0.1, round_size: int = 16,
                 window: int = 100) -> None:
        self.bandit_lr = self._validated("bandit_lr", bandit_lr)
        self.round_size = self._validated("round_size", round_size)
        self.window = self._validated("window", window)

    def select(self, attack: KnockoffNets, victim: ModelWrapper, pool: Dataset, budget: int,
               recipe: TrainingRecipe, *, seed: int) -> AdaptiveQueries:
        """Query ``victim`` ``budget`` times from ``pool`` (its labels are the actions),
        each pool sample at most once; the online copy follows ``recipe``'s architecture
        and learning rate."""
        if not 1 <= budget <= len(pool):
            raise AssayValueError(f"AdaptiveSampling.select: the budget must be in [1, "
                                  f"{len(pool)}] (the pool's samples). Got {budget!r}.")
        generator = seeded_generator(seed)
        actions = int(pool.y.max()) + 1
        # each action's samples in a seeded order; next_free[a] is the next one to query
        by_action = [torch.nonzero(pool.y == a).flatten() for a in range(actions)]
        by_action = [idx[torch.randperm(len(idx), generator=generator)] for idx in by_action]
        next_free = [0] * actions
        preference = torch.zeros(actions, dtype=torch.float64)
        moments, baseline = _Moments(3), _Moments(1)  # of the 3 rewards; of their sum
        online = recipe_model(recipe, pool, victim, seed=seed, name="online copy")
        optimiser = make_optimizer(online, recipe.config)
        order: list[int] = []
        answers: list[Tensor] = []
        drawn = torch.zeros(actions)
        recent = torch.zeros(0, victim.num_classes)
        while len(order) < budget:
            open_ = torch.tensor([next_free[a] < len(by_action[a]) for a in range(actions)])
            policy = torch.softmax(preference.masked_fill(~open_, -math.inf), 0)
            picks, idx = [], []
            for a in torch.multinomial(policy, min(self.round_size, budget - len(order)),
                                       replacement=True, generator=generator).tolist():
                if next_free[a] < len(by_action[a]):  # a draw may empty its action
                    idx.append(int(by_action[a][next_free[a]]))
                    next_free[a] += 1
                    picks.append(a)
            x = pool.x[idx].to(victim.device)
            y = attack.answers(victim, x)
            online.train()
            log_copy = torch.log_softmax(online(x), dim=1)
            loss = -(y.to(log_copy.device) * log_copy).sum(1)
            optimiser.zero_grad(set_to_none=True)
            loss.mean().backward()
            optimiser.step()
            online.eval()
            top2 = y.topk(min(2, y.shape[1]), dim=1).values
            certainty = top2[:, 0] - (top2[:, 1] if top2.shape[1] > 1 else 0)
            typical = recent.mean(0) if len(recent) else y.new_full((y.shape[1],), math.inf)
            diversity = (y - typical).clamp_min(0).sum(1)
            rewards = torch.stack([certainty, diversity, loss.detach().cpu()], 1).double()
            moments.add(rewards)
            reward = moments.standardised(rewards).sum(1)
            advantage = reward - baseline.mean  # against the rewards before this round
            baseline.add(reward[:, None])
            chosen = torch.tensor(picks)
            onehot = F.one_hot(chosen, actions).double()
            preference += self.bandit_lr * (advantage[:, None] * (onehot - policy[None])).sum(0)
            order += idx
            answers.append(y)
            drawn += torch.bincount(chosen, minlength=actions).float()
            recent = torch.cat([recent, y])[-self.window:]
        return AdaptiveQueries(torch.tensor(order), torch.cat(answers), drawn / drawn.sum())


class _Moments:
    """The running mean and variance of each column of the rows added (Welford)."""

    def __init__(self, columns: int) -> None:
        self.count = 0
        self.mean = torch.zeros(columns, dtype=torch.float64)
        self.squares = torch.zeros(columns, dtype=torch.float64)

    def add(self, rows: Tensor) -> None:
        for row in rows.double():
            self.count += 1
            delta = row - self.mean
            self.mean += delta / self.count
            self.squares += delta * (row - self.mean)

    def standardised(self, rows: Tensor) -> Tensor:
        std = (self.squares / max(self.count - 1, 1)).sqrt().clamp_min(1e-8)
        return (rows - self.mean) / std
