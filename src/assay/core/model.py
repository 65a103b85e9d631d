"""The model wrapper: one object that every algorithm and check receives.

A wrapped model takes inputs in their natural range (images in [0, 1]), applies the
optional mean/std normalisation itself, and returns logits. It knows its input bounds,
class count and input shape, and it runs in eval mode.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .._params import check_float
from ..errors import AssayValueError, AssayWarning
from .inference import batched_logits, model_device


@dataclass(frozen=True)
class ModelFinding:
    """Something the wrapper noticed about the model's behaviour."""

    code: str  # "probabilities", "stochastic", "train_mode", ...
    message: str


class ModelWrapper(nn.Module):
    """A classifier with its input bounds, normalisation, class count and input shape.

    Parameters
    ----------
    net : nn.Module
        Maps a batch ``[N, *input_shape]`` (after normalisation) to logits ``[N, K]``.
    num_classes : int
        ``K``. Pass ``None`` to infer it from one forward pass on a zero input.
    input_shape : sequence of int
        Shape of one input, without the batch dimension, e.g. ``(1, 28, 28)``.
    bounds : (float, float), default (0.0, 1.0)
        The valid input range; attacks clip to it.
    mean, std : sequence of float or None, default None
        Per-channel normalisation applied inside the wrapper: ``(x - mean) / std``.
    name : str, default "model"
        Shown in reports.

    The wrapped network is put in eval mode; a network handed over in train mode gets
    a ``train_mode`` finding (dropout or batch-norm statistics would have made the
    audit stochastic). A torch.export module (``ExportedProgram.module()``), whose mode
    was fixed at export, is taken as it is.

    Example
    -------
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    >>> model = ModelWrapper(net, num_classes=3, input_shape=(1, 2, 2))
    >>> model(torch.zeros(5, 1, 2, 2)).shape
    torch.Size([5, 3])
    """

    mean: Tensor | None  # buffers, shaped to broadcast over a batch
    std: Tensor | None

    def __init__(self, net: nn.Module, *, num_classes: int | None, input_shape: Sequence[int],
                 bounds: tuple[float, float] = (0.0, 1.0), mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, name: str = "model") -> None:
        super().__init__()
        owner = "ModelWrapper"
        if not isinstance(net, nn.Module):
            raise AssayValueError(f"The 'net' parameter of {owner} must be a torch.nn.Module. "
                                  f"Got {type(net).__name__} instead.")
        self.input_shape = tuple(int(s) for s in input_shape)
        if not self.input_shape or any(s <= 0 for s in self.input_shape):
            raise AssayValueError(f"The 'input_shape' parameter of {owner} must be a non-empty "
                                  f"sequence of positive ints. Got {tuple(input_shape)!r} instead.")
        lo, hi = (check_float("bounds", b, owner) for b in bounds)
        if not lo < hi:
            raise AssayValueError(f"The 'bounds' parameter of {owner} must be (low, high) with "
                                  f"low < high. Got {tuple(bounds)!r} instead.")
        self.bounds = (lo, hi)
        self.name = name
        self.findings: list[ModelFinding] = []
        if "train" in vars(net):  # torch.export's module() replaces train() by one that raises
            net = ExportedModule(net)
        if getattr(net, "training", False):  # a frozen TorchScript module has no flag
            self.findings.append(ModelFinding(
                "train_mode", "The model was handed over in train mode; assay switched it to "
                "eval mode (dropout off, batch-norm running statistics used)."))
        self.net = net.eval()
        self.register_buffer("mean", _channel_stats(mean, self.input_shape, "mean", owner),
                             persistent=False)
        self.register_buffer("std", _channel_stats(std, self.input_shape, "std", owner),
                             persistent=False)
        if self.std is not None and bool((self.std <= 0).any()):
            raise AssayValueError(f"The 'std' parameter of {owner} must be positive. "
                                  f"Got {std!r} instead.")
        if num_classes is None:
            num_classes = self._infer_num_classes()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise AssayValueError(f"The 'num_classes' parameter of {owner} must be an int >= 2. "
                                  f"Got {num_classes!r} instead.")
        self.num_classes = num_classes

    # ----------------------------------------------------------------------- forward
    def forward(self, x: Tensor) -> Tensor:
        if self.mean is not None:
            x = x - self.mean
        if self.std is not None:
            x = x / self.std
        return self.net(x)

    @property
    def device(self) -> torch.device:
        return model_device(self.net)

    def predict_logits(self, x: Tensor, *, batch_size: int = 512) -> Tensor:
        """Logits for ``x`` in batches, on the model's device, in eval mode.

        Raises ``AssayValueError`` when a logit is NaN or infinite (one check per call)."""
        device = self.device
        logits = batched_logits(self, x, batch_size=batch_size, device=device,
                                output_device=device, owner="ModelWrapper.predict_logits")
        _require_finite(logits)  # argmax would read a NaN row as class 0
        return logits

    def predict(self, x: Tensor, *, batch_size: int = 512) -> Tensor:
        """Predicted labels ``[N]`` (``AssayValueError`` on NaN or infinite logits)."""
        return self.predict_logits(x, batch_size=batch_size).argmax(dim=1)

    # ----------------------------------------------------------------------- checks
    @torch.no_grad()
    def inspect(self, x: Tensor) -> list[ModelFinding]:
        """Run the model on a sample of real inputs and record what looks wrong.

        Raises ``AssayValueError`` when the model rejects inputs of this shape or returns
        something other than finite ``[N, K]`` logits; records findings (and warns) when
        outputs look like probabilities or differ between two identical forward passes.
        """
        sample = x[:64].to(self.device)
        if tuple(sample.shape[1:]) != self.input_shape:
            raise AssayValueError(
                f"The data's input shape {tuple(sample.shape[1:])} does not match the model's "
                f"input shape {self.input_shape}. Fix: pass data of the model's shape, or set "
                f"the model's input_shape.")
        self.eval()
        first = self._guarded_forward(sample)
        second = self._guarded_forward(sample)
        for out in (first, second):  # before comparing them: NaN != NaN
            _require_finite(out)
        found: list[ModelFinding] = []
        if not torch.equal(first, second):
            gap = (first - second).abs().max().item()
            found.append(ModelFinding(
                "stochastic", f"Two forward passes on the same input differ (max |diff| = "
                f"{gap:.3g}): the model is stochastic, so gradient attacks need expectation over "
                "transformation (EOT) and results vary between runs."))
        if _looks_like_probabilities(first):
            found.append(ModelFinding(
                "probabilities", "The model's outputs are non-negative and each row sums to 1: "
                "it returns probabilities, not logits. Losses computed on them saturate and "
                "weaken gradient attacks; return the logits (drop the final softmax)."))
        for finding in found:
            if finding not in self.findings:
                self.findings.append(finding)
                warnings.warn(finding.message, AssayWarning, stacklevel=2)
        return found

    def _guarded_forward(self, sample: Tensor) -> Tensor:
        out = self._probe(sample)
        if out.shape[1] != self.num_classes:
            raise AssayValueError(
                f"The model returns {out.shape[1]} outputs per input but num_classes is "
                f"{self.num_classes}.")
        return out

    def _infer_num_classes(self) -> int:
        with torch.no_grad():
            out = self._probe(torch.zeros(1, *self.input_shape, device=self.device))
        return int(out.shape[1])

    def _probe(self, sample: Tensor) -> Tensor:
        """One forward pass whose failures are ``AssayValueError``s naming the fix."""
        try:
            out = self(sample)
        except Exception as err:  # torch.jit.Error is no RuntimeError; export guards assert
            raise _rejected(err, sample.shape) from err
        if not isinstance(out, Tensor) or out.ndim != 2 or out.shape[0] != sample.shape[0]:
            shape = tuple(out.shape) if isinstance(out, Tensor) else f"a {type(out).__name__}"
            raise AssayValueError(
                f"The model must return one tensor of logits of shape [N, num_classes]; for a "
                f"batch of {sample.shape[0]} it returned {shape}. Fix: make forward return the "
                "logits alone (e.g. a wrapper module returning the first output).")
        return out

    # ----------------------------------------------------------------------- identity
    def fingerprint(self) -> str:
        """sha256 over the weights, buffers, bounds and normalisation."""
        digest = hashlib.sha256()
        digest.update(repr((self.input_shape, self.bounds, self.num_classes)).encode())
        for stat in (self.mean, self.std):
            digest.update(b"-" if stat is None else _tensor_bytes(stat))
        for key, value in sorted(self.net.state_dict().items()):
            digest.update(key.encode())
            digest.update(_tensor_bytes(value))
        return digest.hexdigest()

    def describe(self) -> dict:
        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "input_shape": list(self.input_shape),
            "bounds": list(self.bounds),
            "normalization": None if self.mean is None and self.std is None else {
                "mean": None if self.mean is None else self.mean.flatten().tolist(),
                "std": None if self.std is None else self.std.flatten().tolist()},
            "parameters": sum(p.numel() for p in self.net.parameters()),
            "device": str(self.device),
        }


