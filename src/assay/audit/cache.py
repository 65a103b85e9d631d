"""The cache of what checks computed, so an interrupted audit resumes.

Two kinds of entries, both under a task's key (:func:`cache_key`: the sha256 of everything
that decides a check's output: model fingerprint, data hashes, check name and parameters,
seed, assay and torch versions, device):

- a check's **output**: metrics, findings, plots, galleries, details and the seconds it took.
  Gates and the status are never stored: the runner evaluates the current plan's gates on
  every run, cached or not, so raising a gate can never reuse an old verdict.
- the **pieces** of a check still running (one radius of the robustness check, one
  corruption, a batch of certified points), each stored as it is done, so a killed check
  resumes at its first missing piece. A piece is plain data: JSON values and tensors,
  nested in dicts and lists. It is found by the task's key and its name, so it can never be
  read by a check with other parameters, model, data, seed or versions. Once the check's
  output is stored its pieces are dropped (``keep_pieces`` keeps them).

:class:`CacheStore` is what the runner and the checks need of a cache;
:class:`DirectoryCache` is the local-directory one (a directory on a file system that several
processes share works too: every write is a temporary file renamed into place). Every entry
is validated on read: one that does not fit is logged and recomputed, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol, TypeVar

import safetensors.torch
import torch

from ..results import (CheckOutput, findings_from_json, galleries_from_json, json_safe,
                       metrics_from_json, plots_from_json)

log = logging.getLogger(__name__)

FORMAT = 3  # 1: whole CheckResults with their gates; 2: outputs without galleries
ENTRY_KEYS = ("format", "metrics", "findings", "plots", "details", "seconds", "galleries")
PIECE_FORMAT = 1
_TENSOR = "$tensor"  # {"$tensor": "t0"} stands for the stored tensor t0 in a piece's data

T = TypeVar("T")


def cache_key(**parts: Any) -> str:
    blob = json.dumps({"format": FORMAT, **parts}, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


class CacheStore(Protocol):
    """What the runner and the checks need of a cache: a check's output and the named
    pieces of a check, each under the task's key. ``get`` and ``get_piece`` return None for
    an entry that is absent or invalid (and log the latter); ``put`` and ``put_piece`` may
    raise OSError, TypeError or ValueError (a value the format cannot hold)."""

    def get(self, key: str) -> tuple[CheckOutput, float] | None: ...

    def put(self, key: str, output: CheckOutput, seconds: float) -> None: ...

    def get_piece(self, key: str, name: str) -> Any | None: ...

    def put_piece(self, key: str, name: str, value: Any) -> None: ...

    def drop_pieces(self, key: str) -> None: ...


class DirectoryCache:
    """A cache in a local directory: ``<key>.json`` per check output, and
    ``<key>.pieces/<sha256 of the name>.safetensors`` per piece (its tensors, with the JSON
    rest, the key and the name in the file's metadata), read back without pickle.
    ``keep_pieces``: keep a check's pieces after its output is stored (default: drop them,
    the output makes them redundant)."""

    def __init__(self, directory: str | Path, *, keep_pieces: bool = False) -> None:
        self.directory = Path(directory).absolute()  # workers elsewhere may have another cwd
        self.keep_pieces = keep_pieces

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def _pieces(self, key: str) -> Path:
        return self.directory / f"{key}.pieces"

    def _piece_path(self, key: str, name: str) -> Path:
        return self._pieces(key) / f"{hashlib.sha256(name.encode()).hexdigest()[:32]}.safetensors"

    # -- outputs -----------------------------------------------------------------------
    def get(self, key: str) -> tuple[CheckOutput, float] | None:
        """The stored output and seconds, or None when absent or invalid (logged)."""
        path = self._path(key)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as err:
            log.warning("cache entry %s is unreadable (%s); recomputing", path, err)
            return None
        try:
            return entry_from_json(json.loads(text))
        except json.JSONDecodeError as err:
            log.warning("cache entry %s is not valid JSON, probably truncated (%s); "
                        "recomputing", path, err)
        except ValueError as err:
            log.warning("cache entry %s does not fit the cache schema (%s); recomputing",
                        path, err)
        return None

    def put(self, key: str, output: CheckOutput, seconds: float) -> None:
        """Store ``output``; raises OSError or TypeError (details not JSON) like json.dump."""
        entry = {"format": FORMAT, "metrics": output.metrics,
                 "findings": [asdict(f) for f in output.findings],
                 "plots": [asdict(p) for p in output.plots], "details": output.details,
                 "seconds": seconds, "galleries": [asdict(g) for g in output.galleries]}
        text = json.dumps(json_safe(entry), allow_nan=False)
        _write_atomically(self._path(key), text.encode("utf-8"))

    # -- pieces ------------------------------------------------------------------------
    def get_piece(self, key: str, name: str) -> Any | None:
        """The piece ``name`` of the task ``key`` (tensors on the CPU), or None when absent
        or invalid (logged)."""
        path = self._piece_path(key, name)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as err:
            log.warning("cache piece %s (%s) is unreadable (%s); recomputing", path, name, err)
            return None
        try:
            return piece_from_bytes(blob, key, name)
        except Exception as err:  # a damaged file may fail in any way: never trust it
            log.warning("cache piece %s (%s) is invalid (%s: %s); recomputing", path, name,
                        type(err).__name__, err)
            return None

    def put_piece(self, key: str, name: str, value: Any) -> None:
        """Store ``value`` (JSON values and tensors, nested in dicts and lists) as the piece
        ``name``; TypeError for anything else."""
        _write_atomically(self._piece_path(key, name), piece_to_bytes(value, key, name))

    def drop_pieces(self, key: str) -> None:
        if not self.keep_pieces:
            shutil.rmtree(self._pieces(key), ignore_errors=True)


ResultCache = DirectoryCache  # the name before the cache held pieces


class TaskPieces:
    """The pieces of one task: ``cache``'s pieces under the task's ``key``, with tensors
    moved to ``device``. :meth:`piece` is what ``CheckContext.piece`` calls."""

    def __init__(self, cache: CacheStore, key: str, device: torch.device | str = "cpu") -> None:
        self.cache, self.key, self.device = cache, key, torch.device(device)

    def piece(self, name: str, compute: Callable[[], T], *,
              encode: Callable[[T], Any] | None = None,
              decode: Callable[[Any], T] | None = None) -> T:
        """The stored piece ``name`` decoded, or ``compute()``'s value, stored encoded.
        ``decode`` must raise (ValueError, TypeError, KeyError, IndexError) for a value
        that does not fit, e.g. a tensor of the wrong shape: the piece is then recomputed."""
        stored = self.cache.get_piece(self.key, name)
        if stored is not None:
            try:
                value = to_device(stored, self.device)
                return value if decode is None else decode(value)
            except (ValueError, TypeError, KeyError, IndexError, AttributeError) as err:
                log.warning("cache piece %r of task %s does not fit (%s: %s); recomputing",
                            name, self.key[:12], type(err).__name__, err)
        value = compute()
        try:
            self.cache.put_piece(self.key, name, value if encode is None else encode(value))
        except (OSError, TypeError, ValueError) as err:  # the value itself is kept
            log.warning("could not cache piece %r of task %s (%s: %s)", name, self.key[:12],
                        type(err).__name__, err)
        return value


def to_device(value: Any, device: torch.device) -> Any:
    """``value`` with every tensor in it moved to ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    if isinstance(value, list):
        return [to_device(v, device) for v in value]
    return value


