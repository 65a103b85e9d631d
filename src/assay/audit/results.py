"""Audit results moved to the torch-free :mod:`assay.results`; this name stays importable
for code that reads report.json back with ``assay.audit.results.AuditResult``."""

from ..results import (SCHEMA_VERSION, STATUSES, AuditResult, CheckResult, GateResult,
                       MetricInfo, Status, check_status, json_safe, overall_status)

__all__ = ["SCHEMA_VERSION", "STATUSES", "AuditResult", "CheckResult", "GateResult",
           "MetricInfo", "Status", "check_status", "json_safe", "overall_status"]
