"""Post-training int8 quantization with ``torch.ao.quantization``.

- ``"dynamic"``: ``quantize_dynamic`` on every ``nn.Linear``: int8 weights, activations
  quantized on the fly per batch. Convolutions stay float. No calibration.
- ``"static"``: FX graph mode (``prepare_fx`` / ``convert_fx``) with the default qconfig
  mapping of the CPU backend: int8 weights (per channel) and activations whose ranges
  were observed on calibration inputs. The converted graph quantizes its float input and
  dequantizes its output, so the model still takes float inputs and returns float logits.

Quantized models run on the CPU only, and gradients do not flow through quantized ops:
white-box attacks on them are impossible. Their robustness is measured by transfer
(adversarial examples crafted on the float model, judged on the int8 model), as the
``compression`` check does, or by a black-box attack such as
:class:`assay.attacks.evasion.square.Square`.

torch 2.13 marks ``torch.ao.quantization`` deprecated in favour of torchao; it still
works, and its deprecation warnings are silenced here.
"""

from __future__ import annotations

import copy
import warnings
from typing import Literal

import torch
from torch import Tensor, nn

from ..._params import check_choice, check_int
from ...core.data import Dataset
from ...core.inference import batched_logits
from ...errors import AssayValueError
from ._common import normalise, rewrap, unwrap

Mode = Literal["dynamic", "static"]
CALIBRATION_BATCH = 256


def quantize(model: nn.Module, mode: Mode = "dynamic", *,
             calibration: Tensor | Dataset | None = None, backend: str | None = None,
             batch_size: int = CALIBRATION_BATCH) -> nn.Module:
    """An int8 copy of ``model`` on the CPU (the input model is untouched).

    Parameters
    ----------
    model : nn.Module or ModelWrapper - a ModelWrapper gives a ModelWrapper with the same
        bounds and normalisation (applied in float before the int8 network).
    mode : {"dynamic", "static"}, default "dynamic"
    calibration : Tensor [N, ...] or Dataset or None - inputs in their natural range
        (like the model's data) on which static quantization observes activation ranges;
        required for "static", ignored for "dynamic". A few hundred samples suffice.
    backend : str or None, default None - the quantized engine whose default qconfig is
        used ("x86", "fbgemm", "qnnpack", ...); None: the current
        ``torch.backends.quantized.engine``.
    batch_size : int, default 256 - calibration batch size

    Raises AssayValueError when static quantization cannot trace or run the architecture
    (FX needs a symbolically traceable forward; use mode="dynamic" then).

    Example
    -------
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    >>> quantize(net)(torch.zeros(2, 1, 2, 2)).dtype
    torch.float32
    """
    owner = "quantize"
    check_choice("mode", mode, ("dynamic", "static"), owner)
    check_int("batch_size", batch_size, owner, low=1)
    engines = torch.backends.quantized.supported_engines
    backend = torch.backends.quantized.engine if backend is None else backend
    check_choice("backend", backend, [e for e in engines if e != "none"], owner)
    net = copy.deepcopy(unwrap(model)).cpu().eval()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.ao\..*")
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
        warnings.filterwarnings("ignore", message=".*reduce_range.*")
        if mode == "dynamic":
            from torch.ao.quantization import quantize_dynamic

            quantized = quantize_dynamic(net, {nn.Linear}, dtype=torch.qint8)
        else:
            x = _calibration_inputs(model, calibration)
            quantized = _static(net, x, backend, batch_size)
    return rewrap(model, quantized, suffix=f" (int8 {mode})")


def is_quantized(model: nn.Module) -> bool:
    """Whether any of the model's state is a quantized tensor or packed int8 weights
    (such a model runs on the CPU and has no input gradients)."""
    for value in model.state_dict().values():
        if not isinstance(value, Tensor) or value.is_quantized:
            return True
    return False


def _calibration_inputs(model: nn.Module, calibration: Tensor | Dataset | None) -> Tensor:
    if calibration is None:
        raise AssayValueError("The 'calibration' parameter of quantize must be a tensor or a "
                              "Dataset of inputs when mode is 'static'. Got None instead. Fix: "
                              "pass a few hundred training inputs, or use mode='dynamic'.")
    x = calibration.x if isinstance(calibration, Dataset) else calibration
    if not isinstance(x, Tensor) or not x.is_floating_point() or len(x) == 0:
        raise AssayValueError("The 'calibration' parameter of quantize must be a non-empty "
                              f"float tensor or Dataset. Got {type(calibration).__name__} "
                              "instead.")
    # The int8 network sees what the wrapper's network sees: normalised inputs.
    return normalise(model, x.detach().cpu().float())


@torch.no_grad()
def _static(net: nn.Module, x: Tensor, backend: str, batch_size: int) -> nn.Module:
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    name = type(net).__name__
    example = (x[:1],)
    try:
        prepared = prepare_fx(net, get_default_qconfig_mapping(backend), example_inputs=example)
    except Exception as err:  # FX tracing fails in many ways (control flow, unsupported ops)
        raise AssayValueError(
            f"quantize: static (FX graph mode) quantization cannot trace {name}: "
            f"{type(err).__name__}: {err}. Fix: use mode='dynamic', or make the forward "
            "symbolically traceable (no data-dependent Python control flow).") from err
    batched_logits(prepared, x, batch_size=batch_size, device=x.device,
                   owner="quantize")  # the observers record each layer's range
    try:
        quantized = convert_fx(prepared)
        quantized(x[:2])  # some ops only fail when the int8 kernels run
    except Exception as err:
        raise AssayValueError(
            f"quantize: static int8 conversion of {name} failed on the {backend!r} backend: "
            f"{type(err).__name__}: {err}. Fix: use mode='dynamic'.") from err
    return quantized.eval()
