"""Paths checked before any work: a bad --out must not cost a finished check, and a small
JSON input (a trigger, a calibration) is read as untrusted, with a size cap."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from .errors import AssayValueError


def ensure_writable_dir(path: str | Path, flag: str) -> Path:
    """Create directory ``path`` (with its parents) and prove a file can be written in it.

    Raises ``AssayValueError`` naming ``flag`` when ``path`` is an existing file, lies
    under a file, or cannot be created or written (permissions, a read-only file system).
    The proof is a real temporary file, not ``os.access``, which answers yes to root even
    where writing fails (``/proc``, some mounts).
    """
    path = Path(path)
    fix = f"pass {flag} a directory you can write to (it is created if missing)"
    try:
        if path.exists() and not path.is_dir():
            raise AssayValueError(f"{flag} {path}: is a file, not a directory; {fix}.")
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            raise AssayValueError(f"{flag} {path}: {blocker} is a file, not a directory; {fix}.")
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        if err.filename:
            reason += f": {err.filename}"
        raise AssayValueError(f"{flag} {path}: cannot create it or write a file in it "
                              f"({reason}); {fix}.") from err
    return path


def ensure_writable_file(path: str | Path, flag: str) -> Path:
    """Check that file ``path`` can be written: not a directory, its folder writable
    (created if missing). Raises ``AssayValueError`` naming ``flag``."""
    path = Path(path)
    if path.is_dir():
        raise AssayValueError(f"{flag} {path}: is a directory; pass {flag} a file path.")
    ensure_writable_dir(path.parent, flag)
    return path


def read_small_json(path: str | Path, *, where: str, limit: int, fix: str) -> Any:
    """The JSON value in file ``path``, read as untrusted: an unreadable file (``fix`` says
    what to give instead), one over ``limit`` bytes, or one that is not JSON is an
    ``AssayValueError`` starting with ``where`` (the file's description)."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(limit + 1)
    except OSError as err:
        raise AssayValueError(f"{where} cannot be read ({err.strerror or err}). Fix: {fix}."
                              ) from None
    if len(raw) > limit:
        raise AssayValueError(f"{where} is larger than {limit} bytes; it should be a small "
                              "JSON object.")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise AssayValueError(f"{where} is not JSON ({err}).") from None
