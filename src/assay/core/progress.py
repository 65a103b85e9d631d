"""Progress bars for long work: tqdm on a terminal, silent when disabled or not a TTY."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")


def progress_bar(items: Iterable[T], *, desc: str, enabled: bool = True,
                 total: int | None = None) -> Iterable[T]:
    if not enabled or not sys.stderr.isatty():
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, total=total, leave=False, file=sys.stderr)
