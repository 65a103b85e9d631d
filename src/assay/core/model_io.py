"""Model files in and out: :func:`load_network` reads a file safely (its format told from
its content, see :mod:`assay.core.loading`), :func:`save_network` writes one that it reads
back. A network holding a :class:`~assay.core.tabular.TabularEncoder` is written with
its tabular schema (JSON in the file), which :func:`load_network` uses to rebuild it and
:func:`schema_of_model_file` reads alone.
"""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import AssayValueError
from .data import Dataset
from .loading import (SCHEMA_FILE, SCHEMA_KEY, describe_file, file_sha256, load_network,
                      schema_of_model_file, sniff_format)
from .tabular import encoder_of

__all__ = ["describe_file", "file_sha256", "load_network", "save_network",
           "schema_of_model_file", "sniff_format"]

SAVE_SUFFIXES = (".safetensors", ".pt")


def save_network(net: nn.Module, path: str | Path, example: Dataset | None = None) -> Path:
    """Write ``net`` to ``path``: weights as safetensors (no code in the file; reload with
    the architecture's name), or a TorchScript archive for ``.pt`` (the only way an int8
    model keeps its packed weights), traced on two of ``example``'s inputs (needed unless
    ``net`` is TorchScript already). The caller's module is left as it was (mode,
    device). The file is written under a temporary name and renamed into place, so a
    crash never leaves half a model. Returns ``path``."""
    path = Path(path)
    if path.suffix not in SAVE_SUFFIXES:
        raise AssayValueError(f"{path}: write .safetensors (weights) or .pt (TorchScript).")
    encoder = None if isinstance(net, torch.jit.ScriptModule) else encoder_of(net)
    schema = None if encoder is None else encoder.schema.to_json()
    if path.suffix == ".safetensors":
        state = net.state_dict()
        # safetensors holds plain tensors only: an int8 model's packed weights are not
        if any(not isinstance(v, Tensor) or v.is_quantized for v in state.values()):
            raise AssayValueError(f"{path}: an int8 model cannot be written as weights; "
                                  "use a .pt (TorchScript) path.")
        from safetensors.torch import save_file

        tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
        metadata = None if schema is None else {SCHEMA_KEY: schema}
        return _write_atomically(path, lambda temp: save_file(tensors, temp, metadata=metadata))
    if not isinstance(net, torch.jit.ScriptModule):
        if example is None:
            raise AssayValueError(f"{path}: a .pt file is a TorchScript trace; pass example "
                                  "inputs (a Dataset) to trace the model on.")
        net = copy.deepcopy(net).cpu().eval()  # a CPU copy: the caller's model stays put
        with torch.no_grad():
            net = torch.jit.trace(net, example.x[:2].cpu())
    extra = {} if schema is None else {SCHEMA_FILE: schema}
    return _write_atomically(path, lambda temp: torch.jit.save(net, temp, _extra_files=extra))


def _write_atomically(path: Path, write) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(temp)
        os.replace(temp, path)
    finally:
        Path(temp).unlink(missing_ok=True)
    return path
