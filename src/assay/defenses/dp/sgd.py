"""DP-SGD: per-sample gradients clipped to an L2 norm, summed, noised with a Gaussian and
averaged over the expected batch, each batch Poisson-sampled.

M. Abadi, A. Chu, I. Goodfellow, H. B. McMahan, I. Mironov, K. Talwar, L. Zhang. "Deep
Learning with Differential Privacy". CCS 2016. The averaging by the expected batch size
under Poisson sampling follows Opacus: A. Yousefpour et al. "Opacus: User-Friendly
Differential Privacy Library in PyTorch". arXiv 2109.12298, 2021.

Per-sample gradients come from ``torch.func``: ``vmap(grad(loss))`` over
``functional_call`` of the model with its own parameters, one sample at a time in the
vmapped function, so no layer needs hooks. :class:`DPSGDStep` is a ``step_fn`` of
:func:`assay.core.training.fit` and :class:`PoissonSampler` its ``sampler``.
"""

from __future__ import annotations

import math
import secrets
from typing import Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, vmap

from ..._params import check_choice, check_float, check_int, check_optional_seed
from ...core.rng import seeded_generator
from ...core.training import LossFn, cross_entropy_loss
from . import ghost
from .clipping import Gradients, clipping_factors, per_sample_norms


def fresh_seed() -> int:
    """A seed from the operating system's entropy: noise an adversary cannot replay."""
    return secrets.randbits(63)


def per_sample_gradients(model: nn.Module, x: Tensor, y: Tensor,
                         loss_fn: LossFn = cross_entropy_loss) -> tuple[Gradients, Tensor]:
    """The gradient of each sample's loss with respect to each trainable parameter of
    ``model`` (``{name: [B, *param.shape]}``) and the losses ``[B]``.

    ``loss_fn(model, x, y)`` is called on one sample at a time (``x[i:i + 1]``), with a
    callable standing for ``model`` that runs it on the parameters being differentiated;
    a loss that draws random numbers draws them per sample."""
    params = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    buffers = dict(model.named_buffers())

    def sample_loss(weights: Gradients, xi: Tensor, yi: Tensor) -> Tensor:
        def forward(inputs: Tensor) -> Tensor:
            # tie_weights=False: a layer used twice is one module, swapped once; with ties
            # torch 2.13 swaps it under both names and restores a plain tensor in place of
            # its Parameter
            return functional_call(model, (weights, buffers), (inputs,), tie_weights=False)
        return loss_fn(forward, xi.unsqueeze(0), yi.unsqueeze(0))  # type: ignore[arg-type]

    if len(y) == 0:  # a Poisson batch may be empty
        return ({name: p.new_zeros((0, *p.shape)) for name, p in params.items()},
                x.new_zeros(0))
    grads, losses = vmap(grad_and_value(sample_loss), in_dims=(None, 0, 0),
                         randomness="different")(params, x, y)
    return grads, losses


