"""Tasks as data: what an executor runs, in this process or another one.

A :class:`Task` is a check spec, its cache key and its thread setting: small, frozen and
picklable, with nothing of the model, the data or a local directory in it. What every task
of an audit shares (the model, the evaluation and training data, the seed, the data root,
the training recipe, the progress flag) is one :class:`AuditInputs`, handed to the executor
once per audit; :meth:`AuditInputs.to_payload` turns it into plain data and bytes for another
process (a Ray executor would put it in the object store) and
:meth:`AuditInputs.from_payload` rebuilds it there without unpickling anything: weights as
safetensors, a network that is not a zoo architecture as a TorchScript archive.

:func:`run_task` is how any executor runs a task: read the check's output from the cache,
or run the check with the task's pieces (``CheckContext.piece``) and its executor
(``CheckContext.map``) and cache the output. Gates are not its business: the runner judges
every outcome, cached or fresh.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from .._version import __version__
from ..checks import CheckContext, CheckOutput, get_check
from ..core import zoo
from ..core.data import Dataset
from ..core.model import ModelFinding, ModelWrapper
from ..core.rng import seeded_generator
from ..core.tabular import TabularSchema
from ..core.threads import Threads, threads_for
from ..core.training import TrainConfig, TrainingRecipe
from ..errors import AssayValueError
from .cache import CacheStore, TaskPieces, cache_key
from .plan import CheckSpec

log = logging.getLogger(__name__)

PAYLOAD_FORMAT = 1


@dataclass(frozen=True)
class Task:
    """One check to run: its spec (name, parameters, gates), the cache key of its output
    and pieces (:func:`task_key`), and its intra-op thread setting."""

    spec: CheckSpec
    key: str
    threads: Threads = None


@dataclass(frozen=True)
class TaskOutcome:
    """What running a task gave: the check's output and seconds (from the cache when
    ``cached``), or ``output`` None and the ``error`` message of a check that raised."""

    output: CheckOutput | None
    seconds: float
    error: str | None = None
    cached: bool = False


@dataclass(frozen=True)
class AuditInputs:
    """What every task of an audit runs on, handed to the executor once."""

    model: ModelWrapper
    data: Dataset
    train_data: Dataset | None = None
    seed: int = 0
    data_root: str | Path | None = None
    training: TrainingRecipe | None = None
    progress: bool = True

    def context(self, *, pieces: TaskPieces | None = None, executor: Any = None) -> CheckContext:
        """The context a check runs in, with a task's pieces and the executor."""
        return CheckContext(model=self.model, data=self.data, seed=self.seed,
                            train_data=self.train_data, progress=self.progress,
                            data_root=self.data_root, training=self.training, pieces=pieces,
                            executor=executor)

    def to_payload(self) -> dict[str, Any]:
        """Plain data and bytes (no live objects) that :meth:`from_payload` rebuilds these
        inputs from in another process; an ``AssayValueError`` for a network that can be
        neither rebuilt from the zoo nor compiled to TorchScript."""
        return {"format": PAYLOAD_FORMAT, "model": model_payload(self.model),
                "data": dataset_payload(self.data),
                "train_data": None if self.train_data is None
                else dataset_payload(self.train_data),
                "seed": self.seed,
                "data_root": None if self.data_root is None else str(self.data_root),
                "training": None if self.training is None else self.training.describe(),
                "progress": self.progress}

    @classmethod
    def from_payload(cls, payload: dict[str, Any],
                     device: torch.device | str = "cpu") -> AuditInputs:
        """The inputs :meth:`to_payload` described, the model on ``device``."""
        _require_format(payload, "audit inputs")
        training = payload["training"]
        if training is not None:
            training = dict(training)
            training = TrainingRecipe(training.pop("arch"), TrainConfig(**training))
        train = payload["train_data"]
        return cls(model=model_from_payload(payload["model"], device),
                   data=dataset_from_payload(payload["data"]),
                   train_data=None if train is None else dataset_from_payload(train),
                   seed=int(payload["seed"]), data_root=payload["data_root"],
                   training=training, progress=bool(payload["progress"]))


def task_key(spec: CheckSpec, inputs: AuditInputs, model_hash: str) -> str:
    """The key of a check's output and pieces: everything that decides the output, and
    nothing that only judges it (gates)."""
    return cache_key(model=model_hash, data=inputs.data.sha256(),
                     train=None if inputs.train_data is None else inputs.train_data.sha256(),
                     training=None if inputs.training is None else inputs.training.describe(),
                     data_root=inputs.data_root or os.environ.get("ASSAY_DATA_DIR"),
                     check=spec.name, params=spec.params, seed=inputs.seed, version=__version__,
                     torch=torch.__version__, device=str(inputs.model.device),
                     files={path: _file_sha256(path)
                            for path in get_check(spec.name).input_files(spec.params)})


