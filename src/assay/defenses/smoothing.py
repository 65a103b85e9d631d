"""Randomized smoothing: a classifier with a certified L2 radius, and the noise training it needs.

Reference:
    Jeremy Cohen, Elan Rosenfeld and J. Zico Kolter, "Certified Adversarial Robustness via
    Randomized Smoothing", ICML 2019 (Sec. 3.2, algorithms CERTIFY and PREDICT).

The smoothed classifier of a base classifier f is ``g(x) = argmax_c P(f(x + e) = c)`` with
``e ~ N(0, sigma^2 I)``. If the top class has probability ``pA >= pA_lower > 1/2``, g
predicts it everywhere in the L2 ball of radius ``sigma * Phi^-1(pA_lower)`` around x
(Theorem 1 with pB = 1 - pA). Both procedures estimate these probabilities by Monte Carlo:

* CERTIFY: ``n0`` noisy copies select the candidate class cA (the most frequent
  prediction), ``n`` fresh copies count nA = #{f(x + e) = cA}; the one-sided
  Clopper-Pearson lower bound ``pA_lower = Beta.ppf(alpha, nA, n - nA + 1)`` holds with
  probability >= 1 - alpha. If ``pA_lower > 1/2`` the result is cA with radius
  ``sigma * Phi^-1(pA_lower)``, else an abstention.
* PREDICT: ``n`` noisy copies give the two top counts nA >= nB; the result is cA when the
  two-sided binomial test of nA successes in nA + nB trials at p = 1/2 has p-value
  <= alpha, else an abstention (then g's prediction differs from the returned class with
  probability at most alpha).

Defaults are the paper's (and its reference code's): ``n0 = 100``, ``n = 100_000``,
``alpha = 0.001``; but 256 noisy inputs per forward pass, not 1000 (see ``batch_size``).
With n samples the largest radius CERTIFY can return is ``sigma * Phi^-1(alpha ** (1 / n))``
(all n copies in cA), e.g. 0.95 for sigma = 0.25, n = 100_000, alpha = 0.001
(:func:`max_certified_radius`).

Conventions:

* Abstention is the class ``-1`` (:data:`ABSTAIN`) with radius ``0.0`` (the paper's
  reference code does the same); a certified point has radius ``>= 0``.
* The noise is added in the model's input space (its natural range, e.g. [0, 1] images;
  a :class:`~assay.core.model.ModelWrapper` normalises after the noise) and is *not*
  clipped to the model's bounds, as in the paper: clipping would change the noise
  distribution and void the certificate.
* Noise is drawn on the model's device from a ``torch.Generator`` seeded with ``seed``;
  each call restarts from that seed, so the same call repeats exactly (on the same
  device; CPU and CUDA streams differ). Noisy copies of several inputs share a forward
  pass: the ``len(x) * (n0 + n)`` copies are cut into chunks of ``batch_size``, so every
  forward pass but the last is full whatever ``n`` is. On CPU a convolutional model runs
  as a channels_last copy (``channels_last=None``), as the robustness evaluation does.

Example::

    >>> import torch
    >>> from torch import nn
    >>> from assay.defenses.smoothing import SmoothedClassifier
    >>> net = nn.Linear(2, 2)
    >>> with torch.no_grad():
    ...     _ = net.weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
    ...     _ = net.bias.zero_()
    >>> smoothed = SmoothedClassifier(net, sigma=0.5, seed=0)
    >>> x = torch.tensor([[1.0, 0.0], [0.0, 3.0]])  # distance 1 and 0 from the boundary
    >>> result = smoothed.certify(x, n=10_000)
    >>> result.prediction.tolist()
    [0, -1]
    >>> 0.9 < float(result.radius[0]) < 1.0
    True
    >>> smoothed.predict(x, n=1000).tolist()
    [0, -1]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import beta, binom, norm
from torch import Tensor, nn
from torch.nn import functional as F

from .._params import check_float, check_int
from ..core.inference import (AutoCompiledForward, channels_last_copy, eval_mode,
                              gains_from_channels_last,
                              model_device)
from ..core.progress import progress_bar
from ..core.rng import seeded_generator
from ..errors import AssayValueError

__all__ = ["ABSTAIN", "Certification", "SmoothedClassifier", "binomial_p_value",
           "clopper_pearson_lower",
           "gaussian_augmentation_loss", "max_certified_radius"]

ABSTAIN = -1
# Above this many inputs in one forward pass, their noisy copies are built by one gather.
_MAX_SEGMENTS = 16


@dataclass(frozen=True)
class Certification:
    """What :meth:`SmoothedClassifier.certify` returns for ``N`` inputs and ``K`` classes.

    prediction : LongTensor [N] - the certified class cA, or ``-1`` (abstain)
    radius : FloatTensor [N] (float64) - certified L2 radius; 0.0 where abstaining
    p_lower : FloatTensor [N] (float64) - Clopper-Pearson lower bound on P(f(x+e) = cA)
    candidate : LongTensor [N] - cA chosen by the n0 selection samples (also when abstaining)
    counts : LongTensor [N, K] - class counts of the ``n`` estimation samples
    n : int - estimation samples per input
    """

    prediction: Tensor
    radius: Tensor
    p_lower: Tensor
    candidate: Tensor
    counts: Tensor
    n: int


def clopper_pearson_lower(k: np.ndarray, n: int, alpha: float) -> np.ndarray:
    """One-sided ``1 - alpha`` Clopper-Pearson lower bound on a binomial proportion.

    ``Beta.ppf(alpha, k, n - k + 1)``; 0 for k = 0 and exactly ``alpha ** (1 / n)`` for
    k = n (the closed form of that quantile).
    """
    k = np.asarray(k, dtype=np.float64)
    safe = np.clip(k, 1, n)
    bound = beta.ppf(alpha, safe, n - safe + 1)
    bound = np.where(k >= n, alpha ** (1.0 / n), bound)
    return np.where(k <= 0, 0.0, bound)


def binomial_p_value(n_a: np.ndarray, n_b: np.ndarray) -> np.ndarray:
    """Two-sided p-value of ``n_a`` successes in ``n_a + n_b`` trials at p = 1/2, for
    ``n_a >= n_b``: ``min(1, 2 * BinomCDF(n_b; n_a + n_b, 1/2))``, the value of
    ``scipy.stats.binomtest(n_a, n_a + n_b, 0.5).pvalue`` (the distribution is symmetric)."""
    n_a, n_b = np.asarray(n_a, dtype=np.int64), np.asarray(n_b, dtype=np.int64)
    return np.minimum(1.0, 2.0 * binom.cdf(n_b, n_a + n_b, 0.5))


def max_certified_radius(sigma: float, n: int, alpha: float) -> float:
    """``sigma * Phi^-1(alpha ** (1 / n))``: the largest radius CERTIFY can return with n
    samples (every noisy copy in the top class)."""
    return float(sigma * norm.ppf(alpha ** (1.0 / n)))


class SmoothedClassifier:
    """Gaussian randomized smoothing of a base classifier (Cohen et al., ICML 2019).

    Parameters
    ----------
    model : nn.Module
        The base classifier: inputs ``[B, *shape]`` in its natural range -> logits ``[B, K]``
        (an :class:`~assay.core.model.ModelWrapper` or a bare network).
    sigma : float, default 0.25
        Standard deviation of the Gaussian noise, > 0, in input units. The certificate is
        only useful if the model was trained with noise of this size
        (:func:`gaussian_augmentation_loss`).
    batch_size : int, default 256
        Noisy inputs per forward pass. The paper's code uses 1000; on CPU passes that large
        fall out of cache (MNIST LeNet, 2 threads: 2.6 s per 10,100 copies at 1000 against
        1.2 s at 256, channels_last). On a GPU larger passes are faster: raise it there.
    seed : int, default 0
        Seeds the noise generator; every call restarts from it.
    progress : bool, default False
        Show a progress bar over the forward passes.
    channels_last : bool or None, default None
        Run a copy of the model with its 4-D weights in channels_last memory format (the
        same function, faster CPU convolution kernels: 1.6x on the MNIST LeNet). None: do
        so on CPU for 4-D inputs and a model with a ``Conv2d``. The caller's model is not
        changed. Logits may differ from the default layout by float rounding (~1e-7), which
        can flip an argmax only on an exact near-tie.
    compile : bool or None, default None
        Run the forward passes through a frozen TorchScript trace of the model
        (:func:`assay.core.inference.compile_for_inference`: checked against the model on
        the first batch, dropped with a warning if it fails or disagrees; 1.5x to 1.7x
        faster passes for the zoo's conv nets on 2 CPU threads). None: decide by timing, on
        CPU only (:class:`~assay.core.inference.AutoCompiledForward`): compile when the
        first passes show at least 10 s of eager work left, and keep the compiled copy
        only if its passes are at least 10% faster. Same rounding caveat as
        ``channels_last``.

    Methods ``certify(x, n0=100, n=100_000, alpha=0.001)`` and
    ``predict(x, n=100_000, alpha=0.001)`` take ``x`` of shape ``[N, *shape]`` (moved to
    the model's device) and leave the model's train/eval mode as they found it. See the
    module docstring for the algorithms, the abstention convention and an example.
    """

    def __init__(self, model: nn.Module, *, sigma: float = 0.25, batch_size: int = 256,
                 seed: int = 0, progress: bool = False,
                 channels_last: bool | None = None, compile: bool | None = None) -> None:
        owner = "SmoothedClassifier"
        if not isinstance(model, nn.Module):
            raise AssayValueError(f"The 'model' parameter of {owner} must be a torch.nn.Module. "
                                  f"Got {type(model).__name__} instead.")
        self.model = model
        self.sigma = check_float("sigma", sigma, owner, low=0.0, low_open=True)
        self.batch_size = check_int("batch_size", batch_size, owner, low=1)
        self.seed = check_int("seed", seed, owner, low=0)
        self.progress = bool(progress)
        if channels_last is not None and not isinstance(channels_last, bool):
            raise AssayValueError(f"The 'channels_last' parameter of {owner} must be a bool or "
                                  f"None. Got {channels_last!r} instead.")
        self.channels_last = channels_last
        if compile is not None and not isinstance(compile, bool):
            raise AssayValueError(f"The 'compile' parameter of {owner} must be a bool or None. "
                                  f"Got {compile!r} instead.")
        self.compile = compile

    # ------------------------------------------------------------------ algorithms
    def certify(self, x: Tensor, *, n0: int = 100, n: int = 100_000,
                alpha: float = 0.001) -> Certification:
        """CERTIFY each input of ``x`` ``[N, *shape]``: class and certified L2 radius."""
        owner = "SmoothedClassifier.certify"
        check_int("n0", n0, owner, low=1)
        check_int("n", n, owner, low=1)
        check_float("alpha", alpha, owner, low=0.0, high=1.0, low_open=True, high_open=True)
        counts = self._sample_counts(x, (n0, n), owner)
        candidate = counts[:, 0].argmax(1)
        n_a = counts[:, 1].gather(1, candidate[:, None]).squeeze(1)
        p_lower = clopper_pearson_lower(n_a.cpu().numpy(), n, alpha)
        certified = p_lower > 0.5
        radius = np.where(certified, self.sigma * norm.ppf(np.where(certified, p_lower, 0.75)),
                          0.0)
        device = counts.device
        certified_t = torch.as_tensor(certified, device=device)
        prediction = torch.where(certified_t, candidate, torch.full_like(candidate, ABSTAIN))
        return Certification(prediction, torch.as_tensor(radius, device=device),
                             torch.as_tensor(p_lower, device=device), candidate,
                             counts[:, 1], n)

    def predict(self, x: Tensor, *, n: int = 100_000, alpha: float = 0.001) -> Tensor:
        """PREDICT for each input of ``x`` ``[N, *shape]``: LongTensor [N], -1 = abstain.

        The two-sided binomial p-value at p = 1/2 (``scipy.stats.binomtest(nA, nA + nB)``)
        is computed in closed form, ``min(1, 2 * BinomCDF(nB; nA + nB, 1/2))``, for all
        inputs at once.
        """
        owner = "SmoothedClassifier.predict"
        check_int("n", n, owner, low=1)
        check_float("alpha", alpha, owner, low=0.0, high=1.0, low_open=True, high_open=True)
        counts = self._sample_counts(x, (n,), owner)[:, 0]
        top = counts.topk(2, dim=1) if counts.shape[1] > 1 else None
        if top is None:
            return torch.zeros(len(counts), dtype=torch.long, device=counts.device)
        p_value = binomial_p_value(top.values[:, 0].cpu().numpy(), top.values[:, 1].cpu().numpy())
        keep = torch.as_tensor(p_value <= alpha, device=counts.device)
        return torch.where(keep, top.indices[:, 0], torch.full_like(top.indices[:, 0], ABSTAIN))

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def _sample_counts(self, x: Tensor, phases: tuple[int, ...], owner: str) -> Tensor:
        """Class counts ``[N, len(phases), K]`` of the base model on noisy copies of x.

        Input i gets ``sum(phases)`` copies; the first ``phases[0]`` count in phase 0, the
        next ``phases[1]`` in phase 1. The copies of all inputs form one stream cut into
        forward passes of ``batch_size``; each pass gathers its inputs, adds noise, and
        adds ``bincount`` of (input, phase, argmax) to the counts.
        """
        if not isinstance(x, Tensor) or x.ndim < 1 or not x.is_floating_point():
            raise AssayValueError(f"{owner}: x must be a floating-point tensor [N, *shape]; got "
                                  f"{type(x).__name__ if not isinstance(x, Tensor) else x.dtype}.")
        model = self.model
        device = model_device(model, x.device)
        x = x.detach().to(device)
        per_input = sum(phases)
        n_phases = len(phases)
        use_cl = self.channels_last
        if use_cl is None:
            use_cl = gains_from_channels_last(model, x)
        total = len(x) * per_input
        use_compile = self.compile
        if use_compile is None and device.type != "cpu":
            use_compile = False
        with eval_mode(model):
            if use_cl:
                model = channels_last_copy(model)
            starts = range(0, total, self.batch_size)
            forward = AutoCompiledForward(model, passes=len(starts), compile=use_compile,
                                          owner=owner)
            generator = seeded_generator(self.seed, device)
            num_classes = getattr(model, "num_classes", None)
            counts = None
            if isinstance(num_classes, int):
                counts = torch.zeros(len(x), n_phases, num_classes, dtype=torch.long,
                                     device=device)
            # phase of each position within one input's copies
            bounds = torch.tensor(np.cumsum(phases)[:-1], device=device)
            for start in progress_bar(starts, desc="randomized smoothing", enabled=self.progress,
                                      total=len(starts)):
                stop = min(start + self.batch_size, total)
                flat = torch.arange(start, stop, device=device)
                which = flat // per_input
                noisy = torch.randn((stop - start, *x.shape[1:]), generator=generator,
                                    device=device, dtype=x.dtype)
                first, last = start // per_input, (stop - 1) // per_input
                if last - first < _MAX_SEGMENTS:
                    # x_i + sigma * e in one pass per input, written over the noise
                    for i in range(first, last + 1):
                        a = max(start, i * per_input) - start
                        b = min(stop, (i + 1) * per_input) - start
                        torch.add(x[i], noisy[a:b], alpha=self.sigma, out=noisy[a:b])
                else:  # many short runs of copies: one gather
                    noisy.mul_(self.sigma).add_(x.index_select(0, which))
                logits = forward(noisy)
                if counts is None:  # a bare network: learn K from its first output
                    counts = torch.zeros(len(x), n_phases, logits.shape[1], dtype=torch.long,
                                         device=device)
                k = counts.shape[2]
                key = (which - first) * n_phases * k + logits.argmax(1)
                if n_phases > 1:
                    phase = torch.bucketize(flat - which * per_input, bounds, right=True)
                    key += phase * k
                span = (last - first + 1) * n_phases * k
                counts[first:last + 1] += torch.bincount(key, minlength=span).view(-1, n_phases, k)
        if counts is None:  # no inputs
            k = num_classes if isinstance(num_classes, int) else 0
            counts = torch.zeros(0, n_phases, k, dtype=torch.long, device=device)
        return counts


def gaussian_augmentation_loss(sigma: float, *, seed: int = 0):
    """A ``loss_fn(model, x, y)`` for :func:`assay.core.training.fit`: cross-entropy on
    ``x + sigma * e``, ``e ~ N(0, I)``, the training of Cohen et al. (ICML 2019), who train
    each base model with noise of the sigma it is then smoothed with.

    The noise is not clipped (as at certification) and comes from a generator on the
    batch's device seeded with ``seed``, created at the first batch.

    Example::

        >>> from assay.core.training import TrainConfig, fit
        >>> loss_fn = gaussian_augmentation_loss(0.25)
        >>> # fit(net, train, TrainConfig(epochs=5), loss_fn=loss_fn)
    """
    owner = "gaussian_augmentation_loss"
    sigma = check_float("sigma", sigma, owner, low=0.0)
    seed = check_int("seed", seed, owner, low=0)
    generators: dict[torch.device, torch.Generator] = {}

    def loss_fn(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        generator = generators.get(x.device)
        if generator is None:
            generator = generators[x.device] = seeded_generator(seed, x.device)
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return F.cross_entropy(model(x + sigma * noise), y)

    return loss_fn

