"""Square attack: a score-based black-box attack by random search over square windows.

Reference: M. Andriushchenko, F. Croce, N. Flammarion, M. Hein. "Square Attack: a
query-efficient black-box adversarial attack via random search". ECCV 2020.
"""

from __future__ import annotations

import logging
import math
from bisect import bisect_left
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..._params import Bool, Choice, Float, Int, Optional, Seed
from ...core.inference import ScreeningForward
from ...core.rng import seeded_generator
from ...errors import AssayValueError
from .._losses import margin
from .._projection import Norm
from .base import ATTACKS, BATCH_SIZE, AttackResult, EvasionAttack

log = logging.getLogger("assay")

Loss = Literal["margin", "ce"]
_TINY = 1e-12
# Iterations (on a 10,000-iteration scale) after which p halves: the reference schedule.
_P_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def square_fraction(iteration: int, n_queries: int, p_init: float) -> float:
    """The fraction ``p`` of pixels a window covers at ``iteration`` (0-based).

    The reference schedule for 10,000 iterations halves ``p_init`` after iterations 10, 50,
    200, 500, 1000, 2000, 4000, 6000 and 8000 (``p_init / 512`` at the end); for another
    budget the iteration is rescaled first, ``int(iteration / n_queries * 10000)``, as in
    the authors' code and AutoAttack.
    """
    scaled = int(iteration / max(n_queries, 1) * 10000)
    return p_init / 2 ** bisect_left(_P_HALVINGS, scaled)


