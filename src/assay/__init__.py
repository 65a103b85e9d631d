"""assay: can I trust this PyTorch classifier? Attack it, measure it, harden it, report it."""

from ._version import __version__
from .errors import AssayValueError, AssayWarning

__all__ = ["__version__", "AssayValueError", "AssayWarning"]