class ExportedModule(nn.Module):
    """Holds a torch.export graph module (``ExportedProgram.module()``), which refuses
    ``train()`` and ``eval()``: its mode was fixed at export, so it counts as eval mode."""

    def __init__(self, graph: nn.Module) -> None:
        super().__init__()
        self.graph = graph
        self.training = False

    def forward(self, x: Tensor) -> Tensor:
        return self.graph(x)

    def train(self, mode: bool = True) -> ExportedModule:
        self.training = mode  # the flag only: the graph itself cannot switch
        return self


def _rejected(err: Exception, shape: torch.Size) -> AssayValueError:
    # TorchScript puts its own preamble first; the cause is on the last line.
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    cause = lines[-1] if lines else type(err).__name__
    fix = "pass data of the shape the model expects, or fix the model's forward"
    if "Guard failed" in cause:  # a torch.export program traced for one input shape
        fix = ("re-export the model with a dynamic batch dimension (dynamic_shapes with "
               "torch.export.Dim) and the data's input shape")
    if not isinstance(err, torch.jit.Error):  # whose cause names the Python error itself
        cause = f"{type(err).__name__}: {cause}"
    return AssayValueError(f"The model rejected inputs of shape {tuple(shape)} ({cause}). "
                           f"Fix: {fix}.")


