"""Tabular data: CSV files read as untrusted input, their encoding, and the encoder module
that carries the encoding inside the model.

A tabular split is held as *raw rows*: ``Dataset.x`` is float32 ``[N, D]`` with one column
per feature, the numeric value itself or the categorical code (``i`` stands for
``vocabulary[i]``; a category not seen in training is ``-1``). The model is audited on
these rows; one-hot coding and standardisation happen inside the network, in
:class:`TabularEncoder`, so that attacks, explanations and the report all speak in the
data's own units. How the rows were coded is a :class:`TabularSchema`, fitted on the
training split only (vocabularies, means and standard deviations), saved with the model
(:func:`assay.core.model_io.save_network` writes it into the file) and used again to code
evaluation data, so that train and test rows get the same codes.

Choices, each documented where it is made:

- Every cell is stripped of surrounding spaces; blank lines are skipped.
- A column is numeric when every non-empty cell is a number, else categorical. A numeric
  column with empty, NaN or infinite cells is refused (drop or impute them); a column read
  as categorical although at least 90% of its cells are numbers is warned about, since a
  stray "?" then turns a number into a category.
- Categories are ordered by :func:`value_order` (numbers by value, then text), so the
  codes do not depend on the order of the rows. An empty categorical cell is a category
  of its own (``""``), like Adult's ``"?"``.
- A numeric column's mean and standard deviation are the training split's (population
  std, as scikit-learn's ``StandardScaler``); a constant column gets std 1.
- A sensitive attribute is a column's values as codes, or a numeric column cut at a
  threshold (German credit's age > 25). A numeric sensitive column with more than
  :data:`MAX_SENSITIVE_VALUES` distinct values is refused: bin it into a new column.
  A value of a sensitive attribute not seen in training gets a new code after the known
  ones (and a warning), so the training codes keep their meaning.
- The target's classes are its distinct values (or a data set's declared order); a
  target with a single class is refused when the schema is fitted: a classifier audit
  needs two classes.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor, nn

from ..errors import AssayValueError, AssayWarning
from .dataset import ATTRIBUTE_NAME, Dataset

log = logging.getLogger(__name__)

ColumnKind = Literal["numeric", "categorical"]
SCHEMA_FORMAT = 1
#: The most distinct values a numeric column may have to serve as a sensitive attribute.
MAX_SENSITIVE_VALUES = 20
# Caps on what an untrusted schema may declare (a file's metadata must not allocate GBs).
MAX_COLUMNS = 10_000
MAX_CATEGORIES = 1_000_000

_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NOT_FINITE = {"nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity",
               "-infinity"}


class UnseenCategoryWarning(AssayWarning):
    """Evaluation rows hold categories that the training split did not have: they are
    coded -1 (an all-zero one-hot inside the model), so the model sees "none of the known
    categories" there. Retrain on data that covers them, or drop those rows."""


def is_number(text: str) -> bool:
    """Whether a (stripped) cell is a finite decimal number (no ``1_000``, no NaN)."""
    return _NUMBER.fullmatch(text) is not None


def _is_missing_number(text: str) -> bool:
    return text == "" or text.lower() in _NOT_FINITE


def value_order(value: str) -> tuple[int, float, str]:
    """Sort key of category, class and attribute values: numbers by value, then text."""
    return (0, float(value), value) if is_number(value) else (1, 0.0, value)


def _rows(count: int) -> str:
    return f"{count} row" if count == 1 else f"{count} rows"


def _few(items: Sequence[Any], count: int = 5) -> str:
    shown = ", ".join(str(i) for i in items[:count])
    return shown + (f" and {len(items) - count} more" if len(items) > count else "")


# ----------------------------------------------------------------------------- the schema


@dataclass(frozen=True)
class Column:
    """One feature column: numeric (``mean``, ``std`` of the training split) or
    categorical (``vocabulary``: code i stands for ``vocabulary[i]``)."""

    name: str
    kind: ColumnKind
    mean: float = 0.0
    std: float = 1.0
    vocabulary: tuple[str, ...] = ()


