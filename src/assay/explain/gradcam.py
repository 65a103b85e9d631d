"""Grad-CAM: a convolutional layer's activations weighted by their pooled gradients.

Selvaraju, Cogswell, Das, Vedantam, Parikh and Batra, "Grad-CAM: Visual Explanations from
Deep Networks via Gradient-based Localization", ICCV 2017.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .._params import Bool, Choice, Optional, Str
from ..core.inference import check_logits, map_batches
from ..errors import AssayValueError
from ._base import BATCH_SIZE, EXPLAINERS, Attribution, Explainer

Upsample = Literal["bilinear", "nearest"]


def conv_layer_names(model: nn.Module) -> list[str]:
    """The names of the model's ``nn.Conv2d`` layers, in definition order."""
    return [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]


def find_layer(model: nn.Module, layer: str | None, owner: str) -> nn.Module:
    """The submodule called ``layer`` (for a model wrapper also a name inside its ``net``:
    "3" or "net.3"); None: the last ``nn.Conv2d``."""
    convs = conv_layer_names(model)
    if layer is None:
        if not convs:
            raise AssayValueError(f"{owner}: the model has no nn.Conv2d layer, so no layer can "
                                  "be chosen automatically. Fix: name a layer whose output is "
                                  "[N, C, H, W] with the 'layer' parameter, or use another "
                                  "method (tabular models: saliency, integrated_gradients).")
        layer = convs[-1]
    modules = dict(model.named_modules())
    found = modules.get(layer, modules.get(f"net.{layer}") if hasattr(model, "net") else None)
    if found is None or layer == "":
        raise AssayValueError(f"The 'layer' parameter of {owner} must name a submodule of the "
                              f"model (its convolutional layers: {convs}). Got {layer!r} "
                              "instead.")
    return found


@EXPLAINERS.register()
class GradCAM(Explainer):
    """``sum_c w_c A_c`` for the activations ``A`` [N, C, h, w] of ``layer``, with weights
    ``w_c`` the spatial mean of ``d f_target / d A_c``, upsampled to the input's height
    and width and repeated over its channels.

    The layer map is captum's ``LayerGradCam`` (whose default ``relu_attributions`` is
    False too: negative evidence is kept, the paper's ReLU is ``relu=True``); upsampling
    is bilinear by default, as the paper's, through ``F.interpolate`` as captum's
    ``LayerAttribution.interpolate``.

    Parameters (keyword-only):
        layer: the name of a submodule with [N, C, h, w] outputs (``model.named_modules()``;
            for a model wrapper also the name inside its ``net``), or None for the last
            ``nn.Conv2d`` (default None).
        relu: keep the positive part of the map only (default False).
        upsample: "bilinear" (default) or "nearest".
        batch_size: inputs per forward and backward pass, an int >= 1 or None for one
            pass (default 256).

    Shapes: ``x`` [N, C, H, W] -> attributions [N, C, H, W] (the same map in each channel).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(),
        ...                     nn.Linear(4 * 6 * 6, 3))
        >>> GradCAM()(net, torch.rand(2, 1, 8, 8), target=2).shape
        torch.Size([2, 1, 8, 8])
    """

    name = "gradcam"
    # a layer name is looked up in the model at call time (find_layer)
    constraints = {"layer": Optional(Str()), "relu": Bool(),
                   "upsample": Choice(("bilinear", "nearest")), "batch_size": BATCH_SIZE}

    def __init__(self, *, layer: str | None = None, relu: bool = False,
                 upsample: Upsample = "bilinear", batch_size: int | None = 256) -> None:
        self.layer = self._validated("layer", layer)
        self.relu = self._validated("relu", relu)
        self.upsample: Upsample = self._validated("upsample", upsample)
        self.batch_size = self._validated("batch_size", batch_size)

    def run(self, model: nn.Module, x: Tensor,
            target: int | Tensor | None = None) -> Attribution:
        if not isinstance(x, Tensor) or x.ndim != 4:
            raise AssayValueError(f"{type(self).__name__}: x must be images [N, C, H, W]; got "
                                  f"shape {tuple(getattr(x, 'shape', ()))}. Grad-CAM needs a "
                                  "convolutional layer's spatial map.")
        find_layer(model, self.layer, type(self).__name__)  # a bad name fails before any work
        return super().run(model, x, target)

    def _attribute(self, model: nn.Module, x: Tensor, target: Tensor) -> tuple[Tensor, None]:
        owner = type(self).__name__
        layer = find_layer(model, self.layer, owner)
        captured: list[Tensor] = []

        def keep(_module: nn.Module, _inputs: object, output: object) -> None:
            captured.append(output)  # type: ignore[arg-type]

        def block(index: Tensor) -> Tensor:
            captured.clear()
            with torch.enable_grad():
                logits = check_logits(model(x[index]), len(index), owner)
                activation = captured[-1] if captured else None
                if not isinstance(activation, Tensor) or activation.ndim != 4:
                    got = tuple(activation.shape) if isinstance(activation, Tensor) else None
                    raise AssayValueError(
                        f"The 'layer' parameter of {owner} must name a layer with outputs "
                        f"[N, C, h, w]; {self.layer or 'the chosen layer'!r} gave {got}. Fix: "
                        f"name a convolutional layer ({conv_layer_names(model)}).")
                selected = logits.gather(1, target[index][:, None]).sum()
                (grad,) = torch.autograd.grad(selected, activation)
            weights = grad.mean(dim=(2, 3), keepdim=True)
            cam = (weights * activation.detach()).sum(dim=1, keepdim=True)
            return F.relu(cam) if self.relu else cam

        handle = layer.register_forward_hook(keep)
        try:
            cam = map_batches(block, torch.arange(len(x), device=x.device),
                              batch_size=self.batch_size, device=x.device)
        finally:
            handle.remove()
        cam = F.interpolate(cam, size=x.shape[2:], mode=self.upsample)
        return cam.expand(-1, x.shape[1], -1, -1), None