def piece_to_bytes(value: Any, key: str, name: str) -> bytes:
    """A safetensors file of the tensors in ``value``, with the rest as JSON metadata."""
    tensors: dict[str, torch.Tensor] = {}

    def plain(item: Any) -> Any:
        if isinstance(item, torch.Tensor):
            ref = f"t{len(tensors)}"
            tensors[ref] = item.detach().to("cpu", copy=True).contiguous()
            return {_TENSOR: ref}
        if isinstance(item, dict):
            if _TENSOR in item or not all(isinstance(k, str) for k in item):
                raise TypeError(f"a piece's dict keys must be strings other than {_TENSOR!r}")
            return {k: plain(v) for k, v in item.items()}
        if isinstance(item, (list, tuple)):
            return [plain(v) for v in item]
        if item is None or isinstance(item, (bool, int, float, str)):
            return item
        raise TypeError(f"a piece holds JSON values and tensors; got {type(item).__name__}")

    data = json.dumps(plain(value))
    meta = {"format": str(PIECE_FORMAT), "key": key, "name": name, "data": data}
    return safetensors.torch.save(tensors, metadata=meta)


def piece_from_bytes(blob: bytes, key: str, name: str) -> Any:
    """The piece in ``blob``; ValueError when it is not the piece ``name`` of ``key``."""
    tensors = safetensors.torch.load(blob)
    size = int.from_bytes(blob[:8], "little")
    meta = json.loads(blob[8:8 + size]).get("__metadata__") or {}
    if meta.get("format") != str(PIECE_FORMAT):
        raise ValueError(f"format must be {PIECE_FORMAT}; got {meta.get('format')!r}")
    if meta.get("key") != key or meta.get("name") != name:
        raise ValueError(f"it holds piece {meta.get('name')!r} of task {meta.get('key')!r}")
    used: set[str] = set()

    def rebuilt(item: Any) -> Any:
        if isinstance(item, dict):
            if set(item) == {_TENSOR}:
                ref = item[_TENSOR]
                if ref not in tensors or ref in used:
                    raise ValueError(f"tensor {ref!r} is missing or used twice")
                used.add(ref)
                return tensors[ref]
            return {k: rebuilt(v) for k, v in item.items()}
        if isinstance(item, list):
            return [rebuilt(v) for v in item]
        return item

    value = rebuilt(json.loads(meta["data"]))
    if used != set(tensors):
        raise ValueError(f"tensors {sorted(set(tensors) - used)} are not referenced")
    return value


def _write_atomically(path: Path, blob: bytes) -> None:
    """Write ``blob`` to a temporary file beside ``path`` and rename it into place, so a
    kill mid-write never leaves a half-written entry."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(blob)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def entry_from_json(raw: Any) -> tuple[CheckOutput, float]:
    """Validate a parsed entry field by field; ValueError names the first bad field."""
    if not isinstance(raw, dict):
        raise ValueError(f"an entry must be an object; got {type(raw).__name__}")
    if raw.get("format") != FORMAT:
        raise ValueError(f"'format' must be {FORMAT}; got {raw.get('format')!r}")
    if set(raw) != set(ENTRY_KEYS):
        raise ValueError(f"the keys must be {list(ENTRY_KEYS)}; got {sorted(raw)}")
    seconds = raw["seconds"]
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not (
            math.isfinite(seconds) and seconds >= 0):
        raise ValueError(f"'seconds' must be a number >= 0; got {seconds!r}")
    if not isinstance(raw["details"], dict):
        raise ValueError(f"'details' must be an object; got {type(raw['details']).__name__}")
    output = CheckOutput(metrics=metrics_from_json(raw["metrics"]),
                         findings=list(findings_from_json(raw["findings"])),
                         plots=list(plots_from_json(raw["plots"])), details=raw["details"],
                         galleries=list(galleries_from_json(raw["galleries"])))
    return output, float(seconds)
