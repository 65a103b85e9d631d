"""One registry type for every plug-in kind: checks, attacks, OOD detectors, corruptions,
data sets, zoo architectures, report formats and executors.

A :class:`Registry` is a read-only mapping from name to object with one way to add
(``add`` or the ``register`` decorator), list (``names``) and look up (``lookup``, whose
error lists the known names). Its built-in entries are imported on first use, and then
those of other installed packages, declared as entry points in the registry's group::

    # a plug-in package's pyproject.toml
    [project.entry-points."assay.checks"]
    my_check = "my_package.checks:MyCheck"     # an object, registered under "my_check"
    more = "my_package.more_checks"            # or a module that registers its own

A plug-in cannot replace a built-in entry (a package that shadowed "accuracy" could turn
a failing audit into a pass): it is left out with a warning, like one that fails to import.
This module imports the standard library and :mod:`assay.errors` only, so the report layer
can use it without torch.
"""

from __future__ import annotations

import importlib
import types
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from importlib import metadata
from typing import Any, Generic, TypeVar

from .errors import AssayValueError, AssayWarning

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """Named plug-ins of one kind.

    ``kind`` is the singular noun used in messages ("check"); ``group`` the entry-point
    group other packages register under ("assay.checks"), None for none; ``builtins`` the
    modules whose import registers the built-in entries, imported on first use (so a module
    can register into a registry that it imports without a loop).
    """

    def __init__(self, kind: str, *, group: str | None = None,
                 builtins: Iterable[str] = ()) -> None:
        self.kind = kind
        self.group = group
        self._builtins = tuple(builtins)
        self._entries: dict[str, T] = {}
        self._plugins: dict[str, str] = {}  # name -> the entry point it came from
        self._loaded = False
        self._loading_plugin: str | None = None

    # -- adding -----------------------------------------------------------------------
    def add(self, name: str, obj: T) -> T:
        """Register ``obj`` as ``name`` and return it. Registering the same object twice is
        a no-op; another object under a taken name is an error."""
        if not isinstance(name, str) or not name:
            raise AssayValueError(f"A {self.kind} needs a non-empty string name; got {name!r}.")
        known = self._entries.get(name)
        if known is not None and known is not obj:
            raise AssayValueError(f"A {self.kind} named {name!r} is already registered "
                                  f"({_describe(known)}); choose another name.")
        self._entries[name] = obj
        if self._loading_plugin is not None:
            self._plugins[name] = self._loading_plugin
        return obj

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator form of :meth:`add`; without ``name``, the object's ``name``
        attribute is used (``@CHECKS.register()`` on a check class)."""
        def decorate(obj: T) -> T:
            return self.add(name if name is not None else getattr(obj, "name", ""), obj)
        return decorate

    # -- looking up -------------------------------------------------------------------
    def lookup(self, name: str) -> T:
        """The entry called ``name``; an unknown one is an ``AssayValueError`` listing the
        registered names."""
        self._load()
        if name not in self._entries:
            raise AssayValueError(f"Unknown {self.kind} {name!r}; registered {self.kind}s: "
                                  f"{self.names()}.")
        return self._entries[name]

    def names(self) -> list[str]:
        """The registered names, sorted."""
        self._load()
        return sorted(self._entries)

    def origin(self, name: str) -> str:
        """Where ``name`` came from: "assay", or the entry point of the package that
        added it."""
        self._load()
        return self._plugins.get(name, "assay")

    def __getitem__(self, name: str) -> T:
        self._load()
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        self._load()
        return iter(dict(self._entries))

    def __len__(self) -> int:
        self._load()
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, group={self.group!r}, {len(self)} entries)"

    # -- loading ----------------------------------------------------------------------
    def reload(self) -> None:
        """Forget the plug-ins and read the entry points again (after a package was
        installed into the running interpreter; tests replace :func:`entry_points`). A
        plug-in module that registered its entries when imported is not imported again."""
        if not self._loaded:
            self._load()
            return
        for name in self._plugins:
            del self._entries[name]
        self._plugins.clear()
        if self.group is not None:
            for entry in entry_points(self.group):
                self._load_plugin(entry)

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True  # first, so that the modules imported here may register
        for module in self._builtins:
            importlib.import_module(module)
        if self.group is not None:
            for entry in entry_points(self.group):
                self._load_plugin(entry)

    def _load_plugin(self, entry: metadata.EntryPoint) -> None:
        source = _entry_text(entry)
        if entry.name in self._entries:
            warnings.warn(f"The {self.kind} plug-in {source} is left out: {entry.name!r} is "
                          f"already a {self.kind} of {self.origin(entry.name)}, and a plug-in "
                          "cannot replace one. Fix: register it under another name.",
                          AssayWarning, stacklevel=3)
            return
        before = dict(self._entries)
        self._loading_plugin = source
        try:
            obj = entry.load()
            own_name = getattr(obj, "name", entry.name)
            if not isinstance(obj, types.ModuleType) and own_name != entry.name:
                # A check is looked up by the entry's name but reports its own.
                warnings.warn(f"The {self.kind} plug-in {source} is left out: it names itself "
                              f"{own_name!r}. Fix: give the entry point the same name.",
                              AssayWarning, stacklevel=3)
            elif not isinstance(obj, types.ModuleType):
                self.add(entry.name, obj)
        except Exception as err:  # a broken plug-in must not take the built-ins down
            self._entries = before
            warnings.warn(f"The {self.kind} plug-in {source} is left out: it failed to load "
                          f"({type(err).__name__}: {err}).", AssayWarning, stacklevel=3)
        finally:
            self._loading_plugin = None


def entry_points(group: str) -> list[metadata.EntryPoint]:
    """The installed packages' entry points in ``group`` (a seam the tests replace)."""
    return list(metadata.entry_points(group=group))


def _entry_text(entry: metadata.EntryPoint) -> str:
    package = getattr(entry.dist, "name", None) if getattr(entry, "dist", None) else None
    return f"{entry.name!r} ({entry.value}" + (f", package {package})" if package else ")")


def _describe(obj: Any) -> str:
    module = getattr(obj, "__module__", None)
    name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return f"{module}.{name}" if module else name
