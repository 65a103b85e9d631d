"""The Ray executor: an audit's checks, and the pieces they fan out, as Ray tasks.

``run_audit(..., executor=RayExecutor(address))`` (``assay audit --executor ray
[--ray-address ADDR]``) connects to a Ray cluster, or starts a local Ray instance without
an address, and runs:

- each check as a Ray task (:func:`~assay.audit.tasks.run_task` on a worker), all of them
  submitted at once, their outcomes yielded in the plan's order;
- each piece a check maps (``CheckContext.map``: a reference model, a radius or shard of
  the robustness evaluation, a corruption, a batch of certified points) as a Ray task of
  its own, from wherever the check runs. The check does not know which executor runs it.

**Shipped once.** The audit's inputs go into the object store once per audit, as
:meth:`~assay.audit.tasks.AuditInputs.to_payload` (weights as safetensors, no pickle); each
worker process rebuilds them once and keeps them for every task of the audit. A mapped
function is pickled once per ``map`` call with the audit's model, data and executor left
out of the pickle (the worker's own copies take their place), so what each piece carries is
its item and the check's own small values.

**Same numbers.** A task runs the same code on the same inputs with the same seeds as in
process, and the pieces are the check's own (their count and seeds are check parameters,
such as the robustness check's ``shards``), so the report is the same for the same seeds;
floating-point results may differ by rounding where a worker runs on another thread count
(``threads=1`` makes both runs single-threaded).

**Failures.** A task whose worker process dies is retried (``max_retries``, Ray's own
mechanism for system failures); a check whose task or pieces still fail is status "error"
with the reason, and every finished check and piece is kept. With a cache that the workers
share (a :class:`~assay.audit.cache.DirectoryCache` on this machine or on a file system
every node mounts), the pieces are stored by the workers as they finish, so a re-run
reuses every finished piece and check.

**Resources.** Each task asks Ray for ``num_cpus`` CPUs (default 1) and ``num_gpus`` GPUs
(default: 1 when the model is on a CUDA device, else 0), so a GPU cluster places model work
on GPU nodes; the worker puts the model on the same device type as the driver's.

Ray is the optional extra ``assay[ray]``; without it, building the executor is an
``AssayValueError`` naming the extra.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import torch

from .._params import Configured, Float, Int, Optional, Str
from ..errors import AssayValueError
from .cache import CacheStore
from .tasks import AuditInputs, Task, TaskOutcome, run_task

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

RAY_EXTRA = "pip install 'assay[ray]'"
_SHARED = ("model", "data", "train_data")  # the inputs a pickled function refers to


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise AssayValueError(f"The Ray executor needs Ray, which is not installed. Fix: "
                              f"{RAY_EXTRA} (or pip install ray), or use --executor local."
                              ) from None
    return ray


class RayExecutor(Configured):
    """Runs the audit's checks, and the pieces they map, as Ray tasks (see the module).

    Parameters
    ----------
    address : str or None, default None - the Ray cluster's address (``ray.init``'s
        ``address``: ``"auto"``, ``"ray://host:10001"``, ``"host:6379"``); None starts a local
        Ray instance for the audit, and stops it after. When Ray is already initialised in
        this process, that connection is used and ``address`` must be None.
    num_cpus : float > 0, default 1 - CPUs each task asks for
    num_gpus : float >= 0 or None, default None - GPUs each task asks for; None: 1 when the
        model is on a CUDA device, else 0
    max_retries : int >= 0, default 3 - retries of a task whose worker process died
    """

    constraints = {"address": Optional(Str()), "num_cpus": Float(low=0.0, low_open=True),
                   "num_gpus": Optional(Float(low=0.0)), "max_retries": Int(low=0)}

    def __init__(self, address: str | None = None, *, num_cpus: float = 1.0,
                 num_gpus: float | None = None, max_retries: int = 3) -> None:
        self.address = self._validated("address", address)
        self.num_cpus = float(self._validated("num_cpus", num_cpus))
        self.num_gpus = self._validated("num_gpus", num_gpus)
        self.max_retries = self._validated("max_retries", max_retries)
        _ray()  # refuse at once when Ray is missing, before any work
        self._session: _Session | None = None

    def describe(self) -> dict[str, Any]:
        return {"name": "ray", "address": self.address or "local instance",
                "num_cpus": self.num_cpus, "num_gpus": self.num_gpus,
                "max_retries": self.max_retries}

    # ------------------------------------------------------------------ the driver
    def run(self, tasks: Sequence[Task], inputs: AuditInputs,
            cache: CacheStore | None) -> Iterator[TaskOutcome]:
        ray = _ray()
        started = self._connect(ray)
        try:
            payload = inputs.to_payload()
            payload["progress"] = False  # many workers' bars would interleave on one terminal
            gpus = self.num_gpus if self.num_gpus is not None else (
                1.0 if inputs.model.device.type == "cuda" else 0.0)
            session = _Session(run_id=uuid.uuid4().hex, payload=ray.put(payload),
                               device=inputs.model.device.type, num_cpus=self.num_cpus,
                               num_gpus=gpus, max_retries=self.max_retries)
            self._session = session
            remote = ray.remote(_run_task_remotely).options(**session.resources())
            refs = [remote.remote(session, task, cache) for task in tasks]
            try:
                for task, ref in zip(tasks, refs):
                    yield _outcome(ray, task, ref)
            finally:
                _cancel_unfinished(ray, refs)  # an interrupted audit leaves nothing running
        finally:
            self._session = None
            if started:
                ray.shutdown()

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """``[fn(item) for item in items]`` as Ray tasks during :meth:`run`, else here in
        order."""
        if self._session is None:
            return [fn(item) for item in items]
        return self._session.map(fn, items, self)

    def _connect(self, ray: Any) -> bool:
        """Connect to the cluster, or start a local instance; True when this call started
        Ray (so :meth:`run` stops it)."""
        if ray.is_initialized():
            if self.address is not None:
                raise AssayValueError("RayExecutor: Ray is already initialised in this process; "
                                      "pass address=None to use that connection.")
            return False
        try:
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING,
                     runtime_env={"env_vars": _worker_env()})
        except (ConnectionError, RuntimeError, ValueError) as err:
            where = f"at {self.address!r}" if self.address else "locally"
            raise AssayValueError(f"The Ray executor could not start or reach a Ray cluster "
                                  f"{where}: {err}. Fix: check --ray-address (the head node's "
                                  "address, as 'ray start --head' printed it).") from None
        return True


def _worker_env() -> dict[str, str]:
    """Environment variables the workers need to find what the driver found."""
    return {name: os.environ[name] for name in ("ASSAY_DATA_DIR",) if name in os.environ}


def _cancel_unfinished(ray: Any, refs: list[Any]) -> None:
    if refs:
        _, pending = ray.wait(refs, num_returns=len(refs), timeout=0)
        for ref in pending:
            ray.cancel(ref, force=True)


def _outcome(ray: Any, task: Task, ref: Any) -> TaskOutcome:
    """The task's outcome, or an error outcome when Ray could not run it (its worker died
    more often than the retries allow, the cluster went away)."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as err:
        message = f"{type(err).__name__}: {_first_line(err)}"
        log.error("check %s: its Ray task failed: %s", task.spec.id, message)
        return TaskOutcome(None, 0.0, f"the check's Ray task failed ({message})")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# ---------------------------------------------------------------- driver and workers
