"""Load a model file safely; the format is recognised from the file's content.

Accepted: TorchScript archives (``torch.jit.save``, often named ``.pt``), torch.export
archives (``.pt2``), safetensors files, and ``state_dict`` files saved with
``torch.save`` (loaded with ``weights_only=True``). The last two hold weights only and
need an architecture name from :mod:`assay.core.zoo`. Nothing here unpickles arbitrary
objects: a file that needs full pickle is refused with the reason.

A tabular model saved by :func:`assay.core.model_io.save_network` carries its
:class:`~assay.core.tabular.TabularSchema` as JSON: in the safetensors metadata under
:data:`SCHEMA_KEY`, or as the TorchScript extra file :data:`SCHEMA_FILE`. It is untrusted
input like the rest of the file and validated field by field.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from . import zoo
from .model import ExportedModule
from .tabular import TabularSchema, check_encoder_matches
from .._params import check_choice
from ..errors import AssayValueError

ModelFormat = Literal["torchscript", "export", "safetensors", "state_dict"]
#: Where a model file keeps its tabular schema: a safetensors metadata key, a TorchScript
#: extra file.
SCHEMA_KEY = "assay.tabular_schema"
SCHEMA_FILE = "assay_tabular_schema.json"
_MAX_SCHEMA_BYTES = 64 << 20


def sniff_format(path: Path) -> ModelFormat:
    """Tell the format from the first bytes and, for zip archives, their member names."""
    with open(path, "rb") as handle:
        head = handle.read(16)
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except zipfile.BadZipFile as err:
            raise AssayValueError(f"{path}: a damaged zip archive ({err}).") from err
        if any(name.endswith("/archive_format") or name == "archive_format" for name in names) \
                or any("/models/" in name and name.endswith(".json") for name in names):
            return "export"
        if any("/code/" in name for name in names) and any(
                name.endswith("constants.pkl") for name in names):
            return "torchscript"
        if any(name.endswith("data.pkl") for name in names):
            return "state_dict"
        raise AssayValueError(f"{path}: a zip archive that is neither TorchScript, torch.export "
                              "nor a torch.save file.")
    if len(head) >= 9 and head[8:9] == b"{":
        header_len = int.from_bytes(head[:8], "little")
        if 0 < header_len < 100_000_000:
            return "safetensors"
    if head[:1] == b"\x80":  # a bare pickle stream (legacy torch.save)
        return "state_dict"
    raise AssayValueError(f"{path}: unknown model format. assay reads TorchScript, torch.export "
                          "(.pt2), safetensors, or a state_dict saved with torch.save.")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_network(path: str | Path, *, arch: str | None = None,
                 input_shape: tuple[int, ...] | None = None,
                 num_classes: int | None = None) -> tuple[nn.Module, ModelFormat]:
    """Load the network in ``path``; return it and the detected format.

    ``arch``, ``input_shape`` and ``num_classes`` are needed only for weight files
    (safetensors, state_dict), to build the zoo architecture the weights belong to.
    Weight files and torch.export programs come back in eval mode; a TorchScript model
    keeps the mode it was saved in, so that :class:`~assay.core.model.ModelWrapper` can
    report one saved in train mode.
    """
    path = Path(path)
    if not path.is_file():
        raise AssayValueError(f"{path}: no such model file.")
    kind = sniff_format(path)
    if kind == "torchscript":
        try:
            with warnings.catch_warnings():  # TorchScript is deprecated but still widely shipped
                warnings.simplefilter("ignore", DeprecationWarning)
                return torch.jit.load(str(path), map_location="cpu"), kind
        except (RuntimeError, torch.jit.Error) as err:
            raise AssayValueError(f"{path}: cannot load the TorchScript archive ({_first(err)})."
                                  ) from err
    if kind == "export":
        try:
            program = torch.export.load(str(path))
        except Exception as err:  # torch.export raises many types for a bad archive
            raise AssayValueError(f"{path}: cannot load the torch.export archive ({_first(err)})."
                                  ) from err
        _check_batch_dimension(path, program)
        return ExportedModule(program.module()), kind
    state = _read_weights(path, kind)
    if arch is None:
        raise AssayValueError(f"{path} holds weights only ({kind}); name its architecture with "
                              f"--arch, one of {sorted(zoo.ARCHITECTURES)}, or save the model as "
                              "TorchScript or torch.export.")
    check_choice("arch", arch, sorted(zoo.ARCHITECTURES), "load_network")
    if input_shape is None or num_classes is None:
        raise AssayValueError(f"{path}: building architecture {arch!r} needs the input shape "
                              "and class count; they come from the data.")
    schema = schema_of_model_file(path) if kind == "safetensors" else None
    try:
        net = zoo.build(arch, input_shape=input_shape, num_classes=num_classes, schema=schema)
    except AssayValueError as err:
        if schema is None:
            raise
        raise AssayValueError(f"{path}: a tabular model (its file carries a schema of "
                              f"{len(schema.features)} columns): {err}") from None
    mismatch = _state_mismatch(net.state_dict(), state)
    if not mismatch:
        try:
            net.load_state_dict(state)
        except RuntimeError as err:  # a case _state_mismatch does not know
            mismatch = _first(err)
    if mismatch:
        raise AssayValueError(f"{path}: the weights do not fit architecture {arch!r} with "
                              f"input shape {tuple(input_shape)} and {num_classes} classes "
                              f"({mismatch}). Check --arch and that the data's class count "
                              "matches the model's.")
    check_encoder_matches(net, str(path))
    return net.eval(), kind  # weights carry no mode: not the fresh module's train mode


def schema_of_model_file(path: str | Path) -> TabularSchema | None:
    """The tabular schema a model file carries (read from the safetensors header or the
    TorchScript archive's extra file alone, never the weights), or None."""
    path = Path(path)
    if not path.is_file():
        raise AssayValueError(f"{path}: no such model file.")
    kind = sniff_format(path)
    where = f"{path}: the tabular schema in its metadata"
    if kind == "safetensors":
        with open(path, "rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            raw = handle.read(size)
        try:
            header = json.loads(raw)
        except (ValueError, RecursionError) as err:
            raise AssayValueError(f"{path}: not a valid safetensors header ({err}).") from err
        metadata = header.get("__metadata__") if isinstance(header, dict) else None
        text = metadata.get(SCHEMA_KEY) if isinstance(metadata, dict) else None
        if text is None:
            return None
        if not isinstance(text, str):
            raise AssayValueError(f"{where} must be a JSON string.")
        return TabularSchema.from_json(text, where=where)
    if kind == "torchscript":
        try:
            with zipfile.ZipFile(path) as archive:
                member = next((info for info in archive.infolist()
                               if info.filename.endswith(f"/extra/{SCHEMA_FILE}")), None)
                if member is None:
                    return None
                if member.file_size > _MAX_SCHEMA_BYTES:
                    raise AssayValueError(f"{where} is {member.file_size:,} bytes, more than "
                                          f"{_MAX_SCHEMA_BYTES:,}.")
                text = archive.read(member).decode("utf-8")
        except (zipfile.BadZipFile, UnicodeDecodeError, OSError) as err:
            raise AssayValueError(f"{where} is not readable ({err}).") from err
        return TabularSchema.from_json(text, where=where)
    return None


def _state_mismatch(expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> str:
    """The missing, unexpected and wrongly shaped keys, a few of each; "" when they fit."""
    def few(keys: list[str]) -> str:
        shown = ", ".join(keys[:4])
        return shown + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")

    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shapes = [f"{k} {tuple(got[k].shape)} in the file, {tuple(v.shape)} in the architecture"
              for k, v in expected.items() if k in got and got[k].shape != v.shape]
    parts = [f"{label}: {few(keys)}" for label, keys in (
        ("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes))
        if keys]
    if missing and unexpected and any(k.startswith("module.") for k in unexpected):
        parts.append("the file's keys start with 'module.' (saved from DataParallel): save "
                     "model.module.state_dict() instead")
    return "; ".join(parts)


def _read_weights(path: Path, kind: ModelFormat) -> dict[str, torch.Tensor]:
    if kind == "safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise AssayValueError(f"{path}: not a valid safetensors file ({_first(err)}).") from err
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise AssayValueError(
            f"{path}: refused: loading it needs full pickle, which can run arbitrary code "
            "(the file holds Python objects beyond tensors). Fix: save the state_dict "
            "(torch.save(model.state_dict(), path)), safetensors, TorchScript or torch.export."
        ) from err
    except (RuntimeError, OSError, EOFError) as err:
        raise AssayValueError(f"{path}: cannot read the file ({_first(err)}).") from err
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise AssayValueError(f"{path}: expected a state_dict (names to tensors); got "
                              f"{type(state).__name__}.")
    return state


def _check_batch_dimension(path: Path, program) -> None:
    """Refuse a program traced for a fixed or capped batch size: assay runs batches of
    every size (1 to find the class count, 512 to predict)."""
    try:
        name = program.graph_signature.user_inputs[0]
        node = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == name)
        size = node.meta["val"].shape[0]
        if isinstance(size, int):
            problem = f"a static batch size of {size}"
        else:
            upper = program.range_constraints[size.node.expr].upper
            if bool(upper > 1_000_000):
                return
            problem = f"a batch size of at most {int(upper)}"
    except Exception:  # another torch's layout: a failing forward still says why
        return
    raise AssayValueError(
        f"{path}: the torch.export program was exported with {problem}; assay runs batches of "
        f"any size. Fix: re-export it with a dynamic batch dimension, torch.export.export("
        f"model, (x,), dynamic_shapes={{{name!r}: {{0: torch.export.Dim('batch')}}}}).")


def _first(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def describe_file(path: Path) -> dict:
    return {"path": str(path), "sha256": file_sha256(path), "format": sniff_format(path),
            "bytes": path.stat().st_size}
