"""In-memory data sets with named splits, validation, and the CLI's data spec.

A ``Dataset`` (defined in :mod:`assay.core.dataset`) is one split: inputs ``x`` (float32,
``[N, C, H, W]`` images in their natural range or ``[N, D]`` tabular rows), labels ``y``
(int64, ``[N]``), and optional sensitive attributes ``group`` (int64, ``[N]``).
``load_data(spec)`` reads a spec ``NAME[:SPLIT][:N]`` (``mnist:test:1000``) or a path to an
``.npz`` file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import AssayValueError
from . import loaders
from .dataset import BOUNDS_TOLERANCE, Dataset, outside_bounds, validate_arrays

__all__ = ["BOUNDS_TOLERANCE", "Dataset", "check_data_spec", "data_dir", "load_data",
           "outside_bounds", "parse_spec", "validate_arrays"]


def data_dir(explicit: str | os.PathLike | None = None) -> Path | None:
    """The data directory: ``explicit``, else ``$ASSAY_DATA_DIR``, else None."""
    chosen = explicit if explicit is not None else os.environ.get("ASSAY_DATA_DIR")
    return Path(chosen).expanduser() if chosen else None


def parse_spec(spec: str) -> tuple[str, str | None, int | None]:
    """Split ``NAME[:SPLIT][:N]`` into its parts; validation of each part is the loader's."""
    parts = spec.split(":")
    if not parts[0] or len(parts) > 3:
        raise AssayValueError(f"Data spec {spec!r} must look like NAME[:SPLIT][:N], e.g. "
                              "'mnist:test:1000', or be a path to an .npz file.")
    name = parts[0]
    split = parts[1] if len(parts) > 1 and parts[1] else None
    n = None
    if len(parts) == 3:
        # ASCII only: str.isdigit also accepts superscripts and other scripts' digits.
        if not re.fullmatch(r"[0-9]+", parts[2]) or int(parts[2]) == 0:
            raise AssayValueError(f"Data spec {spec!r}: N must be a positive integer; got "
                                  f"{parts[2]!r}.")
        n = int(parts[2])
    return name, split, n


def npz_path(spec: str) -> str | None:
    """The .npz file a data spec names ("sets/far.npz:100" -> "sets/far.npz"), or None
    for a named data set."""
    return spec.rpartition(".npz")[0] + ".npz" if ".npz" in spec else None


def _resolve_spec(spec: object, default_split: str) -> tuple[str | None, str, str, int | None]:
    """``(None, npz_path, "", n)`` or ``(name, "", split, n)`` for a data spec."""
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str):
        raise AssayValueError(f"The 'spec' parameter of load_data must be a data spec string "
                              f"such as 'mnist:test:1000' or a path to an .npz file. Got "
                              f"{spec!r} instead.")
    if ".npz" in spec:
        path, _, tail = spec.rpartition(".npz")  # as npz_path
        if tail and not tail.startswith(":"):
            raise AssayValueError(f"Data spec {spec!r}: an .npz path may be followed only "
                                  "by ':N'.")
        n = parse_spec("npz::" + tail[1:])[2] if tail else None
        return None, path + ".npz", "", n
    if os.path.sep in spec:
        raise AssayValueError(f"Data spec {spec!r} looks like a path, but only .npz files "
                              "are read (arrays x, y and optional group).")
    name, split, n = parse_spec(spec)
    return name, "", split or default_split, n


def check_data_spec(spec: str, *, data_root: str | os.PathLike | None = None,
                    default_split: str = "test", files: bool = True) -> None:
    """Raise what :func:`load_data` would for a malformed spec, an unknown name or split,
    or a missing file, without reading the data (for plans, before any work).
    ``files=False`` leaves out the files under the data directory (an .npz path is always
    checked): for a plan read before the data directory is known."""
    name, path, split, _ = _resolve_spec(spec, default_split)
    if name is None:
        loaders.check_npz_file(Path(path))
    elif files:
        loaders.check_available(name, split, data_dir(data_root))
    else:
        loaders.check_name(name, split)


def load_data(spec: str, *, data_root: str | os.PathLike | None = None,
              default_split: str = "test") -> Dataset:
    """Load the data described by ``spec``.

    ``spec`` is ``NAME[:SPLIT][:N]`` with NAME one of :data:`assay.core.loaders.LOADERS`
    (``digits``, ``mnist``, ``fashion-mnist``, ``cifar10``), SPLIT ``train`` or ``test``
    (default ``test``) and N the number of leading samples to keep; or a path to an
    ``.npz`` file (optionally followed by ``:N``; a ``Path`` is taken as a path). Real data
    sets are read from ``data_root`` or ``$ASSAY_DATA_DIR``, laid out as
    ``mnist/t10k-images-idx3-ubyte.gz``.
    """
    name, path, split, n = _resolve_spec(spec, default_split)
    if name is None:
        return loaders.load_npz(path).subset(n)
    return loaders.load_named(name, split, data_dir(data_root)).subset(n)
