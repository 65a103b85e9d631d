"""How far an attribution can be trusted: faithfulness, sanity and robustness metrics.

- :func:`deletion_curve` / :func:`insertion_curve` and their AUC: Petsiuk, Das and Saenko,
  "RISE: Randomized Input Sampling for Explanation of Black-box Models", BMVC 2018.
- :func:`road_curve` with :func:`noisy_linear_imputation`: Rong et al., ICML 2022.
- :func:`cascading_randomisation`: Adebayo, Gilmer, Muelly, Goodfellow, Hardt and Kim,
  "Sanity Checks for Saliency Maps", NeurIPS 2018 (with :func:`spearman` and :func:`ssim`).
- :func:`max_sensitivity` and :func:`infidelity`: Yeh, Hsieh, Suggala, Inouye and
  Ravikumar, "On the (In)fidelity and Sensitivity of Explanations", NeurIPS 2019.
- :func:`completeness_error`: the completeness axiom of Integrated Gradients
  (Sundararajan et al., ICML 2017).

All of them are batched torch on the model's device: the perturbed inputs of a block of
samples go through the model in one wide pass (:func:`~assay.explain._base.expanded_blocks`).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .._params import check_bool, check_choice, check_float, check_int, check_optional_seed
from ..core.inference import batched_logits, eval_mode, model_device
from ..core.rng import seeded_generator
from ..errors import AssayValueError
from ._base import Attribution, Explainer, expanded_blocks

__all__ = ["Curve", "RandomisationResult", "cascading_randomisation", "completeness_error",
           "deletion_curve", "feature_map", "infidelity", "insertion_curve", "max_sensitivity",
           "noisy_linear_imputation", "random_attribution", "road_curve", "spearman", "ssim"]


@dataclass(frozen=True)
class Curve:
    """A deletion, insertion or ROAD curve per sample.

    fractions : Tensor [S] - share of the features removed (inserted) at each point
    scores : Tensor [N, S] - the model's softmax probability of the target there
    hits : Tensor [N, S] bool - whether the model still predicts the target there (its
        mean over samples is ROAD's accuracy curve)
    auc : Tensor [N] - area under each score curve (trapezoid rule over ``fractions``)
    """

    fractions: Tensor
    scores: Tensor
    hits: Tensor
    auc: Tensor


def feature_map(attributions: Tensor) -> Tensor:
    """One importance per feature [N, F]: images [N, C, H, W] sum their channels (a
    pixel is removed whole, as in RISE), other inputs are flattened."""
    if attributions.ndim == 4:
        return attributions.sum(1).flatten(1)
    return attributions.flatten(1)


def random_attribution(x: Tensor, seed: int | None = 0) -> Tensor:
    """Uniform noise shaped like ``x``: the baseline every method must beat."""
    generator = seeded_generator(check_optional_seed("seed", seed, "random_attribution"),
                                 x.device)
    return torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """A Gaussian blur of images [N, C, H, W] (separable, reflected edges)."""
    radius = max(1, min(int(math.ceil(2 * sigma)), min(x.shape[2:]) - 1))
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-offsets ** 2 / (2 * sigma ** 2))
    kernel = (kernel / kernel.sum()).view(1, 1, -1).repeat(x.shape[1], 1, 1)
    channels = x.shape[1]
    out = F.pad(x, (radius, radius, 0, 0), mode="reflect")
    out = F.conv2d(out, kernel.unsqueeze(2), groups=channels)
    out = F.pad(out, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(out, kernel.unsqueeze(3), groups=channels)


def _top_masks(x: Tensor, importance: Tensor, counts: Tensor, inputs: slice,
               points: slice) -> Tensor:
    """For each input of ``inputs`` and point of ``points``: the ``counts[point]`` most
    important features (stable order among ties), as a mask [n, p, ...] broadcastable to
    ``x``'s rows (one mask per pixel for images)."""
    order = importance[inputs].argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(
        importance.shape[1], device=order.device).expand(len(order), -1))
    chosen = rank[:, None, :] < counts[points, None]  # [n, p, F]
    spatial = x.shape[2:] if x.ndim == 4 else x.shape[1:]
    return chosen.view(*chosen.shape[:2], *((1,) if x.ndim == 4 else ()), *spatial)


