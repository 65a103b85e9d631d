"""In-memory data sets with named splits, validation, and the CLI's data spec.

A ``Dataset`` (defined in :mod:`assay.core.dataset`) is one split: inputs ``x`` (float32,
``[N, C, H, W]`` images in their natural range or ``[N, D]`` tabular rows), labels ``y``
(int64, ``[N]``), and optional named sensitive attributes (int64 codes, ``[N]``).
``load_data(spec)`` reads a spec ``NAME[:SPLIT][:N]`` (``mnist:test:1000``) or a path to an
``.npz`` or ``.csv`` file (tabular rows, see :mod:`assay.core.tabular`).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence
from pathlib import Path

from ..errors import AssayValueError
from . import loaders, tabular
from .dataset import BOUNDS_TOLERANCE, Dataset, outside_bounds, validate_arrays
from .tabular import TabularSchema

__all__ = ["BOUNDS_TOLERANCE", "Dataset", "TabularSchema", "check_data_spec", "data_dir",
           "load_data", "outside_bounds", "parse_spec", "select_attributes", "validate_arrays"]


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
    for suffix in (".npz", ".csv"):
        if suffix not in spec:
            continue
        path, _, tail = spec.rpartition(suffix)  # as npz_path
        if tail and not tail.startswith(":"):
            raise AssayValueError(f"Data spec {spec!r}: a {suffix} path may be followed only "
                                  "by ':N'.")
        n = parse_spec("file::" + tail[1:])[2] if tail else None
        return None, path + suffix, "", n
    if os.path.sep in spec:
        raise AssayValueError(f"Data spec {spec!r} looks like a path, but only .npz files "
                              "(arrays x, y and optional group) and .csv files are read.")
    name, split, n = parse_spec(spec)
    return name, "", split or default_split, n


def check_data_spec(spec: str, *, data_root: str | os.PathLike | None = None,
                    default_split: str = "test", files: bool = True, target: str | None = None,
                    sensitive: Sequence[str] | None = None,
                    schema: TabularSchema | None = None) -> None:
    """Raise what :func:`load_data` would for a malformed spec, an unknown name or split,
    a missing file, or (for a CSV, whose header line alone is read) a missing target or
    sensitive column, without reading the data (for plans, before any work).
    ``files=False`` leaves out the files under the data directory (an .npz or .csv path is
    always checked): for a plan read before the data directory is known."""
    name, path, split, _ = _resolve_spec(spec, default_split)
    _check_tabular_options(name, path, target, schema)
    if path.endswith(".csv"):
        tabular.check_csv_spec(path, target=target, sensitive=sensitive, schema=schema)
    elif name is None:
        loaders.check_npz_file(Path(path))
    elif files:
        loaders.check_available(name, split, data_dir(data_root))
    else:
        loaders.check_name(name, split)


def load_data(spec: str, *, data_root: str | os.PathLike | None = None,
              default_split: str = "test", target: str | None = None,
              sensitive: Sequence[str] | None = None,
              schema: TabularSchema | None = None) -> Dataset:
    """Load the data described by ``spec``.

    ``spec`` is ``NAME[:SPLIT][:N]`` with NAME one of :data:`assay.core.loaders.LOADERS`
    (``digits``, ``mnist``, ``fashion-mnist``, ``cifar10``, and the tabular ``adult``,
    ``german``, ``compas``), SPLIT ``train`` or ``test`` (default ``test``) and N the
    number of leading samples to keep; or a path to an ``.npz`` or ``.csv`` file
    (optionally followed by ``:N``; a ``Path`` is taken as a path). Real data sets are
    read from ``data_root`` or ``$ASSAY_DATA_DIR``, laid out as
    ``mnist/t10k-images-idx3-ubyte.gz``.

    Tabular data: ``target`` names a CSV's label column (required unless ``schema`` gives
    it); ``sensitive`` the sensitive attributes to keep (a CSV's columns; for a named set or
    an .npz, a choice among those it has; default: a named set's own, an .npz's every
    ``group_<name>``, none of a CSV's); ``schema`` (e.g. the model file's,
    :func:`assay.core.model_io.schema_of_model_file`) fixes the coding of a CSV or named
    tabular set, which is otherwise fitted on the CSV itself or the set's train split.
    """
    name, path, split, n = _resolve_spec(spec, default_split)
    _check_tabular_options(name, path, target, schema)
    if path.endswith(".csv"):
        return tabular.load_csv(path, target=target, sensitive=sensitive, schema=schema,
                                limit=n)
    if name in loaders.TABULAR:
        return loaders.load_tabular(name, split, data_dir(data_root), sensitive=sensitive,
                                    schema=schema).subset(n)
    if name is None:
        data = loaders.load_npz(path)
    else:
        data = loaders.load_named(name, split, data_dir(data_root))
    return select_attributes(data, sensitive).subset(n)


def _check_tabular_options(name: str | None, path: str, target: str | None,
                           schema: TabularSchema | None) -> None:
    """Refuse a target or a tabular schema for data that is not tabular, and a named set's
    target other than its own."""
    shown = path or name
    if name in loaders.TABULAR:
        own = loaders.TABULAR[name].target
        if target is not None and target != own:
            raise AssayValueError(f"{name}'s target is {own!r}; drop --target {target} (it "
                                  "names the label column of a CSV file).")
        return
    if path.endswith(".csv"):
        return
    if target is not None:
        raise AssayValueError(f"{shown}: --target {target} names the label column of a CSV "
                              "file; drop it for this data.")
    if schema is not None:
        raise AssayValueError(f"{shown}: the model reads tabular rows coded by its schema "
                              f"(columns {', '.join(schema.feature_names[:8])}, ...), but this "
                              "data is not tabular. Fix: give a CSV file with those columns, "
                              "or the named tabular set the model was trained on.")


def select_attributes(data: Dataset, names: Sequence[str] | None) -> Dataset:
    """``data`` with only the sensitive attributes ``names`` (all when None); an unknown
    name is refused, listing those the data has."""
    if names is None:
        return data
    chosen = {name: data.attribute(name)[0] for name in names}
    return dataclasses.replace(
        data, group=None, attributes=chosen, _sha256=[],
        attribute_values={k: v for k, v in data.attribute_values.items() if k in chosen})
