"""Reference models for membership inference: which pool samples each one trains on,
and how it is trained and queried.

Carlini et al. ("Membership Inference Attacks From First Principles", S&P 2022) train
reference ("shadow") models on random halves of a pool that holds the target samples, so
that each target is IN about half of them and OUT of the others. :func:`membership_matrix`
draws that matrix from a seed, balanced as in their code: every sample is in exactly half
of ``M`` models (for odd ``M``, in ``(M - 1) / 2`` or ``(M + 1) / 2`` of them, by a fair
coin), so each has OUT models as well as IN ones and its probability of being in a given
model is exactly 1/2.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from ...core import zoo
from ...core.data import Dataset
from ...core.inference import batched_logits
from ...core.model import ModelWrapper
from ...core.rng import seeded_generator
from ...core.training import IndexedLoss, LossFn, TrainingRecipe, cross_entropy_loss, fit
from ...errors import AssayValueError
from .scores import Query, query_scores

__all__ = ["membership_matrix", "recipe_model", "reference_scores", "reference_seed",
           "train_reference"]


def membership_matrix(models: int, samples: int, seed: int) -> Tensor:
    """A bool [models, samples] matrix, True where a model trains on a sample."""
    if models < 1 or samples < 1:
        raise AssayValueError(f"membership_matrix needs at least one model and one sample; "
                              f"got {models} models and {samples} samples.")
    generator = seeded_generator(seed)
    # a random rank of each model per sample; the lower half of the ranks is in
    ranks = torch.rand(models, samples, generator=generator).argsort(0).argsort(0)
    keep = ranks < models // 2
    if models % 2:
        coin = torch.rand(samples, generator=generator) < 0.5
        keep |= (ranks == models // 2) & coin
    return keep


def reference_seed(seed: int, index: int) -> int:
    """The training and weight seed of reference model ``index`` of an audit seeded
    ``seed`` (different models, different initialisations and batch orders)."""
    return seed * 1009 + index + 1


def recipe_model(recipe: TrainingRecipe, data: Dataset, like: ModelWrapper, *, seed: int,
                 name: str) -> ModelWrapper:
    """An untrained network of ``recipe``'s architecture for ``data`` (weights seeded by
    ``seed``), wrapped with the classes, normalisation and bounds of ``like``, on its
    device."""
    net = zoo.build(recipe.arch, input_shape=data.input_shape, num_classes=like.num_classes,
                    seed=seed, schema=data.schema)
    mean = None if like.mean is None else like.mean.flatten().tolist()
    std = None if like.std is None else like.std.flatten().tolist()
    return ModelWrapper(net, num_classes=like.num_classes, input_shape=like.input_shape,
                        bounds=like.bounds, mean=mean, std=std, name=name).to(like.device)


def train_reference(recipe: TrainingRecipe, pool: Dataset, keep: Tensor, like: ModelWrapper,
                    *, seed: int,
                    loss_fn: LossFn | IndexedLoss = cross_entropy_loss) -> ModelWrapper:
    """A reference model: ``recipe``'s architecture, wrapped with the normalisation and
    bounds of the target ``like``, trained through :func:`fit` with ``recipe``'s settings
    (its seed replaced by ``seed``) on the samples of ``pool`` where ``keep`` is True, on
    ``loss_fn`` (an :class:`IndexedLoss` sees indices into those samples; model
    extraction trains its copies on the victim's probabilities so)."""
    model = recipe_model(recipe, pool, like, seed=seed, name=f"reference {seed}")
    train = pool.take(torch.nonzero(keep).flatten())
    fit(model, train, dataclasses.replace(recipe.config, seed=seed), loss_fn=loss_fn,
        show_progress=False)
    return model


def reference_scores(recipe: TrainingRecipe, pool: Dataset, keep: Tensor, like: ModelWrapper,
                     queries: list[Query], *, seed: int,
                     batch_size: int = 256) -> dict[str, Tensor]:
    """What the attacks need of a reference model trained by :func:`train_reference` on
    the pool samples where ``keep`` is True, on every pool sample (CPU, float32):
    ``"phi"`` [len(queries), len(pool)] (LiRA, RMIA) and ``"log_probs"`` [len(pool), K]
    of the plain queries (the shadow-model attack)."""
    model = train_reference(recipe, pool, keep, like, seed=seed)
    logits = batched_logits(model, pool.x, batch_size=batch_size, output_device="cpu")
    return {"phi": query_scores(model, pool.x, pool.y, queries, batch_size=batch_size).cpu(),
            "log_probs": torch.log_softmax(logits.float(), dim=1)}
