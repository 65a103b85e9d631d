"""The before/after report: one page with every metric's change and both audits' checks."""

import json
import re

from assay.checks.base import Finding, Plot, get_check
from assay.report.compare import metric_deltas, metric_direction, write_comparison
from assay.results import AuditResult, CheckResult, MetricInfo


def result(check, status, metrics, **extra):
    """A result of the registered ``check`` with the metric info its check declares, as the
    runner records it."""
    info = get_check(check).describe_metrics(metrics)
    return CheckResult(check, check, get_check(check).pillar, status, {}, metrics,
                       metric_info=info, **extra)


def audit(name, robust, abstain, warn=False):
    curve = Plot("robust accuracy", "eps", "accuracy", [0.0, 0.3], {"pgd": [0.99, robust]})
    checks = (
        result("accuracy", "pass", {"accuracy": 0.99, "n": 100.0}),
        result("robustness", "warn" if warn else "pass", {"robust_accuracy@linf=0.3": robust},
               plots=(curve,),
               findings=(Finding("warn", "gradients", f"masked {name}"),) if warn else ()),
        # temperature: not a metric of this check, so it has no declared direction
        result("certified_robustness", "pass", {"abstain_rate": abstain, "temperature": 1.0},
               plots=(curve,)),
    )
    return AuditResult("0", "now", "warn" if warn else "pass",
                       {"name": name, "sha256": "0" * 64},
                       {"name": "mnist", "split": "test", "n": 100}, {}, checks)


def direction(check, metric):
    return metric_direction(metric, result(check, "pass", {metric: 0.5}))


def test_direction_of_metrics_is_declared_by_their_checks():
    assert direction("robustness", "robust_accuracy@linf=0.3") == 1
    assert direction("certified_robustness", "certified_accuracy@l2=0.5") == 1
    assert direction("certified_robustness", "abstain_rate") == -1
    assert direction("calibration", "ece_ts") == -1
    assert direction("compression", "latency_ms@prune:0.9") == -1
    assert direction("calibration", "temperature") == 0
    assert direction("accuracy", "n") == 0
    # a metric its check does not declare has no direction, whatever its name says
    assert direction("accuracy", "robust_accuracy@linf=0.3") == 0


def test_the_after_audits_declaration_decides_and_unknown_is_never_marked():
    lower, higher = MetricInfo("lower"), MetricInfo("higher")
    old = CheckResult("c", "c", "p", "pass", {}, {"m": 1.0}, metric_info={"m": higher})
    new = CheckResult("c", "c", "p", "pass", {}, {"m": 2.0}, metric_info={"m": lower})
    bare = CheckResult("c", "c", "p", "pass", {}, {"m": 2.0})

    def audit_of(check):
        return AuditResult("0", "now", "pass", {}, {}, {}, (check,))

    assert metric_deltas(audit_of(old), audit_of(new))[0]["better"] is False
    assert metric_deltas(audit_of(old), audit_of(bare))[0]["better"] is True  # before's
    assert metric_deltas(audit_of(bare), audit_of(bare))[0]["better"] is None  # no change
    unknown = CheckResult("c", "c", "p", "pass", {}, {"m": 1.0})
    assert metric_deltas(audit_of(unknown), audit_of(bare))[0]["better"] is None


def test_deltas_say_which_change_is_better():
    rows = {r["metric"]: r for r in metric_deltas(audit("plain", 0.1, 0.5),
                                                   audit("hardened", 0.8, 0.2))}
    assert rows["robust_accuracy@linf=0.3"]["delta"] == 0.8 - 0.1
    assert rows["robust_accuracy@linf=0.3"]["better"] is True
    assert rows["abstain_rate"]["better"] is True  # fewer abstentions
    assert rows["accuracy"]["better"] is None  # no change
    assert rows["temperature"]["better"] is None  # no direction
    worse = {r["metric"]: r for r in metric_deltas(audit("a", 0.8, 0.2), audit("b", 0.1, 0.5))}
    assert worse["robust_accuracy@linf=0.3"]["better"] is False
    assert worse["abstain_rate"]["better"] is False


def test_one_page_holds_both_audits_side_by_side(tmp_path):
    before, after = audit("plain", 0.1, 0.5, warn=True), audit("hardened", 0.8, 0.2)
    paths = write_comparison(before, after, tmp_path, title="Before and after PGD-AT")
    page = paths["comparison.html"].read_text()
    assert "<script" not in page and "http" not in page.replace('lang="en"', "")
    # every check once as a section, with a before and an after half
    for check in ("accuracy", "robustness", "certified_robustness"):
        assert page.count(f'<section id="{check}">') == 1
    assert page.count("<h3>before") == 3 and page.count("<h3>after") == 3
    # both audits' plots are embedded: two plots in each audit
    assert len(re.findall(r'<img alt="[^"]*" src="data:image/png;base64,', page)) == 4
    # the before audit's warning is shown, improvements are marked
    assert "masked plain" in page
    assert page.count('class="better"') == 2 and 'class="worse"' not in page
    data = json.loads(paths["comparison.json"].read_text())
    assert data["before"]["model"]["name"] == "plain"
    assert data["after"]["model"]["name"] == "hardened"
    markdown = paths["comparison.md"].read_text()
    assert "| robustness | WARN | PASS |" in markdown
    assert "+0.7 (better)" in markdown and "masked plain" in markdown
    assert (tmp_path / "before" / "report.html").is_file()
    assert (tmp_path / "after" / "report.json").is_file()


def test_an_unmeasured_metric_is_no_change_and_the_json_stays_strict(tmp_path):
    def audit_of(value):
        check = result("fairness", "pass", {"demographic_parity_ratio@sex": value})
        return AuditResult("0", "now", "pass", {"name": "m", "sha256": "0" * 64},
                           {"name": "d", "split": "test", "n": 10}, {}, (check,))

    before, after = audit_of(0.5), audit_of(float("nan"))
    assert metric_deltas(before, after)[0]["better"] is None
    write_comparison(before, after, tmp_path, title="t")  # strict JSON: NaN becomes null
    rows = json.loads((tmp_path / "comparison.json").read_text())["deltas"]
    assert rows[0]["after"] is None and rows[0]["delta"] is None
