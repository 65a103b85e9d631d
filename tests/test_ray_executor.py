"""The Ray executor on a real two-node Ray cluster on this machine
(``ray.cluster_utils.Cluster``): the demo audit gives the metrics of the in-process run,
pieces run on both nodes, a worker killed mid-check loses no finished piece, a piece that
fails makes its check an error and a re-run reuses the finished pieces. Without Ray,
``--executor ray`` is exit 2 naming the extra.

The probe check reaches the workers as a real plug-in: a module and its ``.dist-info``
entry point in a temporary folder on ``PYTHONPATH``, set before the cluster starts."""

from __future__ import annotations

import os
import pickle
import sys
import textwrap
from pathlib import Path

import pytest

from assay.audit.plan import plan_from_dict
from assay.audit.runner import run_audit
from assay.cli.main import main
from assay.errors import AssayValueError

ray = pytest.importorskip("ray", reason="the Ray executor's tests need the extra assay[ray]")
from ray.cluster_utils import Cluster  # noqa: E402

from assay.audit.ray_executor import RayExecutor, _dumps, _loads  # noqa: E402
from assay.audit.tasks import AuditInputs  # noqa: E402
from assay.checks import CHECKS, CheckContext  # noqa: E402

PROBE = textwrap.dedent('''
    """A check that maps four pieces and can kill its worker or fail a piece (written by
    tests/test_ray_executor.py)."""
    import os
    import signal
    import time
    from pathlib import Path

    from assay.checks import Check, CheckOutput, MetricInfo, Param


    class RayProbe(Check):
        name = "ray_probe"
        pillar = "plugins"
        summary = "Sums four mapped pieces; logs where each ran (a test probe)."
        params = (Param("log", "str", "", "file that each computed piece appends a line to"),
                  Param("die", "bool", False, "kill the check's worker once, after its pieces"),
                  Param("fail_piece", "int", -1, "the piece that raises while FAIL exists"))
        declared_metrics = {"total": MetricInfo("higher")}

        def metric_names(self, params):
            return ["total"]

        def run(self, ctx, params):
            log = Path(params["log"])

            def piece(index):
                def compute():
                    if index == params["fail_piece"] and log.with_name("FAIL").exists():
                        raise ValueError(f"piece {index} failed on purpose")
                    import ray
                    time.sleep(0.3)
                    node = ray.get_runtime_context().get_node_id()
                    with open(log, "a") as out:
                        out.write(f"{index} {os.getpid()} {node}\\n")
                    return float(index * index)
                return ctx.piece(f"piece {index}", compute)

            values = ctx.map(piece, range(4))
            marker = log.with_name("KILLED")
            if params["die"] and not marker.exists():
                marker.write_text(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGKILL)  # the worker dies mid-audit
            return CheckOutput({"total": sum(values)})
''')


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head node and a second node, one CPU each, whose workers see the probe plug-in;
    the probe registered in this process too (plans are validated here)."""
    plugins = tmp_path_factory.mktemp("plugins")
    (plugins / "assay_ray_probe.py").write_text(PROBE)
    info = plugins / "assay_ray_probe-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: assay-ray-probe\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[assay.checks]\nray_probe = assay_ray_probe:RayProbe\n")
    old_path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(plugins), old_path]))
    sys.path.insert(0, str(plugins))
    CHECKS.reload()
    head = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    head.add_node(num_cpus=1)
    head.wait_for_nodes()
    try:
        yield head
    finally:
        head.shutdown()
        sys.path.remove(str(plugins))
        if old_path is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old_path
        CHECKS.reload()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from assay.demo import demo_model, demo_plan

    model, test, train = demo_model(show_progress=False,
                                    cache_dir=tmp_path_factory.mktemp("demo"))
    return model, test, train, demo_plan()


def _probe_plan(**params) -> object:
    return plan_from_dict({"checks": [
        {"name": "accuracy", "gates": ["accuracy >= 0.5"]},
        {"name": "ray_probe", "params": params, "gates": ["total >= 14"]}]})


def _log_lines(log: Path) -> list[list[str]]:
    return [line.split() for line in log.read_text().splitlines()] if log.exists() else []


@pytest.mark.slow
def test_demo_audit_on_two_nodes_matches_the_in_process_run(cluster, demo, tmp_path):
    model, test, train, plan = demo
    local = run_audit(model, test, plan, train_data=train, progress=False, threads=1)
    remote = run_audit(model, test, plan, train_data=train, progress=False, threads=1,
                       executor=RayExecutor(cluster.address), cache_dir=tmp_path / "cache")
    assert [c.id for c in remote.checks] == [c.id for c in local.checks]
    for here, there in zip(local.checks, remote.checks):
        assert there.error is None, there.error
        assert (there.status, there.metrics) == (here.status, here.metrics), here.id
    assert remote.status == local.status
    assert local.provenance["executor"] == {"name": "local"}
    assert remote.provenance["executor"]["name"] == "ray"


@pytest.mark.slow
def test_pieces_run_on_both_nodes(cluster, demo, tmp_path):
    model, test, train, _ = demo
    log = tmp_path / "log"
    result = run_audit(model, test, _probe_plan(log=str(log)), progress=False,
                       executor=RayExecutor(cluster.address))
    assert result.status == "pass", [c.error for c in result.checks]
    assert result.checks[1].metrics["total"] == 0 + 1 + 4 + 9
    lines = _log_lines(log)
    assert sorted(int(index) for index, _, _ in lines) == [0, 1, 2, 3]
    assert len({node for _, _, node in lines}) == 2, lines


@pytest.mark.slow
def test_a_killed_worker_loses_no_finished_piece(cluster, demo, tmp_path):
    model, test, _, _ = demo
    log = tmp_path / "log"
    result = run_audit(model, test, _probe_plan(log=str(log), die=True), progress=False,
                       executor=RayExecutor(cluster.address), cache_dir=tmp_path / "cache")
    assert (tmp_path / "KILLED").exists()  # the check's worker was killed once ...
    assert result.status == "pass", [c.error for c in result.checks]  # ... and retried
    assert result.checks[1].metrics["total"] == 14
    # the retried check read its four finished pieces back: each was computed once
    assert sorted(int(index) for index, _, _ in _log_lines(log)) == [0, 1, 2, 3]


@pytest.mark.slow
def test_a_failing_piece_is_an_error_and_a_rerun_reuses_the_finished_pieces(
        cluster, demo, tmp_path):
    model, test, _, _ = demo
    log, cache = tmp_path / "log", tmp_path / "cache"
    (tmp_path / "FAIL").write_text("")
    plan = _probe_plan(log=str(log), fail_piece=3)
    first = run_audit(model, test, plan, progress=False, executor=RayExecutor(cluster.address),
                      cache_dir=cache)
    accuracy, probe = first.checks
    assert accuracy.status == "pass"  # the finished check is kept
    assert probe.status == "error" and "piece 3 failed on purpose" in probe.error
    assert first.status == "error"
    assert sorted(int(i) for i, _, _ in _log_lines(log)) == [0, 1, 2]
    (tmp_path / "FAIL").unlink()
    second = run_audit(model, test, plan, progress=False, executor=RayExecutor(cluster.address),
                       cache_dir=cache)
    assert second.status == "pass" and second.checks[0].cached
    assert second.checks[1].metrics["total"] == 14
    # only the failed piece was computed again
    assert sorted(int(i) for i, _, _ in _log_lines(log)) == [0, 1, 2, 3]


def test_a_mapped_function_is_pickled_without_the_model_and_data(demo):
    model, test, train, _ = demo
    inputs = AuditInputs(model=model, data=test, train_data=train)
    ctx = CheckContext(model=model, data=test, train_data=train)
    fn = lambda index: ctx.model.num_classes + len(ctx.data) + index  # noqa: E731
    blob = _dumps(fn, executor=None, inputs=inputs)
    assert len(blob) < len(pickle.dumps(model.net.state_dict())) / 4
    there = AuditInputs.from_payload(inputs.to_payload())
    loaded = _loads(blob, there, executor=None)
    assert loaded(1) == fn(1)
    assert loaded.__closure__[0].cell_contents.model is there.model  # the worker's copy


def test_executor_ray_without_ray_is_exit_2_naming_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    code = main(["audit", "--demo", "--executor", "ray", "--out", "unused"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "assay[ray]" in err[0]


@pytest.mark.parametrize("argv, flag", [
    (["--ray-address", "auto"], "--ray-address"),
    (["--executor", "ray", "--ray-cpus", "0"], "--ray-cpus"),
    (["--executor", "dask"], "--executor"),
])
def test_bad_executor_flags_are_exit_2_naming_the_flag(argv, flag, capsys, tmp_path):
    code = main(["audit", "--demo", "--out", str(tmp_path / "out"), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and flag in err[0], err
    assert not (tmp_path / "out").exists()


def test_a_worker_of_another_version_refuses_to_compute():
    from assay.audit import ray_executor

    session = ray_executor._Session(run_id="other", payload=None, device="cpu", num_cpus=1,
                                    num_gpus=0, max_retries=0)
    session.versions = {"assay": "0.0.0", "torch": "1.0"}  # what a driver elsewhere runs
    with pytest.raises(RuntimeError, match="same versions on every node"):
        ray_executor._inputs(session)


def test_the_executor_refuses_its_invalid_settings():
    for name, constraint in RayExecutor.constraints.items():
        for bad in constraint.invalid_examples():
            with pytest.raises(AssayValueError, match=f"'{name}'"):
                RayExecutor(**{name: bad})
