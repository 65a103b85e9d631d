"""One validation system: the constraints of assay._params (declared once as data, shared by
attack constructors and check parameters), and a contract that makes every registered
check's parameters refuse every invalid example of their constraints."""

import math

import pytest

from assay._params import (Bool, Choice, Float, Int, ListOf, ListOrTable, Optional, Seed, Str,
                           check_choice, check_float, check_int, check_optional_seed)
from assay.checks import CHECKS, Param
from assay.errors import AssayValueError

CONSTRAINTS = [Int(), Int(low=1), Int(low=0, high=5), Float(), Float(low=0.0),
               Float(low=0.0, high=1.0, low_open=True, high_open=True), Float(high=2.0),
               Choice(("linf", "l2")), Choice((1, 2, 3)), Bool(), Str(), Seed(),
               Optional(Float(low=0.0, low_open=True)), ListOf(Float(low=0.0)),
               ListOf(Choice(("a", "b"))), ListOf(Str(), nonempty=False, unique=False),
               ListOrTable(ListOf(Float(low=0.0)), ("linf", "l2"))]


def test_the_one_message_format():
    with pytest.raises(AssayValueError) as err:
        Float(low=0.0).check("eps", -1, "PGD")
    assert str(err.value) == ("The 'eps' parameter of PGD must be a finite number >= 0.0. "
                              "Got -1 instead.")
    with pytest.raises(AssayValueError, match=r"must be one of \{'linf', 'l2'\}\. Got 'l3'"):
        Choice(("linf", "l2")).check("norm", "l3", "PGD")
    with pytest.raises(AssayValueError, match=r"Got \[0.1, 0.1\] instead: 0.1 is listed more"):
        ListOf(Float()).check("eps", [0.1, 0.1], "check 'robustness'")


@pytest.mark.parametrize("constraint", CONSTRAINTS, ids=repr)
def test_each_constraint_allows_its_example_and_refuses_its_invalid_examples(constraint):
    assert constraint.allows(constraint.example())
    bad = constraint.invalid_examples()
    assert bad
    for value in bad:
        with pytest.raises(AssayValueError, match="The 'p' parameter of owner must be"):
            constraint.check("p", value, "owner")


def test_values_are_normalised():
    assert isinstance(Float().check("x", 1, "f"), float)
    assert ListOf(Float()).check("x", [1, 2], "f") == [1.0, 2.0]
    table = ListOrTable(ListOf(Float()), ("linf", "l2")).check("x", {"l2": [1]}, "f")
    assert table == {"l2": [1.0]} and isinstance(table["l2"][0], float)
    assert Optional(Float()).check("x", None, "f") is None
    with pytest.raises(AssayValueError, match="listed more than once"):
        ListOf(Float()).check("x", [1, 1.0], "f")  # the same radius twice


def test_types_are_strict():
    for value, constraint in [(True, Int()), (1.5, Int()), (True, Float()), (math.nan, Float()),
                              (1, Bool()), (True, Choice((1, 2))), (1.0, Choice((1, 2))),
                              ("x", ListOf(Str())), ({}, ListOrTable(ListOf(Float()), ("a",))),
                              ({"b": [1.0]}, ListOrTable(ListOf(Float()), ("a",)))]:
        assert not constraint.allows(value), (value, constraint)


def test_the_check_functions_are_the_constraints():
    assert check_int("n", 3, "f", low=1) == 3 and check_float("x", 2, "f") == 2.0
    assert check_optional_seed("seed", None, "f") is None
    assert check_choice("norm", "l2", ("linf", "l2"), "f") == "l2"
    with pytest.raises(AssayValueError, match=r"'n' parameter of f must be an int in \[1, 3\]"):
        check_int("n", 4, "f", low=1, high=3)
    with pytest.raises(AssayValueError, match="'seed' parameter of f must be None or an int"):
        check_optional_seed("seed", -1, "f")


def test_a_param_kind_names_its_constraint():
    assert Param("n", "int", None, "", low=1).constraint == Optional(Int(low=1))
    assert Param("e", "list[float]", [0.1], "", low=0.0).constraint == ListOf(Float(low=0.0))
    assert Param("s", "list[int]", [1], "", allowed=(1, 2)).constraint == ListOf(Choice((1, 2)))
    assert Param("m", "str", "a", "", allowed=("a", "b")).constraint == Choice(("a", "b"))
    assert Param("t", "float-list-or-table", [0.1], "", allowed=("linf",), low=0.0).constraint \
        == ListOrTable(ListOf(Float(low=0.0)), ("linf",))
    with pytest.raises(AssayValueError, match="unknown kind 'list\\[bool\\]'"):
        Param("b", "list[bool]", [True], "")


BUILTIN_CHECKS = [name for name in CHECKS.names()
                  if CHECKS[name].__module__.startswith("assay.checks.")]


def test_the_builtin_checks_are_found():
    assert len(BUILTIN_CHECKS) >= 8 and "robustness" in BUILTIN_CHECKS


@pytest.mark.parametrize("name", BUILTIN_CHECKS)
def test_every_check_parameter_refuses_every_invalid_example(name):
    check = CHECKS[name]()
    for param in check.params:
        assert param.constraint.allows(param.default), param.name
        for bad in param.constraint.invalid_examples():
            with pytest.raises(AssayValueError, match=(
                    f"check '{name}': .*The '{param.name}' parameter must be")):
                check.resolve_params({param.name: bad})
                pytest.fail(f"{name} accepted {param.name}={bad!r}")
