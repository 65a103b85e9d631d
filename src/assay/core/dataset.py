"""The in-memory data set: one split as tensors, validated on construction.

A ``Dataset`` holds inputs ``x`` (float32, ``[N, C, H, W]`` images in their natural range
or ``[N, D]`` tabular rows), labels ``y`` (int64, ``[N]``), and optional named sensitive
attributes (int64 codes, ``[N]`` each; ``group`` is the name of a single unnamed one). The
loaders build it and :mod:`assay.core.data`
(whose ``load_data`` calls the loaders) re-exports it: the class lives apart so that the
loaders and ``load_data`` do not import each other.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .._params import check_float, check_int
from ..errors import AssayValueError
from .rng import seeded_generator

#: Slack allowed beyond a model's input bounds (float rounding of scaled pixels).
BOUNDS_TOLERANCE = 1e-6


@dataclass(frozen=True, eq=False)
class Dataset:
    """One split of a data set, held in memory as tensors.

    Parameters
    ----------
    x : Tensor [N, ...], float32
    y : Tensor [N], int64, values in ``0 .. num_classes - 1``
    name : str
        e.g. ``"mnist"``; ``split`` e.g. ``"test"``.
    classes : tuple of str
        Class names; its length is the class count.
    group : Tensor [N] int64 or None
        A single unnamed sensitive attribute; the same tensor as ``attributes["group"]``.
    attributes : mapping of str to Tensor [N] int64
        Named sensitive attributes (``"sex"``, ``"race"``), non-negative integer codes, for
        the fairness and privacy checks. Names are letters, digits, ``_`` and ``-``
        (``*`` joins names into intersectional groups, ``@`` and ``=`` appear in metric
        names).
    attribute_values : mapping of str to tuple of str
        The value each code stands for, per attribute (``("Female", "Male")``); an attribute
        without an entry is named by its codes.
    schema : object or None
        How the raw rows of a tabular split were encoded (a
        :class:`assay.core.tabular.TabularSchema`); None for images and arrays.
    """

    x: Tensor
    y: Tensor
    name: str
    split: str
    classes: tuple[str, ...]
    group: Tensor | None = None
    source: str = ""
    attributes: Mapping[str, Tensor] = field(default_factory=dict)
    attribute_values: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    schema: Any = None
    _sha256: list[str] = field(default_factory=list, repr=False, compare=False)

    def __post_init__(self) -> None:
        attributes = dict(self.attributes)
        if self.group is not None:
            if "group" in attributes and attributes["group"] is not self.group:
                raise AssayValueError(f"{self.label}: give the unnamed attribute as group or "
                                      "as attributes['group'], not both.")
            attributes["group"] = self.group
        object.__setattr__(self, "attributes", attributes)
        object.__setattr__(self, "group", attributes.get("group"))
        object.__setattr__(self, "attribute_values",
                           {k: tuple(str(v) for v in values)
                            for k, values in self.attribute_values.items()})
        validate_arrays(self.x, self.y, self.group, len(self.classes), where=self.label)
        validate_attributes(attributes, self.attribute_values, len(self.y), where=self.label)

    @property
    def label(self) -> str:
        return f"{self.name}:{self.split}"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def __len__(self) -> int:
        return len(self.y)

    def attribute(self, name: str) -> tuple[Tensor, tuple[str, ...]]:
        """The codes of sensitive attribute ``name`` and the value each code stands for
        (its ``attribute_values``, else the codes as text); raises naming the attributes
        this split has."""
        if name not in self.attributes:
            have = ", ".join(sorted(self.attributes)) or "none"
            raise AssayValueError(
                f"{self.label} has no sensitive attribute {name!r} (it has: {have}). Fix: "
                "name one of those, or load data that carries it (a CSV's --sensitive "
                "columns, an .npz array group_<name>).")
        codes = self.attributes[name]
        values = self.attribute_values.get(name)
        if values is None:
            values = tuple(str(i) for i in range(int(codes.max()) + 1))
        return codes, values

    def subset(self, n: int | None) -> Dataset:
        """The first ``n`` samples (all when ``n`` is None or larger than the split)."""
        if n is not None:
            check_int("n", n, "Dataset.subset", low=1)
        if n is None or n >= len(self):
            return self
        return self.take(torch.arange(n))

    def take(self, index: Tensor, split: str | None = None) -> Dataset:
        """The samples at ``index``, as a new split (named ``split`` when given)."""
        return Dataset(self.x[index], self.y[index], self.name, split or self.split, self.classes,
                       source=self.source,
                       attributes={k: v[index] for k, v in self.attributes.items()},
                       attribute_values=self.attribute_values, schema=self.schema)

    def split_off(self, fraction: float, *, seed: int = 0) -> tuple[Dataset, Dataset]:
        """A seeded random split into (``fraction`` of the samples, the rest).

        Used for held-out calibration data (temperature scaling, conformal prediction).
        ``fraction`` must lie in (0, 1); raises when either part would be empty.
        """
        first, rest = self.split_indices(fraction, seed=seed)
        return self.take(first, f"{self.split}/held-out"), self.take(rest, f"{self.split}/rest")

    def split_indices(self, fraction: float, *, seed: int = 0) -> tuple[Tensor, Tensor]:
        """The positions of :meth:`split_off`'s two parts."""
        fraction = check_float("fraction", fraction, "Dataset.split_off", low=0.0, high=1.0,
                               low_open=True, high_open=True)
        check_int("seed", seed, "Dataset.split_off", low=0)
        count = int(round(fraction * len(self)))
        if not 0 < count < len(self):
            raise AssayValueError(f"{self.label}: splitting {len(self)} samples at fraction "
                                  f"{fraction} leaves an empty part; use more samples.")
        order = torch.randperm(len(self), generator=seeded_generator(seed))
        return order[:count], order[count:]

    def sha256(self) -> str:
        """Content hash of x, y and the sensitive attributes with their names (cached)."""
        if not self._sha256:
            digest = hashlib.sha256()
            for tensor in (self.x, self.y):
                digest.update(str(tuple(tensor.shape)).encode())
                digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
            for name in sorted(self.attributes):
                codes = self.attributes[name]
                digest.update(f"{name}={self.attribute_values.get(name)}".encode())
                digest.update(codes.detach().cpu().contiguous().numpy().tobytes())
            self._sha256.append(digest.hexdigest())
        return self._sha256[0]

    def describe(self) -> dict:
        return {"name": self.name, "split": self.split, "n": len(self),
                "input_shape": list(self.input_shape), "num_classes": self.num_classes,
                "classes": list(self.classes), "has_group": self.group is not None,
                "attributes": {k: list(self.attribute(k)[1]) for k in sorted(self.attributes)},
                "source": self.source, "sha256": self.sha256()}


