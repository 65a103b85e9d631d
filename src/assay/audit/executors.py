"""Executors run the audit's tasks. In-process now; a Ray executor plugs in later.

A task is a zero-argument callable returning a ``CheckResult``; it caches its own
result, so any executor that runs tasks gets resumability for free.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from ..results import CheckResult

Task = Callable[[], CheckResult]


class Executor(Protocol):
    def map(self, tasks: Sequence[Task]) -> Iterator[CheckResult]:
        """Run ``tasks`` and yield their results in the order given."""
        ...


class LocalExecutor:
    """Runs tasks one after another in this process."""

    def map(self, tasks: Sequence[Task]) -> Iterator[CheckResult]:
        for task in tasks:
            yield task()
