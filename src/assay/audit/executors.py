"""Executors run an audit's tasks, and the pieces a check fans out.

An executor gets the tasks (data: :class:`~assay.audit.tasks.Task`), the inputs they share
(:class:`~assay.audit.tasks.AuditInputs`, once per audit) and the cache, and yields one
:class:`~assay.audit.tasks.TaskOutcome` per task in the order given; each task runs through
:func:`~assay.audit.tasks.run_task`, which reads and writes the cache, so any executor that
runs tasks resumes an interrupted audit, mid-check included. ``map(fn, items)`` is how a
check fans out independent pieces (``CheckContext.map``): the local executor runs them one
after another; :class:`~assay.audit.ray_executor.RayExecutor` ships ``inputs.to_payload()``
once, runs tasks and pieces as Ray tasks with a cache that every worker reads
(:class:`~assay.audit.cache.CacheStore`) and keeps the order of its outcomes. Executors are
plug-ins: :data:`EXECUTORS`, entry-point group ``assay.executors``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

from ..registry import Registry
from .cache import CacheStore
from .ray_executor import RayExecutor
from .tasks import AuditInputs, Task, TaskOutcome, run_task

T = TypeVar("T")
R = TypeVar("R")


class Executor(Protocol):
    def run(self, tasks: Sequence[Task], inputs: AuditInputs,
            cache: CacheStore | None) -> Iterator[TaskOutcome]:
        """Run ``tasks`` on ``inputs`` and yield their outcomes in the order given."""
        ...

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """``[fn(item) for item in items]``, in the order given, run however it likes."""
        ...


class LocalExecutor:
    """Runs tasks, and the pieces a check maps, one after another in this process."""

    def run(self, tasks: Sequence[Task], inputs: AuditInputs,
            cache: CacheStore | None) -> Iterator[TaskOutcome]:
        for task in tasks:
            yield run_task(task, inputs, cache, executor=self)

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        return [fn(item) for item in items]  # lazily: a progress bar over items advances

    def describe(self) -> dict[str, Any]:
        return {"name": "local"}


EXECUTORS: Registry[Callable[[], Executor]] = Registry("executor", group="assay.executors")
EXECUTORS.add("local", LocalExecutor)
EXECUTORS.add("ray", RayExecutor)  # imports Ray only when built; assay[ray]


def describe_executor(executor: Executor) -> dict[str, Any]:
    """What the report records of the executor: its ``describe()``, else its class name."""
    describe = getattr(executor, "describe", None)
    return describe() if callable(describe) else {"name": type(executor).__name__}


def get_executor(executor: Executor | str | None) -> Executor:
    """``executor`` itself, the registered executor of that name built with no arguments,
    or the local executor for None."""
    if executor is None:
        return LocalExecutor()
    if isinstance(executor, str):
        return EXECUTORS.lookup(executor)()
    return executor
