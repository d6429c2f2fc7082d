"""The parameter checks: good values pass through, bad ones raise ParameterError
naming the parameter, the value and what is allowed."""

from __future__ import annotations

import math

import pytest

from selfish_lib.engine.validation import (
    ParameterError,
    check_choice,
    check_float,
    check_int,
    check_seed,
    check_seeds,
    shown,
)


def test_parameter_error_is_a_value_error_with_name_value_and_allowed():
    err = ParameterError("lr", -3, "a real number > 0")
    assert isinstance(err, ValueError)
    assert (err.name, err.value, err.allowed) == ("lr", -3, "a real number > 0")
    assert str(err) == "invalid lr=-3: expected a real number > 0"


# --- check_choice -------------------------------------------------------------


def test_check_choice_returns_an_allowed_value():
    assert check_choice("device", "cpu", ("cpu", "cuda")) == "cpu"
    assert check_choice("layout", 2, [0, 2, math.inf]) == 2


def test_check_choice_accepts_a_generator_of_options():
    assert check_choice("mode", "b", (c for c in "abc")) == "b"


def test_check_choice_rejects_with_every_option_listed():
    with pytest.raises(ParameterError) as info:
        check_choice("profile", "huge", ["smoke", "paper", "large"])
    msg = str(info.value)
    assert "profile" in msg
    assert "'huge'" in msg
    assert "'smoke', 'paper', 'large'" in msg
    assert info.value.name == "profile" and info.value.value == "huge"


# --- check_int ----------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 1, 7, 10**12])
def test_check_int_accepts_integers_at_or_above_minimum(value):
    assert check_int("n", value, 0) == value


def test_check_int_without_minimum_accepts_negative():
    assert check_int("offset", -5) == -5


@pytest.mark.parametrize("value", [True, False, 1.0, "3", None, 2.5])
def test_check_int_rejects_non_integers_and_bools(value):
    with pytest.raises(ParameterError) as info:
        check_int("n_layer", value, 1)
    msg = str(info.value)
    assert "n_layer" in msg
    assert repr(value) in msg
    assert "an integer >= 1" in msg


def test_check_int_rejects_below_minimum_and_names_the_bound():
    with pytest.raises(ParameterError, match=r"invalid batch_size=0: expected an integer >= 1"):
        check_int("batch_size", 0, 1)


def test_check_int_minimum_is_inclusive():
    assert check_int("k", 3, 3) == 3
    with pytest.raises(ParameterError):
        check_int("k", 2, 3)


# --- check_float --------------------------------------------------------------


def test_check_float_returns_a_float_for_ints_and_floats():
    out = check_float("lr", 3, 0.0)
    assert out == 3.0 and isinstance(out, float)
    assert check_float("lr", 0.25, 0.0, 1.0) == 0.25


def test_check_float_bounds_are_inclusive_by_default():
    assert check_float("p", 0.0, 0.0, 1.0) == 0.0
    assert check_float("p", 1.0, 0.0, 1.0) == 1.0


def test_check_float_exclusive_minimum():
    with pytest.raises(ParameterError) as info:
        check_float("val_fraction", 0.0, 0.0, 1.0, min_inclusive=False)
    msg = str(info.value)
    assert "val_fraction" in msg and "0.0" in msg and "> 0.0" in msg and "<= 1.0" in msg
    assert check_float("val_fraction", 1e-9, 0.0, 1.0, min_inclusive=False) == 1e-9


@pytest.mark.parametrize("value", [-0.1, 1.1])
def test_check_float_rejects_out_of_range_and_names_the_range(value):
    with pytest.raises(ParameterError) as info:
        check_float("dropout", value, 0.0, 1.0)
    msg = str(info.value)
    assert "dropout" in msg
    assert repr(value) in msg
    assert ">= 0.0 and <= 1.0" in msg


@pytest.mark.parametrize("allow_inf", [False, True])
def test_check_float_rejects_nan_always(allow_inf):
    with pytest.raises(ParameterError, match=r"invalid x=nan"):
        check_float("x", float("nan"), allow_inf=allow_inf)


def test_check_float_rejects_inf_unless_allowed():
    with pytest.raises(ParameterError, match=r"invalid layout=inf"):
        check_float("layout", math.inf, 0.0)
    assert check_float("layout", math.inf, 0.0, allow_inf=True) == math.inf


