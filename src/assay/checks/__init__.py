"""Checks: one question about the model each, registered by name for audit plans."""

from __future__ import annotations

import importlib

from .base import REGISTRY, Check, CheckContext, CheckOutput, Finding, Param, Plot, get_check, register

BUILTIN_MODULES = ("accuracy", "robustness", "corruptions", "calibration", "conformal", "ood",
                   "compression", "certified")


def load_builtin_checks() -> dict[str, type[Check]]:
    """Import the built-in check modules (each registers itself) and return the registry."""
    for module in BUILTIN_MODULES:
        importlib.import_module(f"{__name__}.{module}")
    return REGISTRY


__all__ = ["Check", "CheckContext", "CheckOutput", "Finding", "Param", "Plot", "REGISTRY",
           "get_check", "load_builtin_checks", "register"]