def validate_arrays(x: Tensor, y: Tensor, group: Tensor | None, num_classes: int,
                    *, where: str) -> None:
    """Raise ``AssayValueError`` naming ``where`` and the fix when the arrays are unusable."""
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise AssayValueError(f"{where}: x and y must be torch tensors.")
    if not x.is_floating_point():
        raise AssayValueError(f"{where}: x must be floating point (got {x.dtype}); scale "
                              "integer pixels to [0, 1] first.")
    if x.ndim < 2:
        raise AssayValueError(f"{where}: x must have shape [N, ...features]; got "
                              f"{tuple(x.shape)}.")
    if y.ndim != 1 or y.dtype != torch.int64:
        raise AssayValueError(f"{where}: y must be a 1-D int64 tensor of labels; got dtype "
                              f"{y.dtype} and shape {tuple(y.shape)}.")
    if len(x) != len(y):
        raise AssayValueError(f"{where}: x has {len(x)} samples but y has {len(y)}.")
    if len(y) == 0:
        raise AssayValueError(f"{where}: the data set is empty.")
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).flatten(1).any(dim=1).sum())
        raise AssayValueError(f"{where}: x contains NaN or infinite values in {bad} samples. "
                              "Fix: clean or drop those samples.")
    low, high = int(y.min()), int(y.max())
    if low < 0 or high >= num_classes:
        raise AssayValueError(f"{where}: labels must lie in 0..{num_classes - 1} "
                              f"({num_classes} classes); found labels from {low} to {high}.")
    if group is not None and (group.shape != y.shape or group.dtype != torch.int64):
        raise AssayValueError(f"{where}: group must be an int64 tensor shaped like y; got "
                              f"dtype {group.dtype} and shape {tuple(group.shape)}.")


ATTRIBUTE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def validate_attributes(attributes: Mapping[str, Tensor],
                        values: Mapping[str, tuple[str, ...]], n: int, *, where: str) -> None:
    """Raise ``AssayValueError`` naming ``where``, the attribute and the fix when a sensitive
    attribute is unusable."""
    for name, codes in attributes.items():
        if not isinstance(name, str) or not ATTRIBUTE_NAME.fullmatch(name):
            raise AssayValueError(f"{where}: sensitive attribute name {name!r} must be letters, "
                                  "digits, '_', '.' or '-' (e.g. 'sex', 'age_group').")
        if not isinstance(codes, Tensor) or codes.shape != (n,) or codes.dtype != torch.int64:
            shape = tuple(codes.shape) if isinstance(codes, Tensor) else type(codes).__name__
            raise AssayValueError(f"{where}: sensitive attribute {name!r} must be an int64 "
                                  f"tensor of {n} codes, one per sample; got {shape}.")
        if n and int(codes.min()) < 0:
            raise AssayValueError(f"{where}: sensitive attribute {name!r} has negative codes; "
                                  "codes are 0, 1, ... (one per value).")
        if name in values and n and int(codes.max()) >= len(values[name]):
            raise AssayValueError(f"{where}: sensitive attribute {name!r} has code "
                                  f"{int(codes.max())} but names only {len(values[name])} "
                                  "values.")
    unknown = sorted(set(values) - set(attributes))
    if unknown:
        raise AssayValueError(f"{where}: attribute_values names {unknown}, which are not "
                              "attributes of the data.")


def outside_bounds(x: Tensor, bounds: tuple[float, float]) -> tuple[float, float] | None:
    """``(min, max)`` of ``x`` when a value lies outside ``bounds`` (beyond a slack of
    :data:`BOUNDS_TOLERANCE` times the range) or is NaN or infinite; None when all fit."""
    if x.numel() == 0:
        return None
    low, high = (float(v) for v in torch.stack(torch.aminmax(x.detach())).cpu())  # NaN spreads
    slack = BOUNDS_TOLERANCE * max(1.0, bounds[1] - bounds[0])
    if low >= bounds[0] - slack and high <= bounds[1] + slack:  # False for NaN
        return None
    return low, high