def test_check_float_rejects_negative_inf_even_when_inf_allowed():
    with pytest.raises(ParameterError, match=r"invalid layout=-inf"):
        check_float("layout", -math.inf, allow_inf=True)


def test_check_float_allow_inf_is_stated_in_the_message():
    with pytest.raises(ParameterError, match=r"\(inf allowed\)"):
        check_float("layout", -1, 0.0, allow_inf=True)


@pytest.mark.parametrize("value", ["2", None, True, False, [1.0], 1 + 0j])
def test_check_float_rejects_non_reals(value):
    with pytest.raises(ParameterError) as info:
        check_float("temperature", value)
    assert "temperature" in str(info.value)
    assert repr(value) in str(info.value)


# --- check_seeds --------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [([0], (0,)), ((3, 1, 2), (3, 1, 2))])
def test_check_seeds_returns_a_tuple(value, expected):
    assert check_seeds("seeds", value) == expected


def test_check_seeds_accepts_range():
    assert check_seeds("seeds", range(3)) == (0, 1, 2)


@pytest.mark.parametrize(
    "value",
    [[], [1, 1], [-1], [0, True], [1.0], "012", b"01", 5, None, [0, "1"]],
)
def test_check_seeds_rejects_bad_lists(value):
    with pytest.raises(ParameterError) as info:
        check_seeds("seeds", value)
    msg = str(info.value)
    assert "seeds" in msg
    assert repr(value) in msg
    assert "distinct non-negative integers" in msg


# --- integers no run can hold, and values too long to show -------------------------------


def test_check_int_takes_a_maximum_and_names_both_bounds():
    assert check_int("bins", 1000, 1, 1000) == 1000
    with pytest.raises(ParameterError, match=r"invalid bins=1001: expected an integer >= 1 and "
                                             r"<= 1000$"):  # fmt: skip
        check_int("bins", 1001, 1, 1000)


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 10**400, -(10**400)])
def test_check_int_refuses_what_64_bits_cannot_hold_even_without_bounds(value):
    with pytest.raises(ParameterError) as info:
        check_int("offset", value)
    assert info.value.name == "offset" and "64-bit" in str(info.value)
    assert check_int("offset", 2**63 - 1) == 2**63 - 1 and check_int("offset", -(2**63))


@pytest.mark.parametrize("value", [10**400, -(10**400), 2**1024])
@pytest.mark.parametrize("allow_inf", [False, True])
def test_check_float_refuses_an_int_too_large_for_a_float_naming_it(value, allow_inf):
    with pytest.raises(ParameterError) as info:  # not OverflowError from math.isnan
        check_float("temperature", value, 0.0, allow_inf=allow_inf)
    assert info.value.name == "temperature"
    assert check_float("temperature", 10**300, 0.0) == 1e300  # a float holds this one


def test_check_seed_is_an_int_from_0_to_below_2_to_the_63():
    assert check_seed("seed", 0) == 0 and check_seed("seed", 2**63 - 1) == 2**63 - 1
    for bad in (2**63, -1, 10**20, 1.0, True, "3"):
        with pytest.raises(ParameterError, match=r"invalid seed=.*< 2\*\*63"):
            check_seed("seed", bad)


@pytest.mark.parametrize("value", [[2**63], [0, 10**20], [[1]], [0, None]])
def test_check_seeds_refuses_huge_and_unhashable_seeds_naming_them(value):
    with pytest.raises(ParameterError, match="invalid seeds=.*below 2\\*\\*63"):
        check_seeds("seeds", value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (3, "3"),
        ("x" * 200, "'" + "x" * 79 + "... (202 characters)"),
        (10**400, "<an integer of 401 digits>"),
        (10**400 - 1, "<an integer of 400 digits>"),
        (-(10**5000), "<a negative integer of 5001 digits>"),  # past Python's 4300 digits
        ([10**5000], "<list too large or too deep to show>"),
    ],
    ids=["short", "long text", "401 digits", "400 digits", "5001 digits", "in a list"],
)
def test_a_long_value_is_shown_by_its_start_and_length(value, expected):
    assert shown(value) == expected
    assert str(ParameterError("p", value, "x")) == f"invalid p={expected}: expected x"


def test_a_deeply_nested_value_is_shown_without_a_recursion_error():
    value: list = []
    for _ in range(100_000):
        value = [value]
    assert shown(value) == "<list too large or too deep to show>"