def _score_curve(model: nn.Module, x: Tensor, importance: Tensor, target: Tensor,
                 counts: Tensor, rows_of, batch_size: int | None, owner: str) -> Curve:
    """The target's probability and hit on ``rows_of(inputs, masks)`` [n, p, ...] for the
    masks of the ``counts`` most important features of each input, blocks of inputs x
    points in passes of ``batch_size`` rows."""
    if len(x) != len(importance) or len(target) != len(x):
        raise AssayValueError(f"{owner}: x, attributions and target must have one row per "
                              f"input; got {len(x)}, {len(importance)}, {len(target)}.")
    n, features = importance.shape
    scores = torch.empty(n, len(counts), device=x.device)
    hits = torch.empty(n, len(counts), device=x.device, dtype=torch.bool)
    device = model_device(model, x.device)
    for inputs, points in expanded_blocks(n, len(counts), batch_size):
        rows = rows_of(inputs, _top_masks(x, importance, counts, inputs, points))
        k = rows.shape[1]
        logits = batched_logits(model, rows.flatten(0, 1).to(device), batch_size=None,
                                output_device=x.device, owner=owner)
        chosen = target[inputs].repeat_interleave(k)
        scores[inputs, points] = logits.softmax(1).gather(1, chosen[:, None]).view(-1, k)
        hits[inputs, points] = (logits.argmax(1) == chosen).view(-1, k)
    fractions = counts.to(scores.dtype) / features
    return Curve(fractions, scores, hits, torch.trapezoid(scores, fractions, dim=1))


def _curve(model: nn.Module, source: Tensor, destination: Tensor, importance: Tensor,
           target: Tensor, steps: int, batch_size: int | None, owner: str) -> Curve:
    """Move the features from ``source`` to ``destination`` most important first, in
    ``steps`` equal shares, and score the target's probability at each point."""
    check_int("steps", steps, owner, low=1)
    counts = torch.round(torch.linspace(0, importance.shape[1], steps + 1,
                                        device=source.device)).long()

    def rows_of(inputs: slice, moved: Tensor) -> Tensor:
        return torch.where(moved, destination[inputs, None], source[inputs, None])

    return _score_curve(model, source, importance, target, counts, rows_of, batch_size, owner)


def deletion_curve(model: nn.Module, x: Tensor, attributions: Tensor, target: Tensor, *,
                   steps: int = 16, baseline: float = 0.0,
                   batch_size: int | None = 256) -> Curve:
    """The target's probability as the most important features are set to ``baseline``
    (default 0.0, RISE's black), at ``steps + 1`` points (default 16 shares). Lower AUC is
    more faithful. Ties keep the features' order (stable sort)."""
    baseline = check_float("baseline", baseline, "deletion_curve")
    return _curve(model, x, torch.full_like(x, baseline), feature_map(attributions), target,
                  steps, batch_size, "deletion_curve")


def insertion_curve(model: nn.Module, x: Tensor, attributions: Tensor, target: Tensor, *,
                    steps: int = 16, blur_sigma: float | None = None,
                    batch_size: int | None = 256) -> Curve:
    """The target's probability as the most important features are put back into a
    blurred copy of the input (RISE's insertion canvas; Gaussian ``blur_sigma``, default an
    eighth of the shorter side: 1 px on 8x8 digits, 3.5 on MNIST), at ``steps + 1`` points
    (default 16 shares); tabular rows start from zeros. Higher AUC is more faithful."""
    if x.ndim == 4:
        sigma = min(x.shape[2:]) / 8 if blur_sigma is None else check_float(
            "blur_sigma", blur_sigma, "insertion_curve", low=0.0, low_open=True)
        canvas = gaussian_blur(x, sigma)
    else:
        canvas = torch.zeros_like(x)
    return _curve(model, canvas, x, feature_map(attributions), target, steps, batch_size,
                  "insertion_curve")


