"""The ``assay`` command line (see :mod:`assay.cli.main`); ``main`` is the console entry
point."""

from .main import EXIT_BAD_INPUT, EXIT_GATE_FAILED, EXIT_INTERRUPTED, EXIT_OK, main

__all__ = ["EXIT_BAD_INPUT", "EXIT_GATE_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "main"]