@dataclass(frozen=True)
class Sensitive:
    """A sensitive attribute: the codes of ``column``'s values (code i is ``values[i]``),
    or, with ``threshold``, the numeric column cut there: ``values`` are then
    ``("<=t", ">t")`` and the code is ``value > threshold``."""

    name: str
    column: str
    values: tuple[str, ...]
    threshold: float | None = None


@dataclass(frozen=True)
class TabularSchema:
    """How the raw rows of a tabular data set are coded, fitted on its training split.

    ``features`` are the ordered feature columns (``Dataset.x[:, j]`` is ``features[j]``),
    ``target`` the label column and ``classes`` its values (class i is ``classes[i]``),
    ``sensitive`` the sensitive attributes kept beside the rows. JSON-able through
    :meth:`to_dict` / :meth:`from_dict` (which validates, as for any untrusted input).
    """

    features: tuple[Column, ...]
    target: str
    classes: tuple[str, ...]
    sensitive: tuple[Sensitive, ...] = ()
    where: str = field(default="tabular schema", compare=False, repr=False)

    def __post_init__(self) -> None:
        _validate_schema(self)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.features)

    @property
    def sensitive_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.sensitive)

    @property
    def encoded_width(self) -> int:
        """The width of :class:`TabularEncoder`'s output: numerics, then one-hots."""
        return sum(1 if c.kind == "numeric" else len(c.vocabulary) for c in self.features)

    def encoded_names(self) -> tuple[str, ...]:
        """The name of each encoded column: ``age``, then ``sex=Female``, ..."""
        numeric = [c.name for c in self.features if c.kind == "numeric"]
        onehot = [f"{c.name}={v}" for c in self.features if c.kind == "categorical"
                  for v in c.vocabulary]
        return tuple(numeric + onehot)

    def to_dict(self) -> dict[str, Any]:
        return {"format": SCHEMA_FORMAT,
                "features": [{"name": c.name, "kind": c.kind, "mean": c.mean, "std": c.std}
                             if c.kind == "numeric" else
                             {"name": c.name, "kind": c.kind, "vocabulary": list(c.vocabulary)}
                             for c in self.features],
                "target": self.target, "classes": list(self.classes),
                "sensitive": [{"name": s.name, "column": s.column, "values": list(s.values),
                               "threshold": s.threshold} for s in self.sensitive]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_dict(cls, data: Any, *, where: str = "tabular schema") -> TabularSchema:
        """The schema ``data`` describes; raises ``AssayValueError`` naming ``where`` and the
        field for anything that is not exactly what :meth:`to_dict` writes."""
        top = _fields(data, where, required={"format", "features", "target", "classes"},
                      optional={"sensitive"})
        if top["format"] != SCHEMA_FORMAT or isinstance(top["format"], bool):
            raise AssayValueError(f"{where}: field 'format' must be {SCHEMA_FORMAT}; got "
                                  f"{top['format']!r}. Fix: save the model with this assay.")
        features = []
        for index, item in enumerate(_list(top["features"], f"{where}: 'features'")):
            at = f"{where}: 'features[{index}]'"
            kind = item.get("kind") if isinstance(item, dict) else None
            if kind == "numeric":
                entry = _fields(item, at, required={"name", "kind", "mean", "std"})
                features.append(Column(_text(entry["name"], f"{at}.name"), "numeric",
                                       mean=_number(entry["mean"], f"{at}.mean"),
                                       std=_number(entry["std"], f"{at}.std")))
            elif kind == "categorical":
                entry = _fields(item, at, required={"name", "kind", "vocabulary"})
                features.append(Column(_text(entry["name"], f"{at}.name"), "categorical",
                                       vocabulary=_texts(entry["vocabulary"],
                                                         f"{at}.vocabulary")))
            else:
                raise AssayValueError(f"{at}: field 'kind' must be 'numeric' or "
                                      f"'categorical'; got {kind!r}.")
        sensitive = []
        for index, item in enumerate(_list(top.get("sensitive", []), f"{where}: 'sensitive'")):
            at = f"{where}: 'sensitive[{index}]'"
            entry = _fields(item, at, required={"name", "column", "values", "threshold"})
            threshold = entry["threshold"]
            sensitive.append(Sensitive(
                _text(entry["name"], f"{at}.name"), _text(entry["column"], f"{at}.column"),
                _texts(entry["values"], f"{at}.values"),
                None if threshold is None else _number(threshold, f"{at}.threshold")))
        return cls(tuple(features), _text(top["target"], f"{where}: 'target'"),
                   _texts(top["classes"], f"{where}: 'classes'"), tuple(sensitive),
                   where=where)

    @classmethod
    def from_json(cls, text: str, *, where: str = "tabular schema") -> TabularSchema:
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as err:
            raise AssayValueError(f"{where}: not valid JSON ({err}).") from err
        return cls.from_dict(data, where=where)


def _fields(data: Any, where: str, *, required: set[str],
            optional: frozenset[str] | set[str] = frozenset()) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise AssayValueError(f"{where} must be a JSON object; got {type(data).__name__}.")
    missing = sorted(required - set(data))
    unknown = sorted(set(data) - required - set(optional))
    if missing or unknown:
        raise AssayValueError(f"{where}: missing fields {missing}, unknown fields {unknown}. "
                              "Fix: write the schema with TabularSchema.to_dict().")
    return data


def _list(value: Any, where: str) -> list:
    if not isinstance(value, list) or len(value) > MAX_CATEGORIES:
        raise AssayValueError(f"{where} must be a list (of at most {MAX_CATEGORIES:,} items); "
                              f"got {type(value).__name__}.")
    return value


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or len(value) > 10_000:
        raise AssayValueError(f"{where} must be a string; got {type(value).__name__}.")
    return value


def _texts(value: Any, where: str) -> tuple[str, ...]:
    return tuple(_text(v, f"{where}[{i}]") for i, v in enumerate(_list(value, where)))


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AssayValueError(f"{where} must be a finite number; got {value!r}.")
    return float(value)


def _validate_schema(schema: TabularSchema) -> None:
    where = schema.where
    if not schema.features or len(schema.features) > MAX_COLUMNS:
        raise AssayValueError(f"{where}: needs 1 to {MAX_COLUMNS} feature columns; got "
                              f"{len(schema.features)}.")
    names = [c.name for c in schema.features]
    repeated = sorted(n for n, k in Counter(names).items() if k > 1)
    if repeated:
        raise AssayValueError(f"{where}: feature columns {repeated} appear more than once.")
    if schema.target in names:
        raise AssayValueError(f"{where}: the target column {schema.target!r} is also a "
                              "feature; a model must not read its own label.")
    total = 0
    for column in schema.features:
        if column.kind == "numeric":
            if not (math.isfinite(column.mean) and math.isfinite(column.std)
                    and column.std > 0):
                raise AssayValueError(f"{where}: numeric column {column.name!r} needs a finite "
                                      f"mean and a positive std; got {column.mean}, "
                                      f"{column.std}.")
        elif column.kind == "categorical":
            if not column.vocabulary or len(set(column.vocabulary)) != len(column.vocabulary):
                raise AssayValueError(f"{where}: categorical column {column.name!r} needs a "
                                      "non-empty vocabulary without repeats.")
            total += len(column.vocabulary)
        else:
            raise AssayValueError(f"{where}: column {column.name!r} has kind "
                                  f"{column.kind!r}; expected 'numeric' or 'categorical'.")
    if total > MAX_CATEGORIES:
        raise AssayValueError(f"{where}: {total:,} categories in all, more than "
                              f"{MAX_CATEGORIES:,}.")
    if len(schema.classes) < 2 or len(set(schema.classes)) != len(schema.classes):
        raise AssayValueError(f"{where}: the target {schema.target!r} needs at least two "
                              f"distinct classes; got {list(schema.classes)}.")
    seen: set[str] = set()
    for entry in schema.sensitive:
        if not ATTRIBUTE_NAME.fullmatch(entry.name) or entry.name in seen:
            raise AssayValueError(f"{where}: sensitive attribute name {entry.name!r} must be "
                                  "unique and made of letters, digits, '_', '.' or '-'.")
        seen.add(entry.name)
        if not entry.values or len(set(entry.values)) != len(entry.values):
            raise AssayValueError(f"{where}: sensitive attribute {entry.name!r} needs values "
                                  "without repeats.")
        if entry.threshold is not None and entry.values != threshold_values(entry.threshold):
            raise AssayValueError(f"{where}: sensitive attribute {entry.name!r} cut at "
                                  f"{entry.threshold:g} must have values "
                                  f"{list(threshold_values(entry.threshold))}.")


def threshold_values(threshold: float) -> tuple[str, str]:
    """The two values of an attribute cut at ``threshold``: ``("<=25", ">25")``."""
    return (f"<={threshold:g}", f">{threshold:g}")


# ----------------------------------------------------------------------------- the encoder


class TabularEncoder(nn.Module):
    """Raw rows ``[N, D]`` -> the encoded rows ``[N, schema.encoded_width]`` a network
    reads: the numeric columns standardised with the training split's mean and std, then
    each categorical column one-hot (code i -> slot i; -1, any other code outside the
    vocabulary, and a fraction rounded to one are all-zero). Mean, std and the slot
    layout are buffers, so state dicts (mean, std) and TorchScript traces carry them;
    categorical inputs get no gradient (a code is not a continuous quantity).
    """

    if TYPE_CHECKING:  # the buffers, for mypy; TorchScript cannot read class annotations
        mean: Tensor
        std: Tensor
        numeric_index: Tensor
        category_column: Tensor
        category_code: Tensor

    def __init__(self, schema: TabularSchema) -> None:
        super().__init__()
        if not isinstance(schema, TabularSchema):
            raise AssayValueError(f"The 'schema' parameter of TabularEncoder must be a "
                                  f"TabularSchema. Got {type(schema).__name__} instead.")
        self.schema = schema
        numeric = [j for j, c in enumerate(schema.features) if c.kind == "numeric"]
        slots = [(j, code) for j, c in enumerate(schema.features) if c.kind == "categorical"
                 for code in range(len(c.vocabulary))]
        self.register_buffer("mean", torch.tensor(
            [schema.features[j].mean for j in numeric], dtype=torch.float32))
        self.register_buffer("std", torch.tensor(
            [schema.features[j].std for j in numeric], dtype=torch.float32))
        self.register_buffer("numeric_index", torch.tensor(numeric, dtype=torch.int64),
                             persistent=False)
        self.register_buffer("category_column", torch.tensor([j for j, _ in slots],
                                                             dtype=torch.int64),
                             persistent=False)
        self.register_buffer("category_code", torch.tensor([c for _, c in slots],
                                                           dtype=torch.float32),
                             persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        numeric = (x[:, self.numeric_index] - self.mean) / self.std
        onehot = (torch.round(x[:, self.category_column]) == self.category_code).to(x.dtype)
        return torch.cat([numeric, onehot], dim=1)

    def extra_repr(self) -> str:
        return f"features={len(self.schema.features)}, encoded={self.schema.encoded_width}"


def encoder_of(net: nn.Module) -> TabularEncoder | None:
    """The :class:`TabularEncoder` inside ``net``, or None; raises for two different ones."""
    found = [m for m in net.modules() if isinstance(m, TabularEncoder)]
    if len({m.schema.to_json() for m in found}) > 1:
        raise AssayValueError("The network holds TabularEncoders with different schemas; "
                              "assay saves one schema per model file.")
    return found[0] if found else None


def check_encoder_matches(net: nn.Module, where: str) -> None:
    """Refuse a network whose encoder's mean and std differ from its schema's (a file
    whose metadata and weights disagree)."""
    encoder = encoder_of(net)
    if encoder is None:
        return
    fresh = TabularEncoder(encoder.schema)
    for name in ("mean", "std"):
        if not torch.allclose(getattr(encoder, name).cpu().float(), getattr(fresh, name),
                              rtol=1e-6, atol=0.0):
            raise AssayValueError(f"{where}: the encoder's {name} in the weights differs from "
                                  "the tabular schema in the file's metadata. Fix: save the "
                                  "model again with assay.core.model_io.save_network.")


# ----------------------------------------------------------------------------- raw tables


@dataclass(frozen=True)
class Table:
    """A CSV file's cells as stripped strings, by column; ``lines[i]`` is the file line
    on which row i ends (for messages)."""

    columns: dict[str, list[str]]
    lines: list[int]
    source: str

    def __len__(self) -> int:
        return len(self.lines)

    def column(self, name: str, what: str = "column") -> list[str]:
        if name not in self.columns:
            raise AssayValueError(f"{self.source}: no {what} {name!r}; its columns are: "
                                  f"{_few(list(self.columns), 30)}.")
        return self.columns[name]

    def take(self, index: Sequence[int]) -> Table:
        return Table({k: [v[i] for i in index] for k, v in self.columns.items()},
                     [self.lines[i] for i in index], self.source)

    def where(self, keep: Sequence[bool]) -> Table:
        return self.take([i for i, k in enumerate(keep) if k])

    def with_column(self, name: str, values: list[str]) -> Table:
        return Table({**self.columns, name: values}, self.lines, self.source)


def _open_text(path: Path):
    try:
        return open(path, newline="", encoding="utf-8-sig")
    except OSError as err:
        raise AssayValueError(f"{path}: cannot open the CSV file ({err}).") from err


def read_header(path: str | Path) -> list[str]:
    """The stripped column names of a CSV file's first line (the rest is not read)."""
    path = Path(path)
    if not path.is_file():
        raise AssayValueError(f"{path}: no such CSV file.")
    with _open_text(path) as handle:
        try:
            header = next(csv.reader(handle), None)
        except (csv.Error, UnicodeDecodeError) as err:
            raise AssayValueError(f"{path}: line 1 is not readable CSV ({err}). Fix: save the "
                                  "file as UTF-8 CSV.") from err
    if not header:
        raise AssayValueError(f"{path}: the CSV file is empty; expected a header line of "
                              "column names, then one row per sample.")
    return _check_header([h.strip() for h in header], path, unique=True)


def _check_header(header: list[str], path: Path, *, unique: bool) -> list[str]:
    if any(not name for name in header):
        raise AssayValueError(f"{path}: the header line has an empty column name (column "
                              f"{header.index('') + 1}). Fix: name every column.")
    repeated = sorted(n for n, k in Counter(header).items() if k > 1)
    if unique and repeated:
        raise AssayValueError(f"{path}: the header names columns {repeated} more than once. "
                              "Fix: give each column its own name.")
    return header


def read_csv(path: str | Path, *, names: Sequence[str] | None = None, limit: int | None = None,
             skip_prefix: str | None = None, unique: bool = True) -> Table:
    """Read a CSV file as untrusted text: a header line of column names (or ``names``
    for a file without one), then rows with as many cells. ``limit`` keeps the first rows;
    a line starting with ``skip_prefix`` is skipped (Adult's test file opens with one);
    ``unique=False`` keeps the first of repeated column names (COMPAS repeats two).

    Raises ``AssayValueError`` for a missing, empty, undecodable or malformed file and
    for rows whose cell count differs from the header's (naming their lines)."""
    path = Path(path)
    if not path.is_file():
        raise AssayValueError(f"{path}: no such CSV file.")
    rows: list[list[str]] = []
    lines: list[int] = []
    ragged: list[int] = []
    header: list[str] | None = None if names is None else list(names)
    with _open_text(path) as handle:
        reader = csv.reader(handle)
        try:
            for record in reader:
                if not record or (skip_prefix and record[0].startswith(skip_prefix)):
                    continue
                cells = [cell.strip() for cell in record]
                if header is None:
                    header = _check_header(cells, path, unique=unique)
                    continue
                if len(cells) != len(header):
                    if len(cells) == 1 and not cells[0]:
                        continue  # a line of spaces is a blank line
                    ragged.append(reader.line_num)
                    continue
                rows.append(cells)
                lines.append(reader.line_num)
                if limit is not None and len(rows) >= limit:
                    break
        except (csv.Error, UnicodeDecodeError) as err:
            raise AssayValueError(f"{path}: line {reader.line_num + 1} is not readable CSV "
                                  f"({err}). Fix: save the file as UTF-8 CSV.") from err
    if header is None:
        raise AssayValueError(f"{path}: the CSV file is empty; expected a header line of "
                              "column names, then one row per sample.")
    if ragged:
        raise AssayValueError(f"{path}: {_rows(len(ragged))} do not have {len(header)} cells, "
                              f"one per header column (lines {_few(ragged)}). Fix: give every "
                              "row one cell per column (quote cells that hold commas).")
    if not rows:
        raise AssayValueError(f"{path}: the CSV file has a header but no rows.")
    first: dict[str, int] = {}
    for index, name in enumerate(header):
        first.setdefault(name, index)
    columns = {name: [row[index] for row in rows] for name, index in first.items()}
    return Table(columns, lines, str(path))


# ----------------------------------------------------------------------------- fitting


def infer_kind(table: Table, name: str) -> ColumnKind:
    """``numeric`` when every non-empty cell of column ``name`` is a number (NaN and
    infinities count as missing numbers, refused when coding), else ``categorical``
    (warned about when at least 90% of the cells are numbers)."""
    values = table.column(name)
    present = [v for v in values if not _is_missing_number(v)]
    numbers = sum(map(is_number, present))
    if present and numbers == len(present):
        return "numeric"
    if numbers >= 0.9 * len(values):
        odd = Counter(v for v in values if not is_number(v)).most_common(3)
        log.warning("%s: column %r is read as categorical although %d of its %d cells are "
                    "numbers (others: %s); clean or impute those cells to read it as numeric",
                    table.source, name, numbers, len(values),
                    ", ".join(f"{v!r} x{k}" for v, k in odd))
    return "categorical"


def numeric_values(table: Table, name: str) -> list[float]:
    """Column ``name`` as floats; raises naming the column, the count and lines of empty,
    NaN, infinite or non-numeric cells."""
    values = table.column(name)
    bad = [i for i, v in enumerate(values) if not is_number(v)]
    if bad:
        kinds = Counter("empty" if values[i] == "" else repr(values[i]) for i in bad)
        shown = ", ".join(f"{k} x{n}" for k, n in kinds.most_common(3))
        raise AssayValueError(
            f"{table.source}: numeric column {name!r} has {_rows(len(bad))} without a finite "
            f"number ({shown}; lines {_few([table.lines[i] for i in bad])}). Fix: drop those "
            "rows or impute the values.")
    return [float(v) for v in values]


def fit_sensitive(table: Table, entry: str | Sensitive) -> Sensitive:
    if isinstance(entry, Sensitive):
        if entry.threshold is not None:
            numeric_values(table, entry.column)  # refuse missing numbers now
        return entry
    values = table.column(entry, "sensitive column")
    if not ATTRIBUTE_NAME.fullmatch(entry):
        raise AssayValueError(f"{table.source}: sensitive column {entry!r} needs a name of "
                              "letters, digits, '_', '.' or '-'. Fix: rename the column.")
    distinct = sorted(set(values), key=value_order)
    if len(distinct) > MAX_SENSITIVE_VALUES and all(map(is_number, distinct)):
        raise AssayValueError(
            f"{table.source}: sensitive column {entry!r} is numeric with {len(distinct)} "
            f"distinct values (more than {MAX_SENSITIVE_VALUES}): groups of one value each "
            "are too small to compare. Fix: bin it into a new column (e.g. age_group with "
            "values <=25 and >25) and name that one.")
    return Sensitive(entry, entry, tuple(distinct))


def fit_schema(table: Table, *, target: str, features: Sequence[str] | None = None,
               kinds: Mapping[str, ColumnKind] | None = None,
               classes: Sequence[str] | None = None,
               sensitive: Sequence[str | Sensitive] = ()) -> TabularSchema:
    """The schema of ``table`` (the training split): ``features`` (default: every column
    but the target, sensitive columns included) of the given ``kinds`` (default:
    :func:`infer_kind`), the target's ``classes`` (default: its distinct values in
    :func:`value_order`), and the ``sensitive`` attributes (column names, or
    :class:`Sensitive` entries such as a cut at a threshold)."""
    labels = table.column(target, "target column")
    if classes is None:
        classes = sorted(set(labels), key=value_order)
        if "" in classes:
            _refuse_empty_target(table, target, labels)
        if len(classes) < 2:
            raise AssayValueError(
                f"{table.source}: the target column {target!r} holds a single class "
                f"({classes[0]!r}) in {len(labels)} rows; a classifier audit needs at least "
                "two. Fix: use data with both classes (or another --target).")
    names = [n for n in table.columns if n != target] if features is None else list(features)
    if target in names:
        raise AssayValueError(f"{table.source}: the target column {target!r} cannot also be "
                              "a feature.")
    columns = []
    for name in names:
        kind = (kinds or {}).get(name) or infer_kind(table, name)
        if kind == "numeric":
            values = torch.tensor(numeric_values(table, name), dtype=torch.float64)
            std = float(values.std(unbiased=False))
            columns.append(Column(name, "numeric", mean=float(values.mean()),
                                  std=std if std > 0 else 1.0))
        else:
            vocabulary = tuple(sorted(set(table.column(name)), key=value_order))
            columns.append(Column(name, "categorical", vocabulary=vocabulary))
    return TabularSchema(tuple(columns), target, tuple(classes),
                         tuple(fit_sensitive(table, entry) for entry in sensitive),
                         where=f"{table.source}: schema")


def _refuse_empty_target(table: Table, target: str, labels: list[str]) -> None:
    empty = [table.lines[i] for i, v in enumerate(labels) if v == ""]
    raise AssayValueError(f"{table.source}: the target column {target!r} is empty in "
                          f"{_rows(len(empty))} (lines {_few(empty)}). Fix: drop those rows.")


# ----------------------------------------------------------------------------- coding


def encode(table: Table, schema: TabularSchema, *, name: str, split: str,
           sensitive: Iterable[str] | None = None) -> Dataset:
    """The split of ``table`` coded by ``schema``: raw rows (numeric values, categorical
    codes, -1 for a category the schema does not know, with an
    :class:`UnseenCategoryWarning`), class indices, and the sensitive attributes named in
    ``sensitive`` (default: the schema's; a name the schema lacks is fitted on this table
    as a column)."""
    where = f"{name}:{split}"
    columns = []
    unseen: list[str] = []
    for column in schema.features:
        if column.kind == "numeric":
            columns.append(torch.tensor(numeric_values(table, column.name), dtype=torch.float64))
            continue
        index = {v: i for i, v in enumerate(column.vocabulary)}
        values = table.column(column.name)
        codes = [index.get(v, -1) for v in values]
        missing = Counter(v for v, c in zip(values, codes, strict=True) if c < 0)
        if missing:
            shown = ", ".join(f"{v!r} x{k}" for v, k in missing.most_common(3))
            unseen.append(f"{column.name!r} in {_rows(sum(missing.values()))} ({shown})")
        columns.append(torch.tensor(codes, dtype=torch.float64))
    if unseen:
        warnings.warn(f"{where}: categories not seen in training, coded -1 (no category of "
                      f"the model's): {'; '.join(unseen)}. Retrain on data that covers them, "
                      "or drop those rows.", UnseenCategoryWarning, stacklevel=2)
    x = torch.stack(columns, dim=1).to(torch.float32)
    labels = table.column(schema.target, "target column")
    class_index = {c: i for i, c in enumerate(schema.classes)}
    bad = [i for i, v in enumerate(labels) if v not in class_index]
    if bad:
        shown = ", ".join(repr(v) for v in sorted({labels[i] for i in bad})[:3])
        raise AssayValueError(
            f"{table.source}: {_rows(len(bad))} have a target {schema.target!r} that is none of "
            f"the classes {list(schema.classes)} ({shown}; lines "
            f"{_few([table.lines[i] for i in bad])}). Fix: drop those rows, or use the data the "
            "model was trained for.")
    y = torch.tensor([class_index[v] for v in labels], dtype=torch.int64)
    if len(set(y.tolist())) < 2:
        log.warning("%s: only class %r occurs in the %d rows", where,
                    schema.classes[int(y[0])], len(y))
    known = {s.name: s for s in schema.sensitive}
    attributes, attribute_values = {}, {}
    for attribute in (schema.sensitive_names if sensitive is None else sensitive):
        entry = known.get(attribute) or fit_sensitive(table, attribute)
        attributes[entry.name], attribute_values[entry.name] = attribute_codes(
            table, entry, where)
    return Dataset(x, y, name, split, schema.classes, source=table.source,
                   attributes=attributes, attribute_values=attribute_values, schema=schema)


def attribute_codes(table: Table, entry: Sensitive,
                     where: str) -> tuple[Tensor, tuple[str, ...]]:
    """The codes of a sensitive attribute; values the entry does not know get new codes
    after the known ones (warned), so the known codes keep their meaning."""
    if entry.threshold is not None:
        threshold = entry.threshold
        codes = [int(v > threshold) for v in numeric_values(table, entry.column)]
        return torch.tensor(codes, dtype=torch.int64), entry.values
    values = table.column(entry.column, "sensitive column")
    extra = sorted(set(values) - set(entry.values), key=value_order)
    if extra:
        warnings.warn(f"{where}: sensitive attribute {entry.name!r} has values not seen in "
                      f"training ({_few(extra)}); they get codes of their own.",
                      AssayWarning, stacklevel=3)
    every = entry.values + tuple(extra)
    index = {v: i for i, v in enumerate(every)}
    return torch.tensor([index[v] for v in values], dtype=torch.int64), every


def load_csv(path: str | Path, *, target: str | None = None,
             sensitive: Sequence[str] | None = None, schema: TabularSchema | None = None,
             limit: int | None = None) -> Dataset:
    """A CSV file as a tabular split named after the file (split ``"file"``): coded by
    ``schema`` (e.g. the model file's), else by a schema fitted on the file itself, with
    ``target`` the label column (required without a schema; with one it must be the
    schema's) and ``sensitive`` the columns kept as sensitive attributes."""
    path = Path(path)
    if schema is not None and target is not None and target != schema.target:
        raise AssayValueError(f"{path}: the target {target!r} is not the model's target "
                              f"{schema.target!r} (from its tabular schema). Fix: pass "
                              f"--target {schema.target} or leave --target out.")
    if schema is None and target is None:
        raise AssayValueError(f"{path}: a CSV needs its target column: pass --target COLUMN "
                              "(load_data(..., target=...)).")
    table = read_csv(path, limit=limit)
    if schema is None:
        schema = fit_schema(table, target=target or "", sensitive=list(sensitive or ()))
    else:
        table.column(schema.target, "target column")
        missing = [c for c in schema.feature_names if c not in table.columns]
        if missing:
            raise AssayValueError(f"{path}: the model's tabular schema needs columns "
                                  f"{_few(missing)}, which the file lacks. Fix: give the file "
                                  "every column the model was trained on.")
    return encode(table, schema, name=path.stem, split="file", sensitive=sensitive)


def check_csv_spec(path: str | Path, *, target: str | None = None,
                   sensitive: Sequence[str] | None = None,
                   schema: TabularSchema | None = None) -> None:
    """Raise what :func:`load_csv` would for a missing file, an empty header, a missing
    target or sensitive column, reading the header line only."""
    path = Path(path)
    header = read_header(path)
    target = target or (schema.target if schema is not None else None)
    if target is None:
        raise AssayValueError(f"{path}: a CSV needs its target column: pass --target COLUMN "
                              "(load_data(..., target=...)).")
    for name, what in [(target, "target column"),
                       *((s, "sensitive column") for s in (sensitive or ()))]:
        if name not in header:
            raise AssayValueError(f"{path}: no {what} {name!r}; its columns are: "
                                  f"{_few(header, 30)}.")


def value_range(*splits: Dataset | None) -> tuple[float, float]:
    """The bounds of tabular rows: the smallest and largest raw value over ``splits`` (None
    entries skipped), widened to a unit range when every value is the same."""
    present = [d for d in splits if d is not None]
    if not present:
        raise AssayValueError("value_range needs at least one data set.")
    low = min(float(d.x.min()) for d in present)
    high = max(float(d.x.max()) for d in present)
    return (low, high if high > low else low + 1.0)