# ROAD's neighbour weights: 1/6 for the 4 direct neighbours, 1/12 for the 4 diagonal ones.
_NEIGHBOURS = torch.tensor([[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0.0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]])


def noisy_linear_imputation(x: Tensor, removed: Tensor, *, noise: float = 0.01,
                            generator: torch.Generator | None = None,
                            iterations: int = 200) -> Tensor:
    """Images [B, C, H, W] with the pixels of ``removed`` [B, 1, H, W] (bool) replaced as
    ROAD does (Rong et al. 2022): each removed value is the weighted mean of its 8
    neighbours (direct 1/6, diagonal 1/12; known neighbours fixed), the sparse linear
    system solved by batched conjugate gradients (``iterations``, default 200, stopping
    early at a relative residual of 1e-6), plus Gaussian noise of std ``noise`` (default
    0.01, ROAD's) on the imputed pixels only."""
    channels = x.shape[1]
    kernel = _NEIGHBOURS.to(x.device, x.dtype).expand(channels, 1, 3, 3)

    def spread(t: Tensor) -> Tensor:
        return F.conv2d(t, kernel, padding=1, groups=channels)

    mask = removed.expand_as(x).to(x.dtype)
    degree = spread(torch.ones_like(x[:1])).expand_as(x)  # fewer neighbours at the border
    known = x * (1 - mask)

    def operator(u: Tensor) -> Tensor:  # (D - W) restricted to the removed pixels
        return mask * (degree * u - spread(mask * u)) + 1e-6 * mask * u

    right = mask * spread(known)
    u = torch.zeros_like(x)
    residual = right.clone()
    direction = residual.clone()
    squares = residual.flatten(1).pow(2).sum(1)
    scale = squares.clamp_min(1e-30)
    for _ in range(iterations):
        product = operator(direction)
        step = squares / (direction * product).flatten(1).sum(1).clamp_min(1e-30)
        u = u + step.view(-1, 1, 1, 1) * direction
        residual = residual - step.view(-1, 1, 1, 1) * product
        fresh = residual.flatten(1).pow(2).sum(1)
        if bool((fresh <= 1e-12 * scale).all()):
            break
        direction = residual + (fresh / squares.clamp_min(1e-30)).view(-1, 1, 1, 1) * direction
        squares = fresh
    jitter = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return known + mask * (u + noise * jitter)


