"""Split conformal prediction sets for classifiers, and metrics of the sets.

References:
    Vladimir Vovk, Alexander Gammerman and Glenn Shafer, "Algorithmic Learning in a
    Random World", Springer 2005 (conformal prediction).
    Anastasios N. Angelopoulos and Stephen Bates, "A Gentle Introduction to Conformal
    Prediction and Distribution-Free Uncertainty Quantification", arXiv:2107.07511, 2021
    (split conformal recipe, finite-sample quantile, coverage diagnostics).
    Mauricio Sadinle, Jing Lei and Larry Wasserman, "Least Ambiguous Set-Valued
    Classifiers with Bounded Error Levels", JASA 2019 (LAC score).
    Yaniv Romano, Matteo Sesia and Emmanuel J. Candes, "Classification with Valid and
    Adaptive Coverage", NeurIPS 2020 (APS score).
    Anastasios N. Angelopoulos, Stephen Bates, Jitendra Malik and Michael I. Jordan,
    "Uncertainty Sets for Image Classifiers using Conformal Prediction", ICLR 2021 (RAPS).

Recipe: a score s(x, y) (larger = worse fit) is computed on n held-out calibration
pairs; q is the ceil((n+1)(1-alpha))-th smallest of them, i.e. their empirical
ceil((n+1)(1-alpha))/n quantile (q = +inf, the full label set, when that exceeds n);
the set of a new x is {y : s(x, y) <= q}. For exchangeable data,
``1 - alpha <= P(Y in C(X))``, and ``<= 1 - alpha + 1/(n+1)`` when scores have no ties
(randomised APS/RAPS, or continuous probabilities).

Scores, with the probabilities of x sorted in decreasing order p_(1) >= p_(2) >= ... and
r(y) the rank of y (1-based):

* ``"lac"``: ``1 - p_y``. Smallest average sets; coverage is only marginal.
* ``"aps"``: ``sum_{j < r(y)} p_(j) + u * p_y``; u ~ U[0, 1) per sample when randomised,
  u = 1 otherwise (then the score is the cumulative mass up to and including y).
* ``"raps"``: the APS score plus ``lam * max(0, r(y) - k_reg)``, a penalty on labels deep
  in the ranking, which shortens the long tails of APS sets.

Sets are {y : s(x, y) <= q}, except for non-randomised APS/RAPS, whose sets run down the
ranking up to and including the first label whose score exceeds q (as in Angelopoulos &
Bates 2021, Sec. 2.1, and the RAPS paper's non-randomised sets): never empty, and
conservative (coverage >= 1 - alpha, but not the 1 - alpha + 1/(n+1) upper bound).
Randomised scores can give empty sets (when even the top label's u * p_(1) exceeds q);
they are kept, as they are part of the exact coverage guarantee.

Example::

    >>> import torch
    >>> from assay.defenses.calibration.conformal import SplitConformal, marginal_coverage
    >>> g = torch.Generator().manual_seed(0)
    >>> logits = 2 * torch.randn(3000, 10, generator=g)
    >>> y = torch.multinomial(logits.softmax(1), 1, generator=g).squeeze(1)
    >>> cp = SplitConformal(score="aps", alpha=0.1, inputs="logits", seed=0)
    >>> sets = cp.calibrate(logits[:1000], y[:1000]).predict_sets(logits[1000:])
    >>> sets.shape, sets.dtype
    (torch.Size([2000, 10]), torch.bool)
    >>> 0.87 < marginal_coverage(sets, y[1000:]) < 0.93
    True
"""

from __future__ import annotations

import math
import secrets
from typing import Literal, Self

import torch
from torch import Tensor

from ..._params import check_bool, check_choice, check_float, check_int, check_optional_seed
from ...core.rng import seeded_generator
from ...errors import AssayValueError
from ...metrics._tensor_checks import INPUTS, Inputs, as_probs, fail, labels_vector

__all__ = ["SCORES", "Score", "SplitConformal", "average_set_size", "class_coverage",
           "class_coverage_gap", "conformal_quantile", "marginal_coverage",
           "size_stratified_coverage"]

Score = Literal["lac", "aps", "raps"]
SCORES: tuple[str, ...] = ("lac", "aps", "raps")


def conformal_quantile(scores: Tensor, alpha: float) -> float:
    """The ceil((n+1)(1-alpha))-th smallest of n calibration scores; +inf if beyond n.

    A tolerance of 1e-9 in the ceiling keeps (n+1)(1-alpha) that is an integer up to
    rounding (e.g. n = 9, alpha = 0.1) from moving up one rank.
    """
    check_float("alpha", alpha, "conformal_quantile", low=0.0, high=1.0, low_open=True,
                high_open=True)
    n = scores.numel()
    rank = math.ceil((n + 1) * (1.0 - alpha) - 1e-9)
    if rank > n:
        return math.inf
    return float(torch.kthvalue(scores.reshape(-1), max(rank, 1)).values)