class _Session:
    """What the driver and every worker of one audit share: the payload's object
    reference, the device, the task resources. It pickles small (the payload stays in the
    object store), so it travels with every task."""

    def __init__(self, *, run_id: str, payload: Any, device: str, num_cpus: float,
                 num_gpus: float, max_retries: int) -> None:
        self.run_id = run_id
        self.payload = [payload]  # in a list: Ray hands a top-level reference over resolved
        self.versions = _versions()  # the driver's: the cache keys hold them
        self.device = device
        self.num_cpus, self.num_gpus, self.max_retries = num_cpus, num_gpus, max_retries

    def resources(self) -> dict[str, Any]:
        return {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus,
                "max_retries": self.max_retries}

    def map(self, fn: Callable[[T], R], items: Iterable[T], executor: Any) -> list[R]:
        """Each item as a Ray task running ``fn``, pickled once without the inputs; a
        progress bar given as ``items`` advances as pieces finish."""
        ray = _ray()
        bar: Any = items if hasattr(items, "update") and hasattr(items, "iterable") else None
        values = list(bar.iterable if bar is not None else items)
        if not values:
            return []
        function = ray.put(_dumps(fn, executor, _inputs(self)))
        remote = ray.remote(_run_piece_remotely).options(**self.resources())
        refs = [remote.remote(self, [function], item) for item in values]
        try:
            pending = list(refs)
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                if bar is not None:
                    bar.update(len(ready))
            return [_piece_value(ray, ref) for ref in refs]
        finally:
            _cancel_unfinished(ray, refs)
            if bar is not None:
                bar.close()


