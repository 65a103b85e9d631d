"""The project's error and warning types.

Every invalid parameter or bad input raises ``AssayValueError`` (a ``ValueError``),
so callers can catch one type; the CLI turns it into exit code 2 with a one-line reason.
"""

from __future__ import annotations


class AssayValueError(ValueError):
    """Invalid parameter, bad input file or bad data. The message says what and how to fix."""


class AssayWarning(UserWarning):
    """Something about the model or data that weakens the audit's conclusions."""