def _file_sha256(path: str) -> str:
    """The file's sha256 (read in 1 MiB blocks), or why it cannot be read: the key then
    differs from that of any readable version of the file."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as err:
        return f"unreadable: {type(err).__name__}"
    return digest.hexdigest()


def run_task(task: Task, inputs: AuditInputs, cache: CacheStore | None = None,
             executor: Any = None) -> TaskOutcome:
    """The check's cached output, or the check run (its pieces read from and written to
    ``cache``, its fan-out through ``executor``) and its output cached. A check that raises
    gives an outcome with its error, and keeps the pieces it finished for the next run."""
    spec = task.spec
    if cache is not None:
        hit = cache.get(task.key)
        if hit is not None:
            log.debug("check %s: cached output reused", spec.id)
            return TaskOutcome(*hit, cached=True)
    pieces = None if cache is None else TaskPieces(cache, task.key, inputs.model.device)
    output, seconds, error = execute(spec, inputs.context(pieces=pieces, executor=executor),
                                     task.threads)
    if output is not None and cache is not None:
        try:
            cache.put(task.key, output, seconds)
            cache.drop_pieces(task.key)
        except (OSError, TypeError, ValueError) as err:  # the result itself is kept
            log.warning("check %s: could not cache its output (%s: %s)", spec.id,
                        type(err).__name__, err)
    return TaskOutcome(output, seconds, error)


def execute(spec: CheckSpec, ctx: CheckContext,
            threads: Threads = None) -> tuple[CheckOutput | None, float, str | None]:
    """Run the check: (output, seconds, None), or (None, seconds, message) if it raised.
    Only an ``Exception`` is caught: an interrupt stops the audit."""
    check = get_check(spec.name)
    start = time.perf_counter()
    try:
        with threads_for(threads, ctx.model, ctx.data.x, owner="run_audit") as count:
            log.debug("check %s: running on %d threads", spec.id, count)
            output = check.run(ctx, spec.params)
    except Exception as err:  # a crashing check must not take the audit down
        message = f"{type(err).__name__}: {err}"
        log.error("check %s failed: %s", spec.id, message)
        log.debug("check %s: traceback\n%s", spec.id, traceback.format_exc())
        return None, time.perf_counter() - start, message
    finally:
        ctx.model.eval()
    return output, time.perf_counter() - start, None


# ---------------------------------------------------------------------------- payloads
def model_payload(model: ModelWrapper) -> dict[str, Any]:
    """The wrapper as plain data and bytes: its settings, findings, and its network as the
    zoo architecture's name and safetensors weights, or else a TorchScript archive
    (``torch.jit.script`` of a Python module; a trace could drop data-dependent branches).
    The rebuilt model is checked against this one on a seeded probe batch: a payload that
    would audit another function is an ``AssayValueError``, never sent."""
    net = model.net
    arch = zoo_arch(net, model.input_shape, model.num_classes)
    if arch is not None:
        weights = {k: v.detach().to("cpu", copy=True).contiguous()
                   for k, v in net.state_dict().items()}
        network = {"kind": "zoo", "arch": arch, "weights": safetensors.torch.save(weights)}
    else:
        network = {"kind": "torchscript", "archive": _torchscript_bytes(net, model.name)}
    payload = {
        "format": PAYLOAD_FORMAT, "network": network, "num_classes": model.num_classes,
        "input_shape": list(model.input_shape), "bounds": list(model.bounds),
        "mean": None if model.mean is None else model.mean.flatten().tolist(),
        "std": None if model.std is None else model.std.flatten().tolist(),
        "name": model.name, "findings": [[f.code, f.message] for f in model.findings]}
    _require_same_function(model, model_from_payload(payload, model.device))
    return payload


def model_from_payload(payload: dict[str, Any],
                       device: torch.device | str = "cpu") -> ModelWrapper:
    """The wrapper that :func:`model_payload` described, on ``device``; nothing is
    unpickled (safetensors weights, or ``torch.jit.load`` of the archive's bytes)."""
    _require_format(payload, "model")
    network = payload["network"]
    input_shape = tuple(int(s) for s in payload["input_shape"])
    num_classes = int(payload["num_classes"])
    if network["kind"] == "zoo":
        net = zoo.build(network["arch"], input_shape=input_shape, num_classes=num_classes)
        net.load_state_dict(safetensors.torch.load(network["weights"]))
    elif network["kind"] == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            net = torch.jit.load(io.BytesIO(network["archive"]), map_location="cpu")
    else:
        raise AssayValueError(f"A model payload's network kind must be 'zoo' or "
                              f"'torchscript'; got {network['kind']!r}.")
    model = ModelWrapper(net, num_classes=num_classes, input_shape=input_shape,
                         bounds=tuple(payload["bounds"]), mean=payload["mean"],
                         std=payload["std"], name=payload["name"]).to(device)
    model.findings = [ModelFinding(code, message) for code, message in payload["findings"]]
    return model


def zoo_arch(net: torch.nn.Module, input_shape: tuple[int, ...], num_classes: int) -> str | None:
    """The zoo architecture ``net`` is an instance of (the same module types, settings and
    weight shapes, and no hooks that a rebuild would lose), else None."""
    modules = list(net.modules())
    if isinstance(net, torch.jit.ScriptModule) or any(
            m._forward_hooks or m._forward_pre_hooks for m in modules):
        return None
    shapes = {k: v.shape for k, v in net.state_dict().items()}
    for name in zoo.ARCHITECTURES:
        try:
            fresh = zoo.build(name, input_shape=input_shape, num_classes=num_classes)
        except AssayValueError:  # e.g. a CNN for tabular input
            continue
        if (repr(fresh) == repr(net) and [type(m) for m in fresh.modules()] == [
                type(m) for m in modules]
                and {k: v.shape for k, v in fresh.state_dict().items()} == shapes):
            return name
    return None


def _torchscript_bytes(net: torch.nn.Module, name: str) -> bytes:
    try:
        with warnings.catch_warnings():  # torch 2.10+ deprecates TorchScript; it still loads
            warnings.simplefilter("ignore", DeprecationWarning)
            scripted = net if isinstance(net, torch.jit.ScriptModule) else torch.jit.script(net)
            buffer = io.BytesIO()
            torch.jit.save(scripted, buffer)
    except Exception as err:  # scripting fails in many ways (unsupported Python, export graphs)
        raise AssayValueError(
            f"The model {name!r} cannot be sent to another process: it is not a zoo "
            f"architecture and TorchScript cannot compile it ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}). Fix: save it as TorchScript "
            "(torch.jit.script or trace, then torch.jit.save) and audit the saved file, or "
            "run the audit with the local executor.") from err
    return buffer.getvalue()


def _require_same_function(model: ModelWrapper, rebuilt: ModelWrapper) -> None:
    if any(f.code == "stochastic" for f in model.findings):
        return  # two passes differ anyway; the weights and settings are what is sent
    low, high = model.bounds
    gen = seeded_generator(0, "cpu")
    probe = (low + (high - low) * torch.rand(4, *model.input_shape, generator=gen)).to(
        model.device)
    with torch.no_grad():
        same = torch.allclose(model(probe), rebuilt(probe), rtol=1e-5, atol=1e-6)
    if not same:
        raise AssayValueError(
            f"The model {model.name!r} rebuilt for another process gives other logits than "
            "the original (its forward depends on something the payload does not carry). "
            "Fix: save it as TorchScript and audit the saved file, or run the audit with "
            "the local executor.")


def dataset_payload(data: Dataset) -> dict[str, Any]:
    """A split as plain data and safetensors bytes (its tensors)."""
    tensors = {"x": data.x, "y": data.y,
               **{f"attribute.{k}": v for k, v in data.attributes.items()}}
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}
    schema = None if data.schema is None else data.schema.to_dict()
    return {"format": PAYLOAD_FORMAT, "tensors": safetensors.torch.save(tensors),
            "name": data.name, "split": data.split, "classes": list(data.classes),
            "source": data.source, "schema": schema,
            "attribute_values": {k: list(v) for k, v in data.attribute_values.items()}}


def dataset_from_payload(payload: dict[str, Any]) -> Dataset:
    """The split that :func:`dataset_payload` described (validated like any Dataset)."""
    _require_format(payload, "data set")
    tensors = safetensors.torch.load(payload["tensors"])
    attributes = {k.removeprefix("attribute."): v for k, v in tensors.items()
                  if k.startswith("attribute.")}
    schema = payload.get("schema")
    if schema is not None:
        schema = TabularSchema.from_dict(schema)
    return Dataset(tensors["x"], tensors["y"], payload["name"], payload["split"],
                   tuple(payload["classes"]), source=payload["source"], attributes=attributes,
                   attribute_values={k: tuple(v) for k, v in
                                     payload.get("attribute_values", {}).items()},
                   schema=schema)


def _require_format(payload: Any, what: str) -> None:
    if not isinstance(payload, dict) or payload.get("format") != PAYLOAD_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise AssayValueError(f"A {what} payload must be a dict of format {PAYLOAD_FORMAT}; got "
                              f"{found!r}. Fix: build it with this version of assay.")
