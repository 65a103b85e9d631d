"""DP-SGD training through :func:`assay.core.training.fit` at a claimed (epsilon, delta):
the noise multiplier calibrated by the accountant (or checked against the claim), the
model validated first, and the guarantee stated in a :class:`PrivacyGuarantee`."""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

from torch import nn

from ..._params import check_choice, check_float, check_optional_seed
from ...core.data import Dataset
from ...core.training import TrainConfig, TrainHistory, fit
from ...errors import AssayValueError, AssayWarning
from .accounting import ACCOUNTANTS, Accountant, calibrate_noise, check_delta, check_epsilon, \
    dp_sgd_epsilon
from .sgd import DPSGDStep, PoissonSampler, fresh_seed, steps_per_epoch
from .validators import validate_private_model


@dataclass(frozen=True)
class PrivacyGuarantee:
    """What a DP-SGD run guarantees: (``epsilon``, ``delta``)-DP by ``accountant`` for
    ``steps`` steps of noise multiplier ``noise_multiplier`` and clipping norm
    ``max_grad_norm``, each batch drawn at ``sample_rate`` (``poisson_sampling``: every
    sample independently, as the accountant assumes) around ``expected_batch_size``."""

    epsilon: float
    delta: float
    accountant: Accountant
    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    steps: int
    expected_batch_size: int
    poisson_sampling: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class DPTrainingResult:
    history: TrainHistory
    guarantee: PrivacyGuarantee


def plan_guarantee(n: int, *, epsilon: float, delta: float, config: TrainConfig,
                   max_grad_norm: float = 1.0, noise_multiplier: float | None = None,
                   accountant: Accountant = "rdp") -> PrivacyGuarantee:
    """The guarantee of DP-SGD on ``n`` samples with ``config``'s epochs and batch size
    (the expected batch), before any training: ``noise_multiplier`` calibrated to
    ``epsilon`` when None, else its own epsilon, refused when above ``epsilon``."""
    owner = "DP-SGD"
    check_epsilon(epsilon, owner)
    check_delta(delta, owner)
    check_float("max_grad_norm", max_grad_norm, owner, low=0.0, low_open=True)
    check_choice("accountant", accountant, ACCOUNTANTS, owner)
    if noise_multiplier is not None:
        check_float("noise_multiplier", noise_multiplier, owner, low=0.0, low_open=True)
    if config.batch_size > n:
        raise AssayValueError(f"The batch size {config.batch_size} is larger than the "
                              f"{n} training samples: DP-SGD samples a batch at rate "
                              "batch_size / samples; lower the batch size.")
    if config.epochs < 1:
        raise AssayValueError("DP-SGD needs at least one epoch (got epochs "
                              f"{config.epochs}).")
    if delta >= 1 / n:
        warnings.warn(f"delta {delta:g} is not below 1 / {n} (the training samples): at that "
                      "delta, publishing a random record outright meets the guarantee; pick "
                      f"delta well below {1 / n:.3g}.", AssayWarning, stacklevel=2)
    rate = config.batch_size / n
    steps = config.epochs * steps_per_epoch(n, config.batch_size)
    sigma = (calibrate_noise(epsilon, delta, rate, steps, accountant)
             if noise_multiplier is None else noise_multiplier)
    spent = dp_sgd_epsilon(sigma, rate, steps, delta, accountant)
    if spent > epsilon:
        least = calibrate_noise(epsilon, delta, rate, steps, accountant)
        raise AssayValueError(
            f"The noise multiplier {sigma:g} gives epsilon {spent:.3g} > the claimed epsilon "
            f"{epsilon:g} ({accountant}, delta {delta:g}, {steps} steps at sampling rate "
            f"{rate:.3g}): raise it to at least {least:.4g}, or leave it out to calibrate it.")
    return PrivacyGuarantee(epsilon=spent, delta=delta, accountant=accountant,
                            noise_multiplier=sigma, max_grad_norm=max_grad_norm,
                            sample_rate=rate, steps=steps,
                            expected_batch_size=config.batch_size)


def train_dp_sgd(model: nn.Module, data: Dataset, *, epsilon: float, delta: float,
                 max_grad_norm: float = 1.0, noise_multiplier: float | None = None,
                 accountant: Accountant = "rdp", config: TrainConfig = TrainConfig(),
                 seed: int | None = None, show_progress: bool = True) -> DPTrainingResult:
    """Train ``model`` in place with DP-SGD (Abadi et al. CCS 2016) to
    (``epsilon``, ``delta``)-DP and return the history and the :class:`PrivacyGuarantee`.

    epsilon : float > 0, delta : float in (0, 1) - the claim (no defaults)
    max_grad_norm : float > 0, default 1.0 - the clipping norm
    noise_multiplier : float > 0 or None, default None - None calibrates it to the claim
        (:func:`~assay.defenses.dp.accounting.calibrate_noise`); a given one that spends
        more than ``epsilon`` is refused
    accountant : {"rdp", "pld"}, default "rdp"
    config : TrainConfig - epochs, the expected batch size (sampling rate
        ``batch_size / len(data)``, ``ceil(len(data) / batch_size)`` steps an epoch),
        optimizer and learning rate; ``config.seed`` is not used
    seed : int >= 0 or None, default None - the Poisson sampling's seed (the noise's is
        ``seed + 1``); None draws both from the operating system. A known seed lets anyone
        replay the noise: pass one to make runs repeat, not for a model you publish.

    The model is refused before any work when a layer has no per-sample gradient
    (:func:`~assay.defenses.dp.validators.validate_private_model`: BatchNorm, with the fix).
    """
    validate_private_model(model)
    check_optional_seed("seed", seed, "DP-SGD")
    guarantee = plan_guarantee(len(data), epsilon=epsilon, delta=delta, config=config,
                               max_grad_norm=max_grad_norm, noise_multiplier=noise_multiplier,
                               accountant=accountant)
    seed = fresh_seed() if seed is None else seed
    sampler = PoissonSampler(sample_rate=guarantee.sample_rate,
                             steps_per_epoch=guarantee.steps // config.epochs, seed=seed)
    step = DPSGDStep(max_grad_norm=max_grad_norm, noise_multiplier=guarantee.noise_multiplier,
                     expected_batch_size=config.batch_size, seed=seed + 1)
    history = fit(model, data, config, step_fn=step, sampler=sampler,
                  show_progress=show_progress)
    if not all(math.isfinite(loss) for loss in history.loss):
        raise AssayValueError("DP-SGD diverged (a non-finite loss): lower the learning rate.")
    return DPTrainingResult(history, guarantee)