class SplitConformal:
    """Split conformal prediction sets (Vovk et al. 2005; Angelopoulos & Bates 2021).

    Parameters:
        score: "lac" (default; Sadinle et al., JASA 2019), "aps" (Romano et al., NeurIPS
            2020) or "raps" (Angelopoulos et al., ICLR 2021).
        alpha: miscoverage level, a number in (0, 1) (default 0.1: 90% coverage).
        randomized: for "aps" and "raps", draw u ~ U[0, 1) per sample (default True, as
            in both papers; exact coverage). False: u = 1, and the label that crosses q
            is kept: conservative sets that are never empty. Ignored by "lac".
        lam: RAPS penalty weight lambda, a number >= 0 (default 0.01). Ignored unless
            score="raps".
        k_reg: RAPS rank from which the penalty applies, an int >= 0 (default 5).
            Ignored unless score="raps". The defaults are the paper's fixed choices
            (lambda = 0.01, k_reg = 5); its tuning procedure on a split of the
            calibration data is not done here.
        inputs: what ``calibrate`` and ``predict_sets`` receive: "probs" (default;
            checked to be probabilities) or "logits" (softmax applied).
        seed: seed of this object's own ``torch.Generator`` (CPU) for u, an int >= 0 or
            None (default: a fresh non-deterministic seed). u is drawn on the CPU and
            moved, so a seed gives the same sets on every device. Successive calls
            consume the same stream.

    After :meth:`calibrate`: ``quantile_`` (q, a float, possibly inf) and
    ``n_calibration_``.
    """

    def __init__(self, *, score: Score = "lac", alpha: float = 0.1, randomized: bool = True,
                 lam: float = 0.01, k_reg: int = 5, inputs: Inputs = "probs",
                 seed: int | None = None) -> None:
        owner = "SplitConformal"
        self.score = check_choice("score", score, SCORES, owner)
        self.alpha = check_float("alpha", alpha, owner, low=0.0, high=1.0, low_open=True,
                                 high_open=True)
        self.randomized = check_bool("randomized", randomized, owner)
        self.lam = check_float("lam", lam, owner, low=0.0)
        self.k_reg = check_int("k_reg", k_reg, owner, low=0)
        self.inputs = check_choice("inputs", inputs, INPUTS, owner)
        self.seed = check_optional_seed("seed", seed, owner)
        # seed None: a generator of its own seeded by the OS; the global RNG is left alone
        self._generator = seeded_generator(secrets.randbits(63) if seed is None else seed)
        self.quantile_: float | None = None
        self.n_calibration_: int | None = None

    def __repr__(self) -> str:
        return (f"SplitConformal(score={self.score!r}, alpha={self.alpha!r}, "
                f"randomized={self.randomized!r}, lam={self.lam!r}, k_reg={self.k_reg!r}, "
                f"inputs={self.inputs!r}, seed={self.seed!r})")

    def _sorted_scores(self, probs: Tensor) -> tuple[Tensor, Tensor]:
        """APS/RAPS scores in decreasing-probability order [N, K], and that order."""
        sorted_p, order = probs.sort(dim=1, descending=True)
        above = sorted_p.cumsum(dim=1) - sorted_p  # mass strictly above each rank
        if self.randomized:
            u = torch.rand(probs.shape[0], 1, generator=self._generator, dtype=probs.dtype)
            scores = above + u.to(probs.device) * sorted_p
        else:
            scores = above + sorted_p
        if self.score == "raps":
            rank = torch.arange(1, probs.shape[1] + 1, device=probs.device, dtype=probs.dtype)
            scores = scores + self.lam * (rank - self.k_reg).clamp_min(0)
        return scores, order

    def label_scores(self, probs: Tensor) -> Tensor:
        """Non-conformity scores [N, K] of every label, from probabilities [N, K].

        Draws u from this object's generator for the randomised APS and RAPS scores.
        """
        if self.score == "lac":
            return 1.0 - probs
        scores, order = self._sorted_scores(probs)
        return torch.empty_like(scores).scatter_(1, order, scores)

    def calibrate(self, values: Tensor, labels: Tensor) -> Self:
        """Compute q from held-out calibration outputs [n, K] and labels [n]; returns self."""
        owner = "SplitConformal.calibrate"
        probs = as_probs(values, self.inputs, owner, name="values")
        y = labels_vector("labels", labels, owner, probs.shape[0], probs.shape[1])
        scores = self.label_scores(probs).gather(1, y.to(probs.device).unsqueeze(1))
        self.quantile_ = conformal_quantile(scores, self.alpha)
        self.n_calibration_ = int(probs.shape[0])
        self._num_classes = int(probs.shape[1])
        return self

    def predict_sets(self, values: Tensor) -> Tensor:
        """Prediction sets: a bool mask [N, K] (True = label in the set) on the input's device."""
        owner = "SplitConformal.predict_sets"
        if self.quantile_ is None:
            raise AssayValueError("SplitConformal must be calibrated before predicting sets: "
                                  "call .calibrate(values_cal, labels_cal) first.")
        probs = as_probs(values, self.inputs, owner, name="values")
        if probs.shape[1] != self._num_classes:
            raise fail("values", owner, f"a tensor with {self._num_classes} columns (the "
                       "class count seen in calibrate)", probs)
        if self.score == "lac" or self.randomized:
            return self.label_scores(probs) <= self.quantile_
        # non-randomised APS/RAPS: the ranked labels up to and including the one whose
        # score first exceeds q: a label is in when the score of the label ranked just
        # above it is <= q (the top-ranked label is always in)
        scores, order = self._sorted_scores(probs)
        above = torch.cat([torch.full_like(scores[:, :1], -math.inf), scores[:, :-1]], dim=1)
        inside = above <= self.quantile_
        return torch.zeros_like(inside).scatter_(1, order, inside)


