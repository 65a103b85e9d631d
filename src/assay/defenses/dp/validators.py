"""What DP-SGD refuses in a model, collected in full before one error (the way Opacus's
``ModuleValidator`` does): each problem names the layer and the fix.

A layer that mixes the samples of a batch (batch normalisation) gives a sample no
gradient of its own, so its gradient cannot be clipped per sample; running statistics
are read from the data without noise. Compiled models (TorchScript, torch.export) cannot
be called with other parameters, which per-sample gradients need.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

from ...errors import AssayValueError


def private_training_problems(model: nn.Module) -> list[str]:
    """Every reason DP-SGD cannot train ``model``, one sentence each with its fix; empty
    when it can."""
    from ...core.model import ExportedModule

    problems: list[str] = []
    compiled: list[str] = []  # name prefixes of compiled modules
    for name, module in model.named_modules():
        if any(name.startswith(prefix) for prefix in compiled):
            continue  # the layers of a compiled model are compiled too: one problem
        where = f"layer '{name or '<model>'}' ({type(module).__name__})"
        if isinstance(module, _BatchNorm):
            problems.append(
                f"{where}: batch normalisation mixes the samples of a batch, so a sample has "
                "no gradient of its own to clip; replace it with GroupNorm "
                f"(torch.nn.GroupNorm(num_groups, {module.num_features}))")
        elif isinstance(module, _InstanceNorm) and module.track_running_stats:
            problems.append(f"{where}: its running statistics are updated from the data "
                            "without noise; build it with track_running_stats=False")
        elif isinstance(module, (ExportedModule, torch.jit.ScriptModule)):
            problems.append(f"{where}: a compiled model (TorchScript or torch.export) cannot "
                            "be called with per-sample parameters; pass its weights "
                            "(safetensors or a state_dict) with --arch")
            compiled.append(f"{name}." if name else "")
    if not any(p.requires_grad for p in model.parameters()):
        problems.append("the model has no trainable parameters")
    return problems


def validate_private_model(model: nn.Module) -> None:
    """Raise one ``AssayValueError`` listing every problem of
    :func:`private_training_problems`, or return when there is none."""
    problems = private_training_problems(model)
    if problems:
        raise AssayValueError("DP-SGD cannot train this model: " + "; ".join(problems) + ".")
