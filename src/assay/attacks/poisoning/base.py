"""What every poisoning attack shares: the poisoned copy of a data set it returns, the
choice of which samples to change, and the checks of its settings against the data.

An attack is configured once (keyword-only settings, validated against ``constraints``)
and applied to a training split of images in [0, 1]: ``attack.poison(train) ->
PoisonedData``. A backdoor attack also stamps its trigger on any input
(``attack.apply_trigger(x)``), which is how its attack success rate is measured on test
inputs; training a backdoored model is ``fit(net, poisoned.data, config)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, cast

import torch
from torch import Tensor

from ..._params import Configured
from ..._paths import read_small_json
from ...core.dataset import Dataset, outside_bounds
from ...core.inference import batched_logits
from ...core.rng import seeded_generator
from ...errors import AssayValueError
from ...registry import Registry


@dataclass(frozen=True)
class PoisonedData:
    """A poisoned copy of a training split.

    data : Dataset - the split with ``poisoned`` samples changed (same size and order)
    poisoned : Tensor [P] int64 - positions of the changed samples, sorted
    original_labels : Tensor [P] int64 - their labels before the attack
    target : int or None - the class a backdoor sends triggered inputs to (all-to-one), or
        a targeted label flip's; None when each class goes to the next (all-to-all) or
        labels flip at random
    attack : str - the attack's name; ``settings`` its settings
    augmented : Tensor [A] int64 - positions of samples changed with their labels kept
        (WaNet's noise mode), sorted; empty for the others
    """

    data: Dataset
    poisoned: Tensor
    original_labels: Tensor
    target: int | None
    attack: str
    settings: dict[str, Any]
    augmented: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.int64))

    @property
    def rate(self) -> float:
        """The share of the split that was changed."""
        return len(self.poisoned) / len(self.data)

    def describe(self) -> dict[str, Any]:
        return {"attack": self.attack, "settings": self.settings, "target": self.target,
                "poisoned": len(self.poisoned), "augmented": len(self.augmented),
                "rate": self.rate, "n": len(self.data)}


POISONING_ATTACKS: Registry[type[PoisoningAttack]] = Registry(
    "poisoning attack", group="assay.poisoning_attacks",
    builtins=[f"{__package__}.{m}" for m in ("badnets", "blended", "wanet", "label_flip",
                                             "label_consistent", "feature_collision")])


class PoisoningAttack(Configured):
    """Base class: subclasses set ``name`` and ``constraints`` and implement ``poison``
    (backdoors implement ``_stamp`` and get ``poison`` and ``apply_trigger`` from
    :class:`BackdoorAttack`)."""

    name: ClassVar[str]

    def settings(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.constraints}

    def poison(self, data: Dataset) -> PoisonedData:
        raise NotImplementedError


class BackdoorAttack(PoisoningAttack):
    """A trigger stamped on ``rate`` of the training inputs, whose labels become the
    target: ``target`` for all-to-one, ``(y + 1) mod K`` for all-to-all (Gu et al. 2017).
    The poisoned samples are drawn, seeded, from those whose label the attack changes
    (all-to-one: every class but the target), so exactly ``round(rate * N)`` samples are
    changed and each of them now carries a wrong label."""

    target: int
    rate: float
    mode: str = "all_to_one"
    seed: int = 0

    def poison(self, data: Dataset) -> PoisonedData:
        check_poisoning_data(self, data, needs_images=True)
        eligible = torch.arange(len(data))
        if self.mode == "all_to_one":
            eligible = eligible[data.y.cpu() != self.target]
        chosen = choose(eligible, self.rate, len(data), self.seed, type(self).__name__)
        x, y = data.x.clone(), data.y.clone()
        index = chosen.to(x.device)
        x[index] = self._stamp(x[index], data)
        originals = y[chosen.to(y.device)].clone()
        y[chosen.to(y.device)] = self.relabel(originals, data.num_classes)
        return _copy(data, x, y, chosen, originals, self,
                     self.target if self.mode == "all_to_one" else None)

    def relabel(self, y: Tensor, num_classes: int) -> Tensor:
        """The labels a triggered input should get: the target, or the next class."""
        if self.mode == "all_to_one":
            return torch.full_like(y, self.target)
        return (y + 1) % num_classes

    def apply_trigger(self, x: Tensor) -> Tensor:
        """``x`` [N, C, H, W] with the trigger, as the attacker shows it at test time."""
        return self._stamp(x.clone(), None)

    def success_rate(self, model: Callable[[Tensor], Tensor], x: Tensor, y: Tensor, *,
                     batch_size: int = 256) -> float:
        """The attack success rate (ASR) on test inputs ``x`` with labels ``y``: the share
        of the triggered inputs the model sends where the backdoor says (the target, or
        the next class), counted on the inputs whose label the trigger changes (every
        class but the target's for all-to-one); NaN when there are none."""
        eligible = (y != self.target) if self.mode == "all_to_one" else torch.ones_like(
            y, dtype=torch.bool)
        if not bool(eligible.any()):
            return float("nan")
        x, y = x[eligible], y[eligible]
        logits = batched_logits(model, self.apply_trigger(x), batch_size=batch_size)
        wanted = self.relabel(y, logits.shape[1]).to(logits.device)
        return float((logits.argmax(dim=1) == wanted).float().mean())

    def _stamp(self, x: Tensor, data: Dataset | None) -> Tensor:
        raise NotImplementedError


TRIGGER_FILE_LIMIT = 1 << 20  # bytes: a trigger description is a few hundred


def load_trigger(path: str | Path) -> BackdoorAttack:
    """The backdoor a ``.trigger.json`` describes (``assay attack backdoor`` writes one
    beside the model: ``{"attack": NAME, "settings": {...}, ...}``), rebuilt from its name
    and settings, which are validated like any attack's. The file is untrusted: an
    unreadable, oversized or malformed one is an ``AssayValueError`` naming it."""
    where = f"the trigger file {path}"
    described = read_small_json(path, where=where, limit=TRIGGER_FILE_LIMIT, fix=(
        "give the path of the .trigger.json that assay attack backdoor wrote"))
    names = [n for n in POISONING_ATTACKS if issubclass(POISONING_ATTACKS[n], BackdoorAttack)]
    if not (isinstance(described, dict) and described.get("attack") in names
            and isinstance(described.get("settings"), dict)):
        raise AssayValueError(f"{where} must hold an object with 'attack' (one of {names}) and "
                              "'settings' (the attack's settings).")
    try:
        attack = POISONING_ATTACKS[described["attack"]](**described["settings"])
    except TypeError as err:  # a setting the attack does not have
        raise AssayValueError(f"{where}: {err}.") from None
    except AssayValueError as err:
        raise AssayValueError(f"{where}: {err}") from None
    return cast(BackdoorAttack, attack)


def choose(eligible: Tensor, rate: float, n: int, seed: int, owner: str) -> Tensor:
    """``round(rate * n)`` positions drawn without replacement from ``eligible``, sorted;
    refused when there are not that many."""
    count = int(round(rate * n))
    if count == 0:
        raise AssayValueError(f"{owner}: rate {rate:g} of {n} samples poisons none. Fix: "
                              f"use a rate of at least {1 / n:.2g} or more data.")
    if count > len(eligible):
        raise AssayValueError(f"{owner}: rate {rate:g} asks for {count} poisoned samples, but "
                              f"only {len(eligible)} of the {n} can be changed (samples of "
                              "the target class cannot). Fix: lower the rate.")
    order = torch.randperm(len(eligible), generator=seeded_generator(seed))[:count]
    return eligible[order].sort().values


def check_poisoning_data(attack: PoisoningAttack, data: Dataset, *,
                         needs_images: bool) -> None:
    """Refuse data the attack cannot poison: a target outside the classes, one class,
    a trigger that needs images on tabular rows."""
    owner = type(attack).__name__
    if not isinstance(data, Dataset):
        raise AssayValueError(f"{owner}.poison takes a Dataset; got {type(data).__name__}.")
    if len(torch.unique(data.y)) < 2:
        raise AssayValueError(f"{owner}: {data.label} has a single class; poisoning needs a "
                              "training set of at least two.")
    target = getattr(attack, "target", None)
    if target is not None and target >= data.num_classes:
        raise AssayValueError(f"The 'target' parameter of {owner} is {target}, but "
                              f"{data.label} has {data.num_classes} classes "
                              f"(0..{data.num_classes - 1}).")
    if needs_images and data.x.ndim != 4:
        raise AssayValueError(f"{owner} stamps a trigger on images [N, C, H, W]; "
                              f"{data.label} has inputs of shape {tuple(data.input_shape)}.")
    if needs_images and outside_bounds(data.x, (0.0, 1.0)) is not None:
        raise AssayValueError(f"{owner} draws its trigger in [0, 1], the range of images in "
                              f"assay; {data.label} has values outside it. Fix: scale the "
                              "images to [0, 1] (the model's wrapper normalises them).")


def check_patch_fits(owner: str, size: int, height: int, width: int) -> None:
    if size > min(height, width):
        raise AssayValueError(f"{owner}: a trigger of {size}x{size} pixels does not fit "
                              f"images of {height}x{width}. Fix: a smaller patch_size.")


def _copy(data: Dataset, x: Tensor, y: Tensor, chosen: Tensor, originals: Tensor,
          attack: PoisoningAttack, target: int | None) -> PoisonedData:
    poisoned = Dataset(x, y, data.name, f"{data.split}/{attack.name}", data.classes,
                       source=data.source, attributes=data.attributes,
                       attribute_values=data.attribute_values, schema=data.schema)
    return PoisonedData(poisoned, chosen, originals.cpu(), target, attack.name,
                        attack.settings())


def copy_with_labels(data: Dataset, y: Tensor, chosen: Tensor, originals: Tensor,
                     attack: PoisoningAttack, target: int | None) -> PoisonedData:
    """A copy of ``data`` with new labels ``y`` (label-flipping attacks)."""
    return _copy(data, data.x, y, chosen, originals, attack, target)


def copy_with_images(data: Dataset, x: Tensor, chosen: Tensor, attack: PoisoningAttack,
                     target: int | None) -> PoisonedData:
    """A copy of ``data`` with new inputs ``x`` at ``chosen`` and every label kept
    (clean-label attacks): ``poisoned`` are the changed samples, their labels unchanged."""
    return _copy(data, x, data.y.clone(), chosen, data.y[chosen.to(data.y.device)].clone(),
                 attack, target)