class DPSGDStep:
    """One DP-SGD update, as :func:`~assay.core.training.fit`'s ``step_fn``.

    Each parameter's ``.grad`` is set to ``(sum_i clip_C(g_i) + N(0, (sigma C)^2 I)) / B``
    with ``g_i`` the per-sample gradients (:func:`per_sample_gradients`), ``clip_C`` the
    scaling to flat L2 norm at most ``C``, and ``B`` the *expected* batch size (the sum
    must not be divided by a Poisson batch's own size, which depends on the data), then
    ``optimizer.step()`` runs. Abadi et al. 2016, algorithm 1.

    max_grad_norm : float > 0 - the clipping norm ``C`` (no default)
    noise_multiplier : float >= 0 - ``sigma``, the noise's standard deviation over ``C``
        (0 for no noise; no default)
    expected_batch_size : int >= 1 - ``B`` (no default)
    seed : int >= 0 or None, default None - seeds the noise; None draws a seed from the
        operating system, since noise that can be replayed protects nothing: pass a seed
        only to make runs repeat
    method : {"auto", "vmap"}, default "auto" - "vmap": every per-sample gradient from
        ``torch.func``; "auto": the clipped sum of :mod:`assay.defenses.dp.ghost` (the
        same numbers, without per-sample weight gradients of linear layers) when the
        model's trainable layers are linear and conv2d and the loss is the default
        cross-entropy, else "vmap"
    """

    def __init__(self, *, max_grad_norm: float, noise_multiplier: float,
                 expected_batch_size: int, seed: int | None = None,
                 method: Literal["auto", "vmap"] = "auto") -> None:
        owner = "DPSGDStep"
        self.method = check_choice("method", method, ("auto", "vmap"), owner)
        self.max_grad_norm = check_float("max_grad_norm", max_grad_norm, owner, low=0.0,
                                         low_open=True)
        self.noise_multiplier = check_float("noise_multiplier", noise_multiplier, owner,
                                            low=0.0)
        self.expected_batch_size = check_int("expected_batch_size", expected_batch_size,
                                             owner, low=1)
        seed = check_optional_seed("seed", seed, owner)
        self.seed = fresh_seed() if seed is None else seed
        self._generator: torch.Generator | None = None

    def _noise_generator(self, device: torch.device) -> torch.Generator:
        if self._generator is None or self._generator.device != device:
            self._generator = seeded_generator(self.seed, device)
        return self._generator

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn,
                 optimizer: torch.optim.Optimizer) -> Tensor:
        summed, losses = self.clipped_sum(model, x, y, loss_fn)
        params = dict(model.named_parameters())
        std = self.noise_multiplier * self.max_grad_norm
        for name, total in summed.items():
            param = params[name]
            if std > 0:
                total = total + torch.normal(
                    0.0, std, size=param.shape, device=param.device, dtype=param.dtype,
                    generator=self._noise_generator(param.device))
            param.grad = total / self.expected_batch_size
        optimizer.step()
        return losses.mean() if len(losses) else losses.new_zeros(())

    def clipped_sum(self, model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn
                    ) -> tuple[Gradients, Tensor]:
        """``{name: sum_i clip_C(g_i)}`` over the batch and the per-sample losses."""
        if len(y) and self.method == "auto" and ghost.supports(model, loss_fn):
            found = ghost.clipped_gradient_sum(model, x, y, self.max_grad_norm)
            if found is not None:
                return found[0], found[2]
        grads, losses = per_sample_gradients(model, x, y, loss_fn)
        factors = (clipping_factors(per_sample_norms(grads), self.max_grad_norm) if len(y)
                   else x.new_zeros(0))
        return ({name: torch.einsum("b,b...->...", factors.to(g.dtype), g)
                 for name, g in grads.items()}, losses)


class PoissonSampler:
    """:func:`~assay.core.training.fit`'s ``sampler`` for DP-SGD: ``steps_per_epoch``
    batches an epoch, each holding every sample independently with probability
    ``sample_rate`` (the sampling that the accountant's subsampled Gaussian assumes), from
    its own generator seeded with ``seed`` (None: from the operating system, as for the
    noise: an adversary who can replay the batches loses nothing to the sampling).
    ``fit``'s own generator is not used."""

    def __init__(self, *, sample_rate: float, steps_per_epoch: int,
                 seed: int | None = None) -> None:
        owner = "PoissonSampler"
        self.sample_rate = check_float("sample_rate", sample_rate, owner, low=0.0, high=1.0,
                                       low_open=True)
        self.steps_per_epoch = check_int("steps_per_epoch", steps_per_epoch, owner, low=1)
        seed = check_optional_seed("seed", seed, owner)
        self.generator = seeded_generator(fresh_seed() if seed is None else seed)

    def __call__(self, n: int, generator: torch.Generator | None = None) -> list[Tensor]:
        return [torch.nonzero(torch.rand(n, generator=self.generator) < self.sample_rate)
                .flatten() for _ in range(self.steps_per_epoch)]


def steps_per_epoch(n: int, expected_batch_size: int) -> int:
    """Batches an epoch: as many as plain batching makes (``ceil(n / B)``)."""
    return math.ceil(n / expected_batch_size)

