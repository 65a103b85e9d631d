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
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .._projection import Norm, random_in_ball
from .base import model_bounds
from .evaluation import EvaluationResult, Stage, evaluate_robustness
from .fgsm import FGSM
from .pgd import PGD

NOISE_DRAWS = 10
UNBOUNDED_STEPS = 100
ZERO_GRADIENT_SHARE = 0.01
STRONGER_SHARE = 0.1


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
    logits = model(point)
    other = logits.detach().scatter(1, y[:, None], float("-inf")).argmax(1)
    margin = logits.gather(1, y[:, None]) - logits.gather(1, other[:, None])
    grad, = torch.autograd.grad(margin.sum(), point)
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
    attack = PGD(eps=eps, norm=norm, steps=UNBOUNDED_STEPS, seed=seed, batch_size=batch_size)
    result = evaluate_robustness(model, x, y, eps=eps, norm=norm, batch_size=batch_size,
                                 stages=[Stage("PGD", f"{UNBOUNDED_STEPS} steps", attack)])
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
                                stages=[Stage("FGSM", "1 step", FGSM(eps=eps, norm=norm,
                                                                     batch_size=batch_size))])
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
    generator = None if seed is None else torch.Generator(device=x.device).manual_seed(seed)
    lo, hi = model_bounds(model)
    robust = result.clean_correct.clone()
    step = batch_size or max(len(x), 1)
    with torch.no_grad():
        for _ in range(NOISE_DRAWS if eps > 0 else 0):
            noisy = (x + random_in_ball(x.shape, norm, eps, device=x.device, dtype=x.dtype,
                                        generator=generator)).clamp(lo, hi)
            pred = torch.cat([model(noisy[i:i + step]).argmax(1) for i in range(0, len(x), step)])
            robust &= pred == y
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
                    stage: Stage, code: str, eps: float, norm: Norm,
                    batch_size: int | None = 256) -> Diagnostic:
    """Runs ``stage`` on the points the evaluation left robust and judges its breaks with
    :func:`extra_breaks`. ``code`` "convergence": a longer white-box attack (more steps or
    restarts); "black_box": a score-based attack (Carlini et al. 2019 sec. 4.6)."""
    index = result.robust.nonzero().squeeze(1)
    broken = 0
    if len(index):
        probe = evaluate_robustness(model, x[index], y[index], eps=eps, norm=norm,
                                    batch_size=batch_size, stages=[stage])
        broken = int((~probe.robust).sum())
    return extra_breaks(code, f"{stage.name} ({stage.budget})", broken, left=len(index),
                        n=len(x), eps=eps, norm=norm)


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
