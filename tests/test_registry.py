"""The one registry type: add, look up, list, and plug-ins through entry points."""

import sys
import types
from importlib import metadata

import pytest

from assay import registry as registry_module
from assay.errors import AssayValueError, AssayWarning
from assay.registry import Registry


def fake_entry_points(monkeypatch, group, entries):
    """Make ``entry_points(group)`` return ``entries`` ((name, "module:attr") pairs)."""
    points = [metadata.EntryPoint(name, value, group) for name, value in entries]
    real = registry_module.entry_points
    monkeypatch.setattr(registry_module, "entry_points",
                        lambda g: points if g == group else real(g))


def test_add_lookup_and_names():
    things = Registry("thing")
    things.add("b", 2)
    assert things.register("a")(1) == 1
    assert things.names() == ["a", "b"] and things.lookup("a") == 1 and things["b"] == 2
    assert "a" in things and "c" not in things and len(things) == 2 and sorted(things) == ["a", "b"]
    assert things.origin("a") == "assay"


def test_unknown_name_lists_the_known_ones():
    things = Registry("thing")
    things.add("a", 1)
    with pytest.raises(AssayValueError, match=r"Unknown thing 'z'; registered things: \['a'\]"):
        things.lookup("z")


def test_a_taken_name_is_refused_unless_it_is_the_same_object():
    things = Registry("thing")
    obj = object()
    things.add("a", obj)
    things.add("a", obj)
    with pytest.raises(AssayValueError, match="already registered"):
        things.add("a", object())
    with pytest.raises(AssayValueError, match="non-empty string"):
        things.add("", 1)


def test_register_without_a_name_uses_the_name_attribute():
    things = Registry("thing")

    @things.register()
    class Named:
        name = "named"

    assert things.lookup("named") is Named


def test_builtins_are_imported_on_first_use(monkeypatch, tmp_path):
    things = Registry("thing", builtins=["fake_builtin_things"])
    holder = types.ModuleType("fake_registry_holder")
    holder.THINGS = things
    monkeypatch.setitem(sys.modules, "fake_registry_holder", holder)
    (tmp_path / "fake_builtin_things.py").write_text(
        "from fake_registry_holder import THINGS\nTHINGS.add('built', 7)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "fake_builtin_things", raising=False)
    assert "fake_builtin_things" not in sys.modules
    assert things.lookup("built") == 7 and "fake_builtin_things" in sys.modules


def test_a_plugin_entry_point_adds_an_object(monkeypatch):
    module = types.ModuleType("fake_plugin_pkg")
    module.Plugged = type("Plugged", (), {})
    monkeypatch.setitem(sys.modules, "fake_plugin_pkg", module)
    fake_entry_points(monkeypatch, "assay.things", [("plugged", "fake_plugin_pkg:Plugged")])
    things = Registry("thing", group="assay.things")
    things.add("own", 1)
    assert things.names() == ["own", "plugged"]
    assert things.lookup("plugged") is module.Plugged
    assert "fake_plugin_pkg:Plugged" in things.origin("plugged")


def test_a_plugin_cannot_replace_a_builtin(monkeypatch):
    module = types.ModuleType("fake_shadow_pkg")
    module.Fake = object()
    monkeypatch.setitem(sys.modules, "fake_shadow_pkg", module)
    fake_entry_points(monkeypatch, "assay.things", [("own", "fake_shadow_pkg:Fake")])
    things = Registry("thing", group="assay.things")
    real = things.add("own", object())
    with pytest.warns(AssayWarning, match="cannot replace"):
        assert things.lookup("own") is real


def test_a_plugin_module_that_registers_a_taken_name_is_left_out(monkeypatch):
    things = Registry("thing", group="assay.things")
    original = things.add("own", object())
    module = types.ModuleType("fake_rogue_pkg")
    monkeypatch.setitem(sys.modules, "fake_rogue_pkg", module)

    def rogue_load(self):
        things.add("extra", 1)
        things.add("own", object())  # raises: a taken name
        return module

    monkeypatch.setattr(metadata.EntryPoint, "load", rogue_load)
    fake_entry_points(monkeypatch, "assay.things", [("rogue", "fake_rogue_pkg")])
    with pytest.warns(AssayWarning, match="failed to load"):
        assert things.names() == ["own"]
    assert things.lookup("own") is original


def test_a_plugin_that_fails_to_import_is_a_warning_not_a_crash(monkeypatch):
    fake_entry_points(monkeypatch, "assay.things", [("broken", "no_such_module_xyz:Thing")])
    things = Registry("thing", group="assay.things")
    things.add("own", 1)
    with pytest.warns(AssayWarning, match="'broken'.*failed to load.*ModuleNotFoundError"):
        assert things.names() == ["own"]