# ----------------------------------------------------------------------------- metrics


def _sets_labels(sets: Tensor, labels: Tensor, owner: str) -> tuple[Tensor, Tensor]:
    if not isinstance(sets, Tensor) or sets.dtype != torch.bool or sets.ndim != 2 \
            or sets.shape[0] == 0:
        raise fail("sets", owner, "a non-empty bool tensor of shape [N, K]", sets)
    y = labels_vector("labels", labels, owner, sets.shape[0], sets.shape[1])
    return sets, y.to(sets.device)


def _covered(sets: Tensor, y: Tensor) -> Tensor:
    return sets.gather(1, y.unsqueeze(1)).squeeze(1)


def marginal_coverage(sets: Tensor, labels: Tensor) -> float:
    """Fraction of samples whose label is in their set.

    Parameters:
        sets: bool mask [N, K] from :meth:`SplitConformal.predict_sets`.
        labels: integer labels [N] in [0, K).
    """
    sets, y = _sets_labels(sets, labels, "marginal_coverage")
    return float(_covered(sets, y).double().mean())


def average_set_size(sets: Tensor) -> float:
    """Mean number of labels per set, from a bool mask [N, K]."""
    if not isinstance(sets, Tensor) or sets.dtype != torch.bool or sets.ndim != 2 \
            or sets.shape[0] == 0:
        raise fail("sets", "average_set_size", "a non-empty bool tensor of shape [N, K]", sets)
    return float(sets.sum(dim=1).double().mean())


def class_coverage(sets: Tensor, labels: Tensor) -> Tensor:
    """Coverage among the samples of each class, [K] float64; NaN for absent classes."""
    sets, y = _sets_labels(sets, labels, "class_coverage")
    k = sets.shape[1]
    hits = torch.bincount(y, weights=_covered(sets, y).double(), minlength=k)
    counts = torch.bincount(y, minlength=k).double()
    return torch.where(counts > 0, hits / counts.clamp_min(1), torch.nan)


def class_coverage_gap(sets: Tensor, labels: Tensor, *, alpha: float) -> float:
    """Largest deviation of a class's coverage from the target: ``max_c |cov_c - (1-alpha)|``.

    Over the classes present in ``labels``; it counts over-coverage (sets too large for
    that class) as well as under-coverage. Conformal sets only guarantee marginal
    coverage, so this measures how far they are from class-conditional validity; with
    few samples per class it includes binomial noise of order sqrt(alpha(1-alpha)/n_c).

    Parameters:
        sets: bool mask [N, K]. labels: integer labels [N].
        alpha: the target miscoverage, a number in (0, 1) (no default: use the one the
            sets were built with).
    """
    check_float("alpha", alpha, "class_coverage_gap", low=0.0, high=1.0, low_open=True,
                high_open=True)
    per_class = class_coverage(sets, labels)
    present = per_class[~per_class.isnan()]
    return float((present - (1.0 - alpha)).abs().max())


def size_stratified_coverage(sets: Tensor, labels: Tensor) -> dict[int, dict[str, float]]:
    """Coverage among the samples whose set has each size (Angelopoulos et al., ICLR 2021).

    Returns:
        A plain dict ``{size: {"count": n, "coverage": c}}`` for every set size that
        occurs, sizes ascending; ``count`` is an int, ``coverage`` a float.
    """
    sets, y = _sets_labels(sets, labels, "size_stratified_coverage")
    sizes = sets.sum(dim=1)
    covered = _covered(sets, y).double()
    k = sets.shape[1]
    counts = torch.bincount(sizes, minlength=k + 1)
    hits = torch.bincount(sizes, weights=covered, minlength=k + 1)
    result: dict[int, dict[str, float]] = {}
    for size, (n, h) in enumerate(zip(counts.tolist(), hits.tolist())):
        if n:
            result[size] = {"count": int(n), "coverage": h / n}
    return result