def road_curve(model: nn.Module, x: Tensor, attributions: Tensor, target: Tensor, *,
               order: Literal["morf", "lerf"] = "morf",
               fractions: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
               noise: float = 0.01, seed: int | None = 0,
               batch_size: int | None = 256) -> Curve:
    """ROAD, RemOve And Debias (Rong, Leemann, Borisov, Kasneci and Kasneci, "A Consistent
    and Efficient Evaluation Strategy for Attribution Methods", ICML 2022): the model's
    prediction as the most ("morf", default: the largest signed attribution first, lower
    accuracy is more faithful) or least ("lerf": the attribution closest to 0 first, as a
    negative one is evidence too; higher is better) important ``fractions`` of the pixels
    (default 10% to 90%)
    are replaced by :func:`noisy_linear_imputation`, which leaks less of the removed
    pixels' positions than a constant and needs no retraining. Images only; the curve's
    ``hits`` averaged over samples is ROAD's accuracy, ``auc`` the probability's area."""
    owner = "road_curve"
    order = check_choice("order", order, ("morf", "lerf"), owner)
    noise = check_float("noise", noise, owner, low=0.0)
    if x.ndim != 4:
        raise AssayValueError(f"{owner}: x must be images [N, C, H, W]; got shape "
                              f"{list(x.shape)}.")
    if not fractions or any(not 0 <= float(f) <= 1 for f in fractions):
        raise AssayValueError(f"The 'fractions' parameter of {owner} must be a non-empty "
                              f"sequence of numbers in [0, 1]. Got {fractions!r} instead.")
    generator = seeded_generator(check_optional_seed("seed", seed, owner), x.device)
    importance = feature_map(attributions)
    if order == "lerf":  # the least relevant either way first: closest to 0
        importance = -importance.abs()
    counts = torch.round(torch.tensor([float(f) for f in fractions], device=x.device)
                         * importance.shape[1]).long()

    def rows_of(inputs: slice, removed: Tensor) -> Tensor:
        n, p = removed.shape[:2]
        block = x[inputs, None].expand(-1, p, -1, -1, -1).flatten(0, 1)
        filled = noisy_linear_imputation(block, removed.flatten(0, 1), noise=noise,
                                         generator=generator)
        return filled.view(n, p, *x.shape[1:])

    return _score_curve(model, x, importance, target, counts, rows_of, batch_size, owner)


def completeness_error(result: Attribution) -> Tensor:
    """``|delta| / |f(x) - f(baseline)|`` per sample [N] for a result with a convergence
    delta (Integrated Gradients): the share of the logit gap the attributions miss.
    The gap is recovered as ``sum(attributions) - delta``."""
    if result.delta is None:
        raise AssayValueError("completeness_error needs an Attribution with a convergence "
                              "delta (IntegratedGradients().run(...)); this one has none.")
    gap = result.attributions.flatten(1).sum(1) - result.delta
    return result.delta.abs() / gap.abs().clamp_min(torch.finfo(gap.dtype).tiny)