def _centred_bumps(a: int, b: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """[a, b]: sum over k >= d of 1/(k+1)^2, d the Chebyshev distance to (a//2, b//2)."""
    k = max(a // 2, b // 2) + 1
    weights = 1.0 / torch.arange(1, k + 1, device=device, dtype=dtype) ** 2
    tail = weights.flip(0).cumsum(0).flip(0)  # tail[d] = sum_{k >= d} weights[k]
    dist = torch.maximum((torch.arange(a, device=device) - a // 2).abs()[:, None],
                         (torch.arange(b, device=device) - b // 2).abs()[None, :])
    return tail[dist]


def square_pattern(s: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """[2, s, s]: the L2 window update of the paper (fig. 2) and its transpose.

    The top half holds positive centred bumps, the bottom half negative ones; unit L2 norm.
    """
    top = _centred_bumps(s // 2, s, device, dtype)
    bottom = _centred_bumps(s - s // 2, s, device, dtype)
    top = top / top.norm().clamp_min(_TINY)
    bottom = bottom / bottom.norm().clamp_min(_TINY)
    eta = torch.cat([top, -bottom])
    eta = eta / eta.norm().clamp_min(_TINY)
    return torch.stack([eta, eta.T])


@ATTACKS.register("square")
class Square(EvasionAttack):
    """The Square attack in an Linf or L2 ball: random search with square windows.

    Black-box and score-based: it reads only the logits (forward passes under
    ``torch.no_grad``), never gradients. From a start on the ball's surface, each
    iteration proposes a change inside a random square window per sample and keeps it when
    the loss falls (or the goal is reached). The window covers a fraction ``p`` of the
    pixels (side ``round(sqrt(p * H * W))``); ``p`` follows :func:`square_fraction`.

    Linf: the start is vertical stripes of ``+-eps`` (one random sign per channel and
    column); a proposal sets the window of each channel to ``x +- eps`` (one random sign
    per channel), clipped to the bounds. A proposal that would not change the point is
    turned to the opposite signs, as the authors' code resamples it (side in
    [1, min(H, W) - 1]). L2: the start is a grid of windows of side ``min(H, W) // 5``
    holding the paper's centred pattern (``square_pattern``) with random signs, scaled to
    norm ``eps``; a proposal empties a second window, and gives the first window (odd side
    >= 3, at most min(H, W)) the pattern plus its old content, with the mass of both
    windows and the unused radius, so the perturbation stays on the sphere (then clipped
    to the bounds). Windows are drawn per sample over every position (AutoAttack's port
    draws one per batch; the reference codes draw offsets in [0, H - s - 1], so a window
    never covers the last row or column: on the 8x8 digits CNN, 1000 queries, that left
    torchattacks' Square 9 (Linf, eps 0.1) and 5 (L2, eps 0.5) points of robust accuracy
    above this attack, and within 0.3 points of it with the reference's offsets; see
    tests/test_square.py). Samples already misclassified (or, targeted, at their
    target) on the clean input are not attacked; a sample stops costing queries as soon
    as its argmax reaches the goal (margin below zero) and keeps that point; the others
    return their lowest-loss point over the restarts. Each restart attacks only the
    samples still robust.

    Inputs must be images ``[N, C, H, W]`` with H, W >= 2; flat inputs ``[N, d]`` raise
    an :class:`AssayValueError` (square windows have no meaning without a grid).

    Parameters (keyword-only)
    -------------------------
    eps : float > 0 - radius of the ball.
    norm : {"linf", "l2"}, default "linf"
    n_queries : int >= 1, default 5000 - queries per sample and restart, the start
        included (the reference's ``n_iters``); one more per sample checks the clean input.
    p_init : float in (0, 1], default 0.8 - the initial window fraction. 0.8 is
        AutoAttack's standard value (on CIFAR-10 and ImageNet models); the paper's own
        ImageNet settings are 0.05 for Linf and 0.1 for L2.
    n_restarts : int >= 1, default 1
    loss : {"margin", "ce"}, default "margin" - the loss minimised: the margin
        ``z_y - max_{i != y} z_i`` (targeted: ``max_{i != t} z_i - z_t``), or the negative
        cross-entropy of ``y`` (targeted: the cross-entropy of the target).
    targeted : bool, default False - when True, ``y`` holds target classes.
    seed : int or None, default None - seeds every random choice (None: fresh randomness)
    batch_size : int or None, default None - split the inputs into batches of this size
    fast_forward : bool or None, default None - screen the proposals on a faster copy of
        the model that is not the same function (a bfloat16 copy,
        :class:`assay.core.inference.ScreeningForward`): every proposal the copy would
        keep is scored again on the model as given, and only the model's scores are
        kept, compared and returned, so the copy can make the search miss a proposal but
        never accept one or report a success. None: when timing shows the copy at most
        0.8x the model's pass and the run long enough to pay (2 s); True: whenever the
        copy agrees with the model on the first batch; False: never. A copy that keeps
        being overruled is dropped with a warning. Not in the paper: a speed-up that
        leaves every decision to the model.

    Shapes: ``x`` [N, C, H, W] in the model's bounds, ``y`` [N] int64; returns ``x_adv``
    like ``x`` (channels_last stays channels_last). ``queries`` counts every forward pass
    per sample, at most ``N * (1 + n_restarts * n_queries)`` (a proposal scored on the
    copy and again on the model counts once).

    Example
    -------
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    >>> x, y = torch.rand(8, 1, 4, 4), torch.randint(0, 3, (8,))
    >>> result = Square(eps=0.1, n_queries=50, seed=0).run(model, x, y)
    >>> bool(((result.x_adv - x).abs() <= 0.1 + 1e-6).all()), result.success.shape
    (True, torch.Size([8]))
    """

    layout_copy = False  # query-only: the model as given sees every query

    constraints = {
        "eps": Float(low=0.0, low_open=True),
        "norm": Choice(("linf", "l2")),
        "n_queries": Int(low=1),
        "p_init": Float(low=0.0, high=1.0, low_open=True),
        "n_restarts": Int(low=1),
        "loss": Choice(("margin", "ce")),
        "targeted": Bool(),
        "seed": Seed(),
        "batch_size": BATCH_SIZE,
        "fast_forward": Optional(Bool()),
    }

    def __init__(self, *, eps: float, norm: Norm = "linf", n_queries: int = 5000,
                 p_init: float = 0.8, n_restarts: int = 1, loss: Loss = "margin",
                 targeted: bool = False, seed: int | None = None,
                 batch_size: int | None = None, fast_forward: bool | None = None) -> None:
        self.eps = self._validated("eps", eps)
        self.norm: Norm = self._validated("norm", norm)
        self.n_queries = self._validated("n_queries", n_queries)
        self.p_init = self._validated("p_init", p_init)
        self.n_restarts = self._validated("n_restarts", n_restarts)
        self.loss: Loss = self._validated("loss", loss)
        self.targeted = self._validated("targeted", targeted)
        self.seed = self._validated("seed", seed)
        self.batch_size = self._validated("batch_size", batch_size)
        self.fast_forward = self._validated("fast_forward", fast_forward)

    def _scores(self, logits: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Per sample: (the loss to minimise, whether the goal is reached)."""
        if self.loss == "margin":
            gap = margin(logits, y)
            loss = -gap if self.targeted else gap
        else:
            ce = F.cross_entropy(logits, y, reduction="none")
            loss = ce if self.targeted else -ce
        return loss, self._achieved(logits, y)

    def _start(self, x0: Tensor, lo: float, hi: float, gen: torch.Generator | None) -> Tensor:
        n, c, h, w = x0.shape
        kw: dict[str, Any] = dict(device=x0.device, generator=gen)
        if self.norm == "linf":
            sign = torch.randint(0, 2, (n, c, 1, w), **kw).to(x0.dtype) * 2 - 1
            return (x0 + self.eps * sign).clamp(lo, hi)
        s = max(min(h, w) // 5, 1)
        off_h, off_w = max((h - 5 * s) // 2, 0), max((w - 5 * s) // 2, 0)
        nh, nw = (h - off_h) // s, (w - off_w) // s
        patterns = square_pattern(s, x0.device, x0.dtype)
        pick = torch.randint(0, 2, (n, nh, nw), **kw)  # transposed pattern or not, per tile
        tiles = patterns[pick].permute(0, 1, 3, 2, 4).reshape(n, 1, nh * s, nw * s)
        sign = torch.randint(0, 2, (n, c, nh, nw), **kw).to(x0.dtype) * 2 - 1
        sign = sign.repeat_interleave(s, dim=2).repeat_interleave(s, dim=3)
        delta = torch.zeros_like(x0)
        delta[:, :, off_h:off_h + nh * s, off_w:off_w + nw * s] = tiles * sign
        norm = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        return (x0 + delta * (self.eps / (norm + _TINY))).clamp(lo, hi)

    @staticmethod
    def _window(n: int, h: int, w: int, s: int, device: torch.device,
                gen: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor]:
        """Per sample a random s x s window: mask [n, 1, h, w], row and column offsets."""
        top = torch.randint(0, h - s + 1, (n,), device=device, generator=gen)
        left = torch.randint(0, w - s + 1, (n,), device=device, generator=gen)
        rows = torch.arange(h, device=device)[None] - top[:, None]
        cols = torch.arange(w, device=device)[None] - left[:, None]
        inside_rows = (rows >= 0) & (rows < s)
        inside_cols = (cols >= 0) & (cols < s)
        mask = inside_rows[:, None, :, None] & inside_cols[:, None, None, :]
        return mask, rows, cols

    def _propose(self, x0: Tensor, best: Tensor, it: int, lo: float, hi: float,
                 gen: torch.Generator | None) -> Tensor:
        n, c, h, w = x0.shape
        p = square_fraction(it, self.n_queries, self.p_init)
        side = round(math.sqrt(p * h * w))
        dev, dt = x0.device, x0.dtype
        sign = torch.randint(0, 2, (n, c, 1, 1), device=dev, generator=gen).to(dt) * 2 - 1
        if self.norm == "linf":
            s = min(max(side, 1), min(h, w) - 1)
            mask, _, _ = self._window(n, h, w, s, dev, gen)
            value = (x0 + self.eps * sign).clamp(lo, hi)
            changed = ((value != best) & mask).flatten(1).any(dim=1).view(-1, 1, 1, 1)
            value = torch.where(changed, value, (x0 - self.eps * sign).clamp(lo, hi))
            return torch.where(mask, value, best)
        s = max(side, 3)
        s = min(s + 1 if s % 2 == 0 else s, min(h, w))
        mask1, rows, cols = self._window(n, h, w, s, dev, gen)
        mask2, _, _ = self._window(n, h, w, s, dev, gen)
        pick = torch.randint(0, 2, (n,), device=dev, generator=gen)
        patterns = square_pattern(s, dev, dt)[pick]  # [n, s, s]
        r, q = rows.clamp(0, s - 1), cols.clamp(0, s - 1)
        eta = patterns[torch.arange(n, device=dev)[:, None, None], r[:, :, None], q[:, None, :]]
        eta = eta[:, None] * mask1
        delta = best - x0
        in1 = delta * mask1
        norm1 = in1.square().sum(dim=(2, 3), keepdim=True).sqrt()
        both = delta * (mask1 | mask2)
        mass = both.square().sum(dim=(2, 3), keepdim=True)
        radius = delta.flatten(1).square().sum(dim=1).view(-1, 1, 1, 1)
        new = eta * sign + in1 / (norm1 + _TINY)
        new = new / (new.square().sum(dim=(2, 3), keepdim=True).sqrt() + _TINY)
        new = new * ((self.eps ** 2 - radius).clamp_min(0) / c + mass).sqrt()
        delta = delta - both + new
        norm = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        return (x0 + delta * (self.eps / (norm + _TINY))).clamp(lo, hi)

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, lo: float,
             hi: float) -> AttackResult:
        if x.ndim != 4 or x.shape[2] < 2 or x.shape[3] < 2:
            raise AssayValueError(f"Square: inputs must be images [N, C, H, W] with H, W >= 2; "
                                  f"got shape {tuple(x.shape)}. Square windows need a pixel "
                                  "grid; use a gradient attack for flat features.")
        gen = seeded_generator(self.seed, x.device)
        fmt = (torch.channels_last if not x.is_contiguous()
               and x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format)
        screen = ScreeningForward(model, passes=self.n_queries * self.n_restarts,
                                  enabled=self.fast_forward, owner="Square")
        with torch.no_grad():
            x_adv = x.detach().clone()
            success = self._achieved(model(x_adv), y)
            queries = len(x)
            best_loss = torch.full((len(x),), float("inf"), device=x.device, dtype=x.dtype)
            for _ in range(self.n_restarts):
                index = (~success).nonzero().squeeze(1)
                if len(index) == 0:
                    break
                x0, lab = x[index], y[index]
                cur = self._start(x0, lo, hi, gen).contiguous(memory_format=fmt)
                loss, done = self._scores(model(cur), lab)
                queries += len(index)
                # "loss": the model's own score of "cur"; "screened": the score it had on
                # the screening copy when the copy accepted it (the copy's scores are
                # compared only with each other: a copy's offset is not an improvement).
                state = dict(index=index, x0=x0, lab=lab, cur=cur, loss=loss,
                             screened=loss.clone())
                for it in range(self.n_queries):
                    if bool(done.any()):  # record and drop the samples just broken
                        hit = state["index"][done]
                        x_adv[hit] = state["cur"][done]
                        success[hit] = True
                        state = {key: value[~done] for key, value in state.items()}
                        if len(state["index"]) == 0:
                            break
                    if it == self.n_queries - 1:
                        break
                    s = state
                    new = self._propose(s["x0"], s["cur"], it, lo, hi, gen)
                    new = new.contiguous(memory_format=fmt)
                    new_loss, done = self._scores(screen(new), s["lab"])
                    queries += len(new)
                    if screen.exact:
                        keep = (new_loss < s["loss"]) | done
                        s["screened"] = exact = torch.where(keep, new_loss, s["loss"])
                    else:
                        keep, exact, done = self._confirmed(model, screen, new, s, new_loss, done)
                        s["screened"] = torch.where(keep, new_loss, s["screened"])
                    s["loss"] = exact
                    s["cur"] = torch.where(keep.view(-1, 1, 1, 1), new, s["cur"])
                rest, loss = state["index"], state["loss"]
                lower = loss < best_loss[rest]
                x_adv[rest[lower]] = state["cur"][lower]
                best_loss[rest] = torch.minimum(loss, best_loss[rest])
        log.debug("Square: proposals screened on: %s", screen.choice)
        return AttackResult(x_adv, success, queries)

    def _confirmed(self, model: nn.Module, screen: ScreeningForward, new: Tensor,
                   state: dict[str, Tensor], screened: Tensor,
                   done: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Proposals screened on the copy: those it would keep (lower than its score of the
        current point, or at the goal) scored again on the model. Returns (keep, the
        model's loss of each kept point, done), decided by the model alone."""
        rows = ((screened < state["screened"]) | done).nonzero().squeeze(1)
        keep = torch.zeros_like(done)
        done = torch.zeros_like(done)
        loss = state["loss"].clone()
        if len(rows):
            exact, reached = self._scores(model(new[rows]), state["lab"][rows])
            confirmed = (exact < loss[rows]) | reached
            keep[rows], done[rows] = confirmed, reached
            loss[rows] = torch.where(confirmed, exact, loss[rows])
            screen.confirm(len(rows), int(confirmed.sum()))
        return keep, loss, done
