"""Attributions, one uniform call: ``explain(model, x, target=None, method=...)``.

Each method is one module and one :class:`~assay.explain._base.Explainer` class (settings
in ``__init__``, model and data at the call), registered by name in :data:`EXPLAINERS`:

| name                 | class               | paper                                  |
|----------------------|---------------------|----------------------------------------|
| saliency             | Saliency            | Simonyan et al., ICLR workshop 2014    |
| gradient_x_input     | GradientXInput      | Shrikumar et al., arXiv 2016           |
| integrated_gradients | IntegratedGradients | Sundararajan et al., ICML 2017         |
| smoothgrad           | SmoothGrad          | Smilkov et al., 2017                   |
| gradcam              | GradCAM             | Selvaraju et al., ICCV 2017            |
| occlusion            | Occlusion           | Zeiler & Fergus, ECCV 2014             |
| kernel_shap          | KernelSHAP          | Lundberg & Lee, NeurIPS 2017 (tabular) |
| lime                 | LIME                | Ribeiro et al., KDD 2016 (tabular)     |

Their evaluation (deletion and insertion, ROAD, randomisation, max-sensitivity,
infidelity, completeness) is :mod:`assay.explain.metrics`, the check's protocol
:mod:`assay.explain.evaluation`; :func:`activation_maximisation` draws what a class or a
unit responds to (:mod:`assay.explain.feature_visualisation`). captum is the test oracle,
not the engine.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from ..errors import AssayValueError
from ._base import EXPLAINERS, Attribution, Explainer
from .feature_visualisation import activation_maximisation
from .gradcam import GradCAM
from .gradient_x_input import GradientXInput
from .integrated_gradients import IntegratedGradients
from .kernel_shap import KernelSHAP
from .lime import LIME
from .occlusion import Occlusion
from .saliency import Saliency
from .smoothgrad import SmoothGrad

__all__ = ["EXPLAINERS", "LIME", "Attribution", "Explainer", "GradCAM", "GradientXInput",
           "IntegratedGradients", "KernelSHAP", "Occlusion", "Saliency", "SmoothGrad",
           "activation_maximisation", "explain", "make_explainer"]


def make_explainer(method: str | Explainer,
                   settings: Mapping[str, Any] | None = None) -> Explainer:
    """The explainer ``method`` names (a key of :data:`EXPLAINERS`) built with
    ``settings``, or ``method`` itself when it is an :class:`Explainer` (then without
    settings). A setting the method does not take is an ``AssayValueError`` listing the
    ones it does, so a misspelt option never passes silently."""
    if isinstance(method, Explainer):
        if settings:
            raise AssayValueError("The 'settings' parameter of explain must be empty when "
                                  "'method' is an Explainer object (its settings are fixed at "
                                  f"construction). Got {dict(settings)!r} instead.")
        return method
    if not isinstance(method, str):
        raise AssayValueError(f"The 'method' parameter of explain must be one of "
                              f"{EXPLAINERS.names()} or an Explainer. Got {method!r} instead.")
    cls = EXPLAINERS.lookup(method)
    settings = dict(settings or {})
    known = [name for name, p in inspect.signature(cls).parameters.items()
             if p.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise AssayValueError(f"The 'settings' parameter of explain has {unknown} for method "
                              f"{method!r}, which takes {known}. Fix: use those names.")
    return cls(**settings)


def explain(model: nn.Module, x: Tensor, target: int | Tensor | None = None,
            method: str | Explainer = "integrated_gradients", *,
            settings: Mapping[str, Any] | None = None) -> Tensor:
    """Attributions of ``target`` (default: each input's predicted class) for ``x`` by
    ``method``, a tensor shaped like ``x`` on ``x``'s device.

    Parameters:
        model: a classifier returning logits (an :class:`assay.core.model.ModelWrapper`
            or a plain ``nn.Module``); it runs in eval mode, its modes restored after.
        x: inputs [N, ...] within the model's bounds.
        target: None, one class for all inputs, or an int64 tensor [N].
        method: a name of :data:`EXPLAINERS` (default "integrated_gradients") or an
            :class:`Explainer` object.
        settings: the method's keyword arguments, e.g. ``{"steps": 64}`` (each method's
            class documents its settings and defaults); unknown keys are an error.

    For a method's own error estimate (IG's convergence delta) call ``.run`` on the
    explainer: ``make_explainer(method, settings).run(model, x, target).delta``.

    Example:
        >>> import torch
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> explain(net, torch.rand(2, 1, 2, 2), method="saliency").shape
        torch.Size([2, 1, 2, 2])
    """
    return make_explainer(method, settings)(model, x, target)