def _piece_value(ray: Any, ref: Any) -> Any:
    """The piece's value; the piece's own exception when it raised (so the check fails as
    it would in process), a ``RuntimeError`` when Ray could not run it."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as err:
        cause = getattr(err, "cause", None)
        if isinstance(cause, Exception):
            raise cause from None
        raise RuntimeError(f"a piece of the check failed on a Ray worker: {_first_line(err)}"
                           ) from None
    except ray.exceptions.RayError as err:
        raise RuntimeError(f"a piece of the check could not be run on Ray "
                           f"({type(err).__name__}: {_first_line(err)})") from None


_WORKER: dict[str, Any] = {}  # this worker process's rebuilt inputs: one audit's at a time


def _inputs(session: _Session) -> AuditInputs:
    """The audit's inputs in this process, rebuilt from the payload on first use."""
    if _WORKER.get("run_id") != session.run_id:
        if _versions() != session.versions:  # another version would compute other numbers
            raise RuntimeError(f"this Ray worker runs {_versions()} but the driver "
                               f"{session.versions}: install the same versions on every node")
        ray = _ray()
        device = session.device
        if device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("the model is on CUDA in the driver, but this Ray worker has no "
                               "CUDA device: give the tasks GPUs (num_gpus) on a GPU cluster")
        _WORKER.clear()
        _WORKER.update(run_id=session.run_id,
                       inputs=AuditInputs.from_payload(ray.get(session.payload[0]), device))
    return _WORKER["inputs"]


def _versions() -> dict[str, str]:
    from .._version import __version__

    return {"assay": __version__, "torch": torch.__version__}


def _worker_executor(session: _Session) -> RayExecutor:
    """The executor a check on a worker maps through: the same session, so its pieces are
    Ray tasks too."""
    executor = RayExecutor.__new__(RayExecutor)  # no Ray connection of its own to make
    executor.address, executor.num_cpus = None, session.num_cpus
    executor.num_gpus, executor.max_retries = session.num_gpus, session.max_retries
    executor._session = session
    return executor


def _run_task_remotely(session: _Session, task: Task, cache: CacheStore | None) -> TaskOutcome:
    return run_task(task, _inputs(session), cache, executor=_worker_executor(session))


def _run_piece_remotely(session: _Session, function: list[Any], item: Any) -> Any:
    ray = _ray()
    fn = _loads(ray.get(function[0]), _inputs(session), _worker_executor(session))
    return fn(item)


# ---------------------------------------------------------- functions without inputs
def _dumps(fn: Callable[..., Any], executor: Any, inputs: AuditInputs) -> bytes:
    """``fn`` pickled by value (Ray's cloudpickle: closures and local functions), with the
    executor and this process's audit model and data (what the check's context holds)
    written as references, which :func:`_loads` replaces with the worker's copies."""
    from ray import cloudpickle

    shared = {id(value): name for name in _SHARED
              if (value := getattr(inputs, name)) is not None}

    class Pickler(cloudpickle.CloudPickler):
        def persistent_id(self, obj: Any) -> str | None:
            if obj is executor:
                return "executor"
            return shared.get(id(obj))

    buffer = io.BytesIO()
    Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(fn)
    return buffer.getvalue()


def _loads(blob: bytes, inputs: AuditInputs, executor: Any) -> Callable[..., Any]:
    class Unpickler(pickle.Unpickler):
        def persistent_load(self, pid: Any) -> Any:
            if pid == "executor":
                return executor
            if pid in _SHARED:
                return getattr(inputs, pid)
            raise pickle.UnpicklingError(f"unknown reference {pid!r}")

    return Unpickler(io.BytesIO(blob)).load()