# ------------------------------------------------------------------------------ similarity
def _ranks(values: Tensor) -> Tensor:
    """Ranks of each row, ties given their average rank (as scipy's rankdata)."""
    ordered = values.sort(dim=1).values.contiguous()
    low = torch.searchsorted(ordered, values.contiguous(), right=False)
    high = torch.searchsorted(ordered, values.contiguous(), right=True)
    return (low + high - 1).to(torch.float64) / 2


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman's rank correlation of each pair of rows of ``a`` and ``b`` [N, ...] -> [N]
    (average ranks for ties; 0 where a row is constant)."""
    ra, rb = _ranks(a.flatten(1)), _ranks(b.flatten(1))
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    denominator = (ra.norm(dim=1) * rb.norm(dim=1))
    out = (ra * rb).sum(1) / denominator.clamp_min(1e-300)
    return torch.where(denominator > 0, out, torch.zeros_like(out)).to(a.dtype)


def _unit_range(maps: Tensor) -> Tensor:
    flat = maps.flatten(1)
    low, high = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - low) / (high - low).clamp_min(1e-12)).view_as(maps)


def ssim(a: Tensor, b: Tensor, *, window: int = 7, sigma: float = 1.5) -> Tensor:
    """The structural similarity (Wang et al., IEEE TIP 2004) of each pair of maps
    [N, H, W] (or [N, 1, H, W]), each scaled to [0, 1] first, with a Gaussian window of
    ``window`` px (default 7, cut to the map's size) and ``sigma`` 1.5 -> [N]."""
    a, b = (_unit_range(m.reshape(len(m), 1, *m.shape[-2:]).to(torch.float64)) for m in (a, b))
    size = min(window, *a.shape[-2:])
    offsets = torch.arange(size, device=a.device, dtype=a.dtype) - (size - 1) / 2
    g = torch.exp(-offsets ** 2 / (2 * sigma ** 2))
    kernel = (g[:, None] * g[None, :] / g.sum() ** 2)[None, None]

    def mean(t: Tensor) -> Tensor:
        return F.conv2d(t, kernel)

    mu_a, mu_b = mean(a), mean(b)
    var_a, var_b = mean(a * a) - mu_a ** 2, mean(b * b) - mu_b ** 2
    cov = mean(a * b) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2  # data range 1
    index = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return index.flatten(1).mean(1).to(torch.float32)


# ------------------------------------------------------------------------------ sanity
@dataclass(frozen=True)
class RandomisationResult:
    """Maps of a model whose layers are re-initialised one by one from the top, compared
    with the trained model's maps.

    layers : list[str] - the layers randomised, top first; stage k has layers[:k + 1] random
    spearman : Tensor [L, N] - rank correlation of the maps before and after, per stage
    ssim : Tensor [L, N] or None - SSIM of |map| before and after (images only)
    """

    layers: list[str]
    spearman: Tensor
    ssim: Tensor | None


def _randomise(module: nn.Module, generator: torch.Generator) -> None:
    """Re-draw the module's own parameters as PyTorch's default init scale does:
    uniform in +-1/sqrt(fan_in), fan_in the weight's inputs per output (1 without one)."""
    weight = getattr(module, "weight", None)
    fan_in = weight[0].numel() if isinstance(weight, Tensor) and weight.ndim >= 2 else 1
    bound = 1 / math.sqrt(fan_in)
    with torch.no_grad():
        for parameter in module.parameters(recurse=False):
            noise = torch.rand(parameter.shape, generator=generator, device=generator.device,
                               dtype=parameter.dtype)
            parameter.copy_((noise * 2 - 1).to(parameter.device) * bound)


def cascading_randomisation(model: nn.Module, x: Tensor, target: Tensor, explainer: Explainer,
                            *, seed: int = 0, reference: Tensor | None = None,
                            absolute: bool = False) -> RandomisationResult:
    """Adebayo et al.'s cascading model-parameter randomisation: re-initialise the layers
    that hold parameters one by one from the output down (on a copy; the model is left
    alone), explain ``target`` again after each, and compare the maps with the trained
    model's ``reference`` (computed when not given; images: summed over channels) by
    Spearman rank correlation and by SSIM of their absolute values. A map that depends on
    the model decorrelates as layers are randomised; one that stays similar explains the
    input, not the model.

    The rank correlation is of the signed maps by default (``absolute=False``; Adebayo et
    al. report both): maps that multiply by ``x - baseline`` (gradient x input, IG,
    occlusion) are 0 wherever the input equals the baseline, whatever the model, and with
    absolute values those shared zeros alone give a correlation near 0.9 on digits (half
    their pixels are 0); signed, the zeros sit mid-rank and add nothing."""
    seed = check_int("seed", seed, "cascading_randomisation", low=0)
    if reference is None:
        reference = explainer(model, x, target)
    generator = seeded_generator(seed)
    scrambled = copy.deepcopy(model)
    layers = [(name, module) for name, module in scrambled.named_modules()
              if any(True for _ in module.parameters(recurse=False))][::-1]
    if not layers:
        raise AssayValueError("cascading_randomisation: the model has no parameters to "
                              "randomise (a TorchScript or exported model?).")
    absolute = check_bool("absolute", absolute, "cascading_randomisation")
    before = feature_map(reference)
    rank, structure = [], []
    with eval_mode(scrambled):
        for _, module in layers:
            _randomise(module, generator)
            after = feature_map(explainer(scrambled, x, target))
            rank.append(spearman(before.abs(), after.abs()) if absolute
                        else spearman(before, after))
            if x.ndim == 4:
                structure.append(ssim(before.abs().view(len(x), *x.shape[2:]),
                                      after.abs().view(len(x), *x.shape[2:])))
    return RandomisationResult([name for name, _ in layers], torch.stack(rank),
                               torch.stack(structure) if structure else None)


# ------------------------------------------------------------------------------ robustness
def max_sensitivity(model: nn.Module, x: Tensor, target: Tensor, explainer: Explainer, *,
                    radius: float = 0.02, samples: int = 10, seed: int | None = 0,
                    reference: Tensor | None = None) -> Tensor:
    """``max_k ||e(x + d_k) - e(x)|| / ||e(x)||`` per sample [N] over ``samples`` (default
    10) draws ``d_k`` uniform in the Linf ball of ``radius`` (default 0.02, captum's
    ``sensitivity_max`` defaults), clipped to the model's bounds; the explanation of the
    same target each time. Normalised by ``||e(x)||`` (as Quantus reports it), so methods
    of different scales compare. Lower is more stable."""
    owner = "max_sensitivity"
    radius = check_float("radius", radius, owner, low=0.0)
    samples = check_int("samples", samples, owner, low=1)
    generator = seeded_generator(check_optional_seed("seed", seed, owner), x.device)
    if reference is None:
        reference = explainer(model, x, target)
    low, high = getattr(model, "bounds", (0.0, 1.0))
    rows = x.repeat_interleave(samples, dim=0)
    noise = torch.rand(rows.shape, generator=generator, device=x.device, dtype=x.dtype)
    rows = (rows + (noise * 2 - 1) * radius).clamp(low, high)
    moved = explainer(model, rows, target.repeat_interleave(samples))
    change = (moved - reference.repeat_interleave(samples, dim=0)).flatten(1).norm(dim=1)
    scale = reference.flatten(1).norm(dim=1).clamp_min(1e-12)
    return change.view(len(x), samples).max(1).values / scale


def infidelity(model: nn.Module, x: Tensor, target: Tensor, attributions: Tensor, *,
               noise: float = 0.1, samples: int = 16, seed: int | None = 0,
               normalize: bool = True, batch_size: int | None = 256) -> Tensor:
    """``E_I[(I . e(x) - (f(x) - f(x - I)))^2]`` per sample [N] for Gaussian perturbations
    ``I ~ N(0, noise^2)`` (default 0.1, ``samples`` 16 draws) and ``f`` the target logit;
    with ``normalize`` (default True, as captum's ``infidelity(normalize=True)``) the
    attributions are first scaled by the least-squares factor, so only their direction
    counts. Lower is more faithful."""
    owner = "infidelity"
    noise = check_float("noise", noise, owner, low=0.0)
    samples = check_int("samples", samples, owner, low=1)
    generator = seeded_generator(check_optional_seed("seed", seed, owner), x.device)
    device = model_device(model, x.device)
    clean = batched_logits(model, x.to(device), batch_size=batch_size, output_device=x.device,
                           owner=owner).gather(1, target[:, None])
    dots = torch.empty(len(x), samples, device=x.device, dtype=torch.float64)
    drops = torch.empty_like(dots)
    flat = attributions.flatten(1)
    for inputs, draws in expanded_blocks(len(x), samples, batch_size):
        block = x[inputs]
        k = draws.stop - draws.start
        perturbation = torch.randn((len(block), k, *x.shape[1:]), generator=generator,
                                   device=x.device, dtype=x.dtype) * noise
        rows = (block[:, None] - perturbation).flatten(0, 1)
        logits = batched_logits(model, rows.to(device), batch_size=None,
                                output_device=x.device, owner=owner)
        chosen = logits.gather(1, target[inputs].repeat_interleave(k)[:, None]).view(-1, k)
        drops[inputs, draws] = (clean[inputs] - chosen).double()
        dots[inputs, draws] = torch.einsum("nkf,nf->nk", perturbation.flatten(2).double(),
                                           flat[inputs].double())
    if normalize:
        beta = (dots * drops).mean(1, keepdim=True) / (dots * dots).mean(
            1, keepdim=True).clamp_min(1e-300)
        dots = dots * beta
    return ((dots - drops) ** 2).mean(1).to(x.dtype)
