"""Neural Cleanse: reverse-engineer, for every class, the smallest trigger that sends clean
inputs there; a trojan's target needs a much smaller one than the other classes.

Reference: B. Wang, Y. Yao, S. Shan, H. Li, B. Viswanath, H. Zheng, B. Y. Zhao. "Neural
Cleanse: Identifying and Mitigating Backdoor Attacks in Neural Networks". IEEE S&P 2019.
For class t a mask m (H x W, in [0, 1] through a sigmoid) and a pattern p (C x H x W,
in [0, 1]) minimise ``CE(f((1 - m) * x + m * p), t) + cost * |m|_1`` over clean inputs x
with Adam (lr 0.1, betas 0.5 and 0.9). ``cost`` starts at 0 and is set to ``init_cost``
(1e-3) once the trigger reaches ``success_threshold`` (0.99) of the inputs; then, checked
every ``steps_per_check`` steps, it is multiplied by 1.5 after ``patience`` (5) checks
above the threshold and divided by 1.5 ** 1.5 after ``patience`` checks below it (the
reference implementation's schedule). The smallest mask that reached the threshold is kept.
The anomaly index of a class is ``|L1_t - median| / (1.4826 * MAD)`` over the classes' mask
norms; a class below the median with an index above ``threshold`` (2) is flagged.

All classes are searched at once: each step stacks the K masked copies of a batch into
one forward pass of K x batch inputs, so a 10-class model costs ten times a batch, not ten
sequential searches. The classes can also be searched in groups (``scan(groups=...)``),
which an audit's executor runs side by side: a group draws what a search of all classes
would, so the triggers do not depend on the grouping beyond float rounding.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..._params import Configured, Float, Int
from ...core.dataset import Dataset
from ...core.inference import eval_mode, model_device
from ...core.rng import seeded_generator
from ...errors import AssayValueError

_MAD_SCALE = 1.4826  # MAD of a normal distribution times this is its standard deviation


@dataclass(frozen=True)
class TriggerScan:
    """Neural Cleanse's result.

    masks [K, H, W] and patterns [K, C, H, W]: the reconstructed trigger of each class;
    l1 [K]: each mask's L1 norm; success [K]: the share of clean inputs each trigger sends
    to its class; anomaly [K]: each class's anomaly index (0 for classes above the
    median); anomaly_index: the largest of those; flagged: the classes over the threshold;
    suspected_target: the flagged class with the smallest mask, -1 when none.
    """

    masks: Tensor
    patterns: Tensor
    l1: Tensor
    success: Tensor
    anomaly: Tensor
    anomaly_index: float
    flagged: tuple[int, ...]
    suspected_target: int
    seconds_per_class: float


class NeuralCleanse(Configured):
    """Parameters (keyword-only)
    -------------------------
    steps : int >= 1, default 1000 - optimisation steps (each on one batch of every class)
    batch_size : int >= 1, default 32 - clean inputs per class per step
    lr : float > 0, default 0.1
    init_cost : float > 0, default 1e-3
    success_threshold : float in (0, 1], default 0.99
    patience : int >= 1, default 5; steps_per_check : int >= 1, default 10
    threshold : float > 0, default 2.0 - the anomaly index that flags a class
    seed : int >= 0, default 0 - batches and the initial masks
    """

    constraints = {"steps": Int(low=1), "batch_size": Int(low=1),
                   "lr": Float(low=0.0, low_open=True), "init_cost": Float(low=0.0, low_open=True),
                   "success_threshold": Float(low=0.0, high=1.0, low_open=True),
                   "patience": Int(low=1), "steps_per_check": Int(low=1),
                   "threshold": Float(low=0.0, low_open=True), "seed": Int(low=0)}

    def __init__(self, *, steps: int = 1000, batch_size: int = 32, lr: float = 0.1,
                 init_cost: float = 1e-3, success_threshold: float = 0.99, patience: int = 5,
                 steps_per_check: int = 10, threshold: float = 2.0, seed: int = 0) -> None:
        self.steps: int = self._validated("steps", steps)
        self.batch_size: int = self._validated("batch_size", batch_size)
        self.lr: float = self._validated("lr", lr)
        self.init_cost: float = self._validated("init_cost", init_cost)
        self.success_threshold: float = self._validated("success_threshold", success_threshold)
        self.patience: int = self._validated("patience", patience)
        self.steps_per_check: int = self._validated("steps_per_check", steps_per_check)
        self.threshold: float = self._validated("threshold", threshold)
        self.seed: int = self._validated("seed", seed)

    def scan(self, model: nn.Module, clean: Dataset, *, groups: int = 1,
             map_groups: Callable[[Callable[[list[int]], Any], list[list[int]]], list[Any]]
             | None = None) -> TriggerScan:
        """Search a trigger for every class of ``model`` on the ``clean`` images.

        ``groups`` splits the classes into that many groups of consecutive classes, each
        searched by :meth:`search` (the same draws as one search of all, so the same
        triggers up to float rounding); ``map_groups(fn, groups)`` runs them (an audit's
        ``CheckContext.map``: side by side on another executor), default one after another."""
        if clean.x.ndim != 4:
            raise AssayValueError(f"Neural Cleanse reverse-engineers image triggers; "
                                  f"{clean.label} has inputs of shape {tuple(clean.input_shape)}.")
        classes = self.class_count(model, clean)
        parts = [list(map(int, part)) for part in torch.arange(classes).tensor_split(
            max(1, min(groups, classes))) if len(part)]
        run = map_groups or (lambda fn, items: [fn(item) for item in items])
        started = time.perf_counter()
        found = run(lambda part: self.search(model, clean, part, classes), parts)
        seconds = time.perf_counter() - started
        masks, patterns, success = (torch.cat([f[i].to(found[0][0].device) for f in found])
                                    for i in range(3))
        l1 = masks.flatten(1).sum(1)
        median = l1.median()
        mad = (l1 - median).abs().median()
        anomaly = ((median - l1).clamp_min(0) / (_MAD_SCALE * mad.clamp_min(1e-12))).double()
        flagged = tuple(int(k) for k in torch.nonzero(anomaly > self.threshold).flatten())
        target = min(flagged, key=lambda k: float(l1[k])) if flagged else -1
        return TriggerScan(masks.cpu(), patterns.cpu(), l1.cpu(), success.cpu(), anomaly.cpu(),
                           float(anomaly.max()), flagged, target, seconds / classes)

    @staticmethod
    def class_count(model: nn.Module, clean: Dataset) -> int:
        """The model's class count; refused below 3 (no median to compare with)."""
        with eval_mode(model), torch.no_grad():
            classes = int(model(clean.x[:1].to(model_device(model))).shape[1])
        if classes < 3:
            raise AssayValueError("Neural Cleanse compares the triggers of the classes; a "
                                  f"model of {classes} classes gives no median to compare with.")
        return classes

    def search(self, model: nn.Module, clean: Dataset, classes: Sequence[int],
               num_classes: int) -> tuple[Tensor, Tensor, Tensor]:
        """The masks [k, H, W], patterns [k, C, H, W] and success rates [k] of the triggers
        of ``classes`` (of the model's ``num_classes``), drawn as in one search of all."""
        device = model_device(model)
        with eval_mode(model):
            return self._search(model, clean.x.to(device), list(classes), num_classes, device)

    def _search(self, model: nn.Module, x_all: Tensor, wanted: list[int], num_classes: int,
                device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        channels, height, width = x_all.shape[1:]
        gen = seeded_generator(self.seed)
        # every class's initial mask is drawn, so a group's are those of a search of all
        rows = torch.tensor(wanted)
        mask_logit = (torch.rand(num_classes, 1, height, width, generator=gen) * 2 - 1
                      )[rows].to(device)
        pattern_logit = (torch.rand(num_classes, channels, height, width, generator=gen) * 2
                         - 1)[rows].to(device)
        classes = len(wanted)
        mask_logit.requires_grad_(True)
        pattern_logit.requires_grad_(True)
        optimizer = torch.optim.Adam([mask_logit, pattern_logit], lr=self.lr, betas=(0.5, 0.9))
        targets = rows.to(device).repeat_interleave(self.batch_size)
        cost = torch.zeros(classes, device=device)
        started = torch.zeros(classes, dtype=torch.bool, device=device)
        up = torch.zeros(classes, device=device)
        down = torch.zeros(classes, device=device)
        best_l1 = torch.full((classes,), float("inf"), device=device)
        best_mask = torch.ones(classes, height, width, device=device)
        best_pattern = torch.zeros(classes, channels, height, width, device=device)
        best_success = torch.zeros(classes, device=device)
        hits = torch.zeros(classes, device=device)
        seen = 0
        for step in range(self.steps):
            index = torch.randint(0, len(x_all), (self.batch_size,), generator=gen)
            x = x_all[index.to(device)]
            mask = torch.sigmoid(mask_logit)                # [K, 1, H, W]
            pattern = torch.sigmoid(pattern_logit)          # [K, C, H, W]
            stamped = (1 - mask[:, None]) * x[None] + (mask * pattern)[:, None]
            logits = model(stamped.flatten(0, 1))
            ce = F.cross_entropy(logits, targets, reduction="none").view(classes, -1).mean(1)
            norms = mask.flatten(1).sum(1)
            optimizer.zero_grad(set_to_none=True)
            (ce + cost * norms).sum().backward()
            optimizer.step()
            with torch.no_grad():
                hit = (logits.argmax(1) == targets).float().view(classes, -1).mean(1)
                hits += hit
                seen += 1
                better = (hit >= self.success_threshold) & (norms < best_l1)
                best_l1 = torch.where(better, norms, best_l1)
                best_mask[better] = mask[better, 0]
                best_pattern[better] = pattern[better]
                best_success = torch.where(better, hit, best_success)
                if (step + 1) % self.steps_per_check:
                    continue
                rate = hits / seen
                hits.zero_()
                seen = 0
                reached = rate >= self.success_threshold
                begin = reached & ~started
                cost = torch.where(begin, torch.full_like(cost, self.init_cost), cost)
                started |= begin
                up = torch.where(reached & started, up + 1, torch.zeros_like(up))
                down = torch.where(~reached & started, down + 1, torch.zeros_like(down))
                raise_cost, lower_cost = up >= self.patience, down >= self.patience
                cost = torch.where(raise_cost, cost * 1.5, cost)
                cost = torch.where(lower_cost, cost / 1.5 ** 1.5, cost)
                up = torch.where(raise_cost, torch.zeros_like(up), up)
                down = torch.where(lower_cost, torch.zeros_like(down), down)
        never = torch.isinf(best_l1)  # no trigger reached the threshold: the last one
        if bool(never.any()):
            with torch.no_grad():
                best_mask[never] = torch.sigmoid(mask_logit)[never, 0]
                best_pattern[never] = torch.sigmoid(pattern_logit)[never]
        return best_mask.detach(), best_pattern.detach(), best_success
