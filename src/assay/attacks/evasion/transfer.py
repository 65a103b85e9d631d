"""Transfer attacks: craft adversarial examples on a surrogate, measure them on a target."""

from __future__ import annotations

from torch import Tensor, nn

from ...core.inference import batched_predict
from ...errors import AssayValueError
from .base import AttackResult, EvasionAttack


def transfer_attack(attack: EvasionAttack, surrogate: nn.Module, target_model: nn.Module,
                    x: Tensor, y: Tensor, *, batch_size: int = 512) -> AttackResult:
    """Run ``attack`` on ``surrogate`` and judge its examples on ``target_model``.

    The target model is only queried once per sample, without gradients (a black-box
    transfer attack). ``success`` is the target's misclassification (or, when the attack
    is targeted, the target model predicting ``y``); ``queries`` counts the target
    model's forward passes only, since the surrogate belongs to the attacker. The target
    model is evaluated in eval mode and its mode is restored.

    Parameters
    ----------
    attack : EvasionAttack - e.g. ``MIFGSM(eps=0.1)``
    surrogate, target_model : nn.Module - both take ``x`` and return logits
    x : Tensor [N, ...], y : Tensor [N] int64 - labels, or target classes when targeted
    batch_size : int, default 512 - batch size for the target's forward passes

    Example
    -------
    >>> import torch
    >>> from torch import nn
    >>> from assay.attacks.evasion import MIFGSM
    >>> surrogate, target = nn.Linear(4, 3), nn.Linear(4, 3)
    >>> x, y = torch.rand(8, 4), torch.randint(0, 3, (8,))
    >>> result = transfer_attack(MIFGSM(eps=0.1), surrogate, target, x, y)
    >>> result.success.shape, result.queries
    (torch.Size([8]), 8)
    """
    if not isinstance(attack, EvasionAttack):
        raise AssayValueError(f"transfer_attack: 'attack' must be an EvasionAttack; got "
                              f"{type(attack).__name__}.")
    x_adv = attack.run(surrogate, x, y).x_adv
    pred = batched_predict(target_model, x_adv, batch_size=batch_size, device=x_adv.device,
                           owner="transfer_attack")
    y = y.to(pred.device)
    success = pred == y if getattr(attack, "targeted", False) else pred != y
    return AttackResult(x_adv, success, len(x_adv))