def _require_finite(logits: Tensor) -> None:
    if not bool(torch.isfinite(logits).all()):  # one reduction; rows are counted on failure
        bad = int((~torch.isfinite(logits).all(dim=1)).sum())
        raise AssayValueError(
            f"The model returned NaN or infinite logits for {bad} of {len(logits)} inputs, so "
            "no prediction of theirs can be scored. Fix: check the weights (a NaN in the file, "
            "a diverged training run) and that the data is in the model's input range and "
            "normalisation (bounds, mean, std).")


def _tensor_bytes(tensor: Tensor) -> bytes:
    t = tensor.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        t = t.float()
    return t.numpy().tobytes() if t.numel() else b""


def _channel_stats(values: Sequence[float] | None, input_shape: tuple[int, ...], name: str,
                   owner: str) -> Tensor | None:
    if values is None:
        return None
    channels = input_shape[0]
    stats = torch.as_tensor(list(values), dtype=torch.float32).flatten()
    if stats.numel() not in (1, channels) or not torch.isfinite(stats).all():
        count = "1 finite number" if channels == 1 else (
            f"1 or {channels} finite numbers (one per channel)")
        raise AssayValueError(f"The '{name}' parameter of {owner} must hold {count}. "
                              f"Got {list(values)!r} instead.")
    # Shape [1, C, 1, 1] for images, [1, D] for tabular data; one value broadcasts anyway.
    spatial = len(input_shape) - 1
    return stats.view(1, -1, *([1] * spatial)) if stats.numel() > 1 else stats


def _looks_like_probabilities(out: Tensor) -> bool:
    if out.numel() == 0 or bool((out < 0).any()):
        return False
    return bool(torch.allclose(out.sum(dim=1), torch.ones(len(out), device=out.device),
                               atol=1e-4))
