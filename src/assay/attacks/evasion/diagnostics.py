"""Diagnostics that say when a robustness evaluation is not to be trusted.

The checklist of N. Carlini, A. Athalye, N. Papernot, W. Brendel, J. Rauber, D. Tsipras,
I. Goodfellow, A. Madry, A. Kurakin. "On Evaluating Adversarial Robustness".
arXiv:1902.06705, 2019 (sections 4-5), and the sanity checks of AutoAttack (Croce & Hein
2020: zero gradients, randomness, softmax outputs). Each diagnostic is a small probe on
the evaluated points that returns a :class:`Diagnostic`; ``passed=False`` means the
robust accuracy is probably overestimated and says why.

A difference between two accuracies counts when it exceeds ``tolerance(n)``: two points
of accuracy, or two samples when fewer than 100 points are evaluated. A stronger attack
run after the evaluation (``stronger_attack``) must also break more than
``STRONGER_SHARE`` of the points left robust: a weaker first attack always leaves a few
points that a different one finds, while masked gradients leave most of them.

:func:`diagnose_norm` runs them all for the radii of one norm: the cheap probes at every
radius, the stronger ones (the protocol's longer attack and its black-box probe, PGD at an
unbounded radius) once, at the radius where the evaluation is least decided.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ...core.inference import batched_predict
from ...core.rng import seeded_generator
from .._losses import margin
from .._projection import Norm, random_in_ball
from .base import model_bounds
from .evaluation import (EvaluationResult, PGDRestarts, Protocol, SingleStep,
                         evaluate_robustness)

NOISE_DRAWS = 10
UNBOUNDED_STEPS = 100
ZERO_GRADIENT_SHARE = 0.01
STRONGER_SHARE = 0.1
PROBE_POINTS = 200  # correctly classified points for the per-model probes


@dataclass(frozen=True)
class Diagnostic:
    """One check of the evaluation: its code, the verdict, why, and the numbers behind it."""

    code: str
    passed: bool
    message: str
    values: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"code": self.code, "passed": self.passed, "message": self.message,
                "values": self.values}


def tolerance(n: int) -> float:
    """The accuracy difference that counts: max(0.02, 2 / n)."""
    return max(0.02, 2.0 / max(n, 1))


def model_behaviour(model: nn.Module) -> list[Diagnostic]:
    """Probability outputs and stochastic forward passes, as recorded by the model wrapper
    (:meth:`assay.core.model.ModelWrapper.inspect`)."""
    advice = {"probabilities": "Losses on probabilities saturate and gradient attacks "
                               "stall, so robust accuracy is overestimated.",
              "stochastic": "Gradient attacks need expectation over transformation (EOT, "
                            "Athalye et al. 2018; the robustness check uses it) and robust "
                            "accuracy varies between runs."}
    found = {f.code: f.message for f in getattr(model, "findings", [])}
    return [Diagnostic(f"model_{code}", code not in found,
                       f"{found[code]} {advice[code]}" if code in found else f"no {code} outputs")
            for code in advice]


def gradient_health(model: nn.Module, x: Tensor, y: Tensor) -> Diagnostic:
    """Gradients of the logit margin ``z_y - max_{j != y} z_j`` with respect to the input:
    all-zero for more than 1% of the points, or any NaN or infinity, means gradient
    attacks are blind there (shattered or saturated gradients, Athalye et al. 2018). The
    margin, unlike the cross-entropy, does not vanish on confidently classified points."""
    if len(x) == 0:
        return Diagnostic("gradients", True, "no points to probe", {"n": 0})
    point = x.detach().clone().requires_grad_(True)
    grad, = torch.autograd.grad(margin(model(point), y).sum(), point)
    flat = grad.flatten(1)
    finite = torch.isfinite(flat).all(1)
    zero = finite & (flat == 0).all(1)
    values = {"n": len(x), "zero": int(zero.sum()), "non_finite": int((~finite).sum())}
    if values["non_finite"]:
        return Diagnostic("gradients", False,
                          f"{values['non_finite']} of {len(x)} points have NaN or infinite input "
                          "gradients: gradient attacks cannot be trusted on this model.", values)
    if values["zero"] > ZERO_GRADIENT_SHARE * len(x):
        return Diagnostic("gradients", False,
                          f"{values['zero']} of {len(x)} points have an all-zero input gradient "
                          "(a non-differentiable or saturated layer): gradient attacks are blind "
                          "there, so robust accuracy is overestimated. Gradient masking suspected.",
                          values)
    return Diagnostic("gradients", True, "input gradients are finite and non-zero", values)


def unbounded_attack(model: nn.Module, x: Tensor, y: Tensor, *, norm: Norm,
                     seed: int | None = 0, batch_size: int | None = 256) -> Diagnostic:
    """PGD with a radius that covers the whole input box must break every point
    (Carlini et al. 2019, sec. 5.2): ``hi - lo`` for Linf, ``(hi - lo) * sqrt(d)`` for L2."""
    lo, hi = model_bounds(model)
    dim = x[0].numel() if len(x) else 1
    eps = (hi - lo) * (1.0 if norm == "linf" else math.sqrt(dim))
    result = evaluate_robustness(model, x, y, eps=eps, norm=norm, seed=seed,
                                 batch_size=batch_size, mode=PGDRestarts(steps=UNBOUNDED_STEPS))
    acc, tol = result.robust_accuracy, tolerance(len(x))
    values = {"eps": eps, "robust_accuracy": acc, "n": len(x)}
    if len(x) and acc > tol:
        return Diagnostic("unbounded_eps", False,
                          f"{norm}: at an unbounded radius ({eps:.3g}, the whole input box) PGD "
                          f"leaves robust accuracy at {acc:.3f} instead of about 0: the gradients "
                          "do not lead to the decision boundary. Gradient masking suspected.",
                          values)
    return Diagnostic("unbounded_eps", True,
                      f"{norm}: at an unbounded radius PGD breaks every point (robust accuracy "
                      f"{acc:.3f})", values)


def single_step(model: nn.Module, x: Tensor, y: Tensor, *, result: EvaluationResult,
                eps: float, norm: Norm, batch_size: int | None = 256) -> Diagnostic:
    """FGSM must not beat the evaluation (Carlini et al. 2019, sec. 5.3): a single step that
    does better than many means the iterative attack is stuck."""
    probe = evaluate_robustness(model, x, y, eps=eps, norm=norm, batch_size=batch_size,
                                mode=SingleStep())
    fgsm, main, tol = probe.robust_accuracy, result.robust_accuracy, tolerance(len(x))
    values = {"eps": eps, "fgsm": fgsm, "evaluation": main}
    if fgsm < main - tol:
        return Diagnostic("single_step", False,
                          f"{norm} eps={eps:g}: single-step FGSM ({fgsm:.3f}) beats the iterative "
                          f"evaluation ({main:.3f}); the iterative attack is stuck (gradient "
                          "masking or a bad step size).", values)
    return Diagnostic("single_step", True, f"{norm} eps={eps:g}: iterative attacks beat FGSM "
                      f"({main:.3f} vs {fgsm:.3f})", values)


def random_noise(model: nn.Module, x: Tensor, y: Tensor, *, result: EvaluationResult,
                 eps: float, norm: Norm, seed: int | None = 0,
                 batch_size: int | None = 256) -> Diagnostic:
    """Gradient attacks must beat random points of the ball (Carlini et al. 2019, sec. 5.4).

    A point counts as broken by noise when any of ``NOISE_DRAWS`` draws of ``random_in_ball``
    misclassifies it. Fails when noise breaks points (accuracy below clean by more than the
    tolerance) yet the white-box stages of the evaluation do no better than noise.
    """
    generator = seeded_generator(seed, x.device)
    lo, hi = model_bounds(model)
    robust = result.clean_correct.clone()
    for _ in range(NOISE_DRAWS if eps > 0 else 0):
        noisy = (x + random_in_ball(x.shape, norm, eps, device=x.device, dtype=x.dtype,
                                    generator=generator)).clamp(lo, hi)
        robust &= batched_predict(model, noisy, batch_size=batch_size, device=x.device) == y
    n, tol = max(len(x), 1), tolerance(len(x))
    noise = float(robust.float().sum()) / n
    white_box = result.white_box_accuracy
    values = {"eps": eps, "noise": noise, "white_box": white_box, "draws": NOISE_DRAWS}
    if noise < result.clean_accuracy - tol and white_box > noise - tol:
        return Diagnostic("random_noise", False,
                          f"{norm} eps={eps:g}: the gradient attacks leave {white_box:.3f} robust, "
                          f"random noise in the ball {noise:.3f}: gradients guide the attack no "
                          "better than chance. Gradient masking suspected.", values)
    return Diagnostic("random_noise", True, f"{norm} eps={eps:g}: gradient attacks beat random "
                      f"noise ({white_box:.3f} vs {noise:.3f})", values)


def stronger_attack(model: nn.Module, x: Tensor, y: Tensor, *, result: EvaluationResult,
                    protocol: Protocol, code: str, eps: float, norm: Norm,
                    seed: int | None = 0, batch_size: int | None = 256) -> Diagnostic:
    """Runs ``protocol`` on the points the evaluation left robust and judges its breaks
    with :func:`extra_breaks`. ``code`` "convergence": a longer white-box attack (more
    steps or restarts); "black_box": a score-based attack (Carlini et al. 2019 sec. 4.6)."""
    index = result.robust.nonzero().squeeze(1)
    broken, attack = 0, protocol.label
    if len(index):
        probe = evaluate_robustness(model, x[index], y[index], eps=eps, norm=norm, seed=seed,
                                    batch_size=batch_size, mode=protocol)
        broken = int((~probe.robust).sum())
        attack = "; ".join(f"{stage.name} ({stage.budget})" for stage in probe.stages)
    return extra_breaks(code, attack, broken, left=len(index), n=len(x), eps=eps, norm=norm)


def extra_breaks(code: str, attack: str, broken: int, *, left: int, n: int, eps: float,
                 norm: str) -> Diagnostic:
    """``attack`` broke ``broken`` of the ``left`` points another evaluation left robust
    (out of ``n``): it fails when that exceeds the tolerance and ``STRONGER_SHARE`` of
    ``left``. "convergence": the evaluation had not converged; "black_box": the gradients
    mislead."""
    drop = broken / max(n, 1)
    values = {"eps": eps, "attack": attack, "extra_broken": broken, "accuracy_drop": drop}
    if drop > tolerance(n) and broken > STRONGER_SHARE * left:
        why = ("the evaluation had not converged; raise its steps or restarts"
               if code == "convergence" else
               "a black-box attack beats the white-box ones, so the gradients mislead. "
               "Gradient masking suspected")
        return Diagnostic(code, False, f"{norm} eps={eps:g}: {attack} breaks {broken} more "
                          f"points (accuracy -{drop:.3f}): {why}.", values)
    return Diagnostic(code, True, f"{norm} eps={eps:g}: {attack} lowers accuracy by only "
                      f"{drop:.3f}", values)


def curve_shape(norm: str, radii: list[float], accuracies: list[float], clean: float,
                n: int) -> list[Diagnostic]:
    """eps = 0 reproduces clean accuracy exactly; accuracy never rises with eps (by more
    than one sample; the attacks are seeded but each radius is a separate run)."""
    found = []
    if radii and radii[0] == 0.0:
        ok = accuracies[0] == clean
        found.append(Diagnostic("eps0", ok, f"{norm}: robust accuracy at eps=0 "
                                f"({accuracies[0]:.4f}) {'equals' if ok else 'differs from'} clean "
                                f"accuracy ({clean:.4f})" + ("" if ok else "; the model or the "
                                                               "evaluation is not deterministic."),
                                {"eps0": accuracies[0], "clean": clean}))
    rises = [(e1, a1, e2, a2) for (e1, a1), (e2, a2)
             in zip(zip(radii, accuracies), zip(radii[1:], accuracies[1:])) if a2 > a1 + 1.0 / n]
    if rises:
        e1, a1, e2, a2 = rises[0]
        found.append(Diagnostic("monotone", False,
                                f"{norm}: robust accuracy rises from {a1:.3f} at eps={e1:g} to "
                                f"{a2:.3f} at eps={e2:g}; a larger ball can only contain more "
                                "adversarial examples. The attack is not converging (gradient "
                                "masking?).", {"rises": len(rises)}))
    elif len(radii) > 1:
        found.append(Diagnostic("monotone", True, f"{norm}: robust accuracy falls with eps"))
    return found


def diagnose_norm(model: nn.Module, x: Tensor, y: Tensor, *, norm: Norm,
                  results: dict[float, EvaluationResult], protocol: Protocol,
                  seed: int = 0, batch_size: int | None = 256
                  ) -> tuple[list[Diagnostic], dict[str, list[float]]]:
    """The diagnostics of one norm's evaluation, and the probe curves to draw beside it.

    ``results``: the evaluation at each radius, in increasing order, all run with
    ``protocol``. At every radius: FGSM (:func:`single_step`) and random noise; the curve's
    shape over the radii; once, at the attacked radius whose robust accuracy is closest to
    half the clean accuracy: the protocol's longer attack (seeded ``seed + 1``, so it
    does not repeat the evaluation's draws), its black-box probe (or the breaks of its own
    black-box stage), and PGD at an unbounded radius on up to ``PROBE_POINTS`` correctly
    classified points. Returns the diagnostics and the curves ``{"FGSM": [...],
    "random noise": [...]}`` (robust accuracy per radius).
    """
    radii = list(results)
    first = results[radii[0]]
    found = curve_shape(norm, radii, [results[e].robust_accuracy for e in radii],
                        first.clean_accuracy, len(x))
    fgsm, noise = [], []
    for eps, result in results.items():
        single = single_step(model, x, y, result=result, eps=eps, norm=norm,
                             batch_size=batch_size)
        rand = random_noise(model, x, y, result=result, eps=eps, norm=norm, seed=seed,
                            batch_size=batch_size)
        fgsm.append(single.values["fgsm"])
        noise.append(rand.values["noise"])
        if eps > 0:
            found += [single, rand]
    attacked = [e for e in radii if e > 0]
    if attacked:
        # The stronger probes run once, where the evaluation is least decided.
        half = first.clean_accuracy / 2
        eps = min(attacked, key=lambda e: abs(results[e].robust_accuracy - half))
        longer = protocol.convergence_probe()
        if longer is not None:
            found.append(stronger_attack(model, x, y, result=results[eps], protocol=longer,
                                         code="convergence", eps=eps, norm=norm, seed=seed + 1,
                                         batch_size=batch_size))
        found.append(_black_box(model, x, y, results[eps], protocol, eps=eps, norm=norm,
                                seed=seed, batch_size=batch_size))
        correct = first.clean_correct.nonzero().squeeze(1)[:PROBE_POINTS]
        found.append(unbounded_attack(model, x[correct], y[correct], norm=norm, seed=seed,
                                      batch_size=batch_size))
    return found, {"FGSM": fgsm, "random noise": noise}


def _black_box(model: nn.Module, x: Tensor, y: Tensor, result: EvaluationResult,
               protocol: Protocol, *, eps: float, norm: Norm, seed: int,
               batch_size: int | None) -> Diagnostic:
    """An evaluation with a black-box stage: its breaks after the white-box stages are the
    answer. Otherwise the protocol's black-box probe runs on the points it left robust."""
    black = [s for s in result.stages if s.black_box]
    if black:
        broken = sum(s.broken for s in black)
        left = int(result.robust.sum()) + broken  # robust after the white-box stages
        return extra_breaks("black_box", f"the black-box stage {black[0].name}", broken,
                            left=left, n=len(x), eps=eps, norm=norm)
    return stronger_attack(model, x, y, result=result, protocol=protocol.black_box_probe(),
                           code="black_box", eps=eps, norm=norm, seed=seed,
                           batch_size=batch_size)
