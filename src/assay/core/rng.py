"""The one way assay makes randomness: a ``torch.Generator`` seeded explicitly.

The global RNG (``torch.manual_seed``) is never set nor drawn from by a seeded call, so
the same seed gives the same numbers whatever else the process draws, and a user's own
seeding is left alone.
"""

from __future__ import annotations

from typing import overload

import numpy as np
import torch

__all__ = ["piece_seed", "seeded_generator"]


@overload
def seeded_generator(seed: int, device: torch.device | str = ...) -> torch.Generator: ...
@overload
def seeded_generator(seed: None, device: torch.device | str = ...) -> None: ...


def seeded_generator(seed: int | None,
                     device: torch.device | str = "cpu") -> torch.Generator | None:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``; None for ``seed=None``
    (callers then draw from torch's default generator, unseeded by assay).

    Example:
        >>> a, b = seeded_generator(0), seeded_generator(0)
        >>> torch.equal(torch.rand(3, generator=a), torch.rand(3, generator=b))
        True
    """
    if seed is None:
        return None
    return torch.Generator(device=device).manual_seed(seed)


def piece_seed(seed: int, index: int) -> int:
    """The seed of the ``index``-th of a computation's independent pieces: ``seed`` itself
    for the first, so one piece draws what the whole did, and for piece i > 0 a seed spawned
    from it (numpy's ``SeedSequence``), so the pieces' draws are independent of one another
    and of which process runs them."""
    if index == 0:
        return seed
    return int(np.random.SeedSequence(seed, spawn_key=(index,)).generate_state(1)[0])
