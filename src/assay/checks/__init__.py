"""Checks: one question about the model each, registered by name for audit plans."""

from __future__ import annotations

from .base import (BUILTIN_MODULES, CHECKS, REGISTRY, Check, CheckContext, CheckOutput, Finding,
                   MetricInfo, Param, Plot, get_check, load_builtin_checks, register)

__all__ = ["BUILTIN_MODULES", "CHECKS", "Check", "CheckContext", "CheckOutput", "Finding",
           "MetricInfo", "Param", "Plot", "REGISTRY", "get_check", "load_builtin_checks",
           "register"]
