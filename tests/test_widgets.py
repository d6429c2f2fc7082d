"""Explorers redraw from the control's value, headlessly."""

from __future__ import annotations

import pytest

from selfish_lib.widgets import dropdown_explorer, slider_explorer


class Drawing:
    """A stand-in chart with a mimebundle, so output capture can be checked."""

    def __init__(self, value) -> None:
        self.value = value

    def _repr_mimebundle_(self, include=None, exclude=None):
        return {"text/plain": f"drawing of {self.value}"}


def test_dropdown_redraws_on_change():
    calls = []

    def build(v):
        calls.append(v)
        return Drawing(v)

    ex = dropdown_explorer({"a": 1, "b": 2}, build, value=2)
    assert ex.current.value == 2 and calls == [2]
    ex.control.value = 1
    assert ex.current.value == 1 and calls == [2, 1]
    texts = [o["data"]["text/plain"] for o in ex.output.outputs]
    assert texts == ["drawing of 1"]  # the old drawing was replaced, not appended


def test_slider_over_discrete_values():
    ex = slider_explorer([0.5, 2.0, float("inf")], Drawing, value=2.0)
    ex.control.value = float("inf")
    assert ex.current.value == float("inf")
    assert ex.output.outputs[-1]["data"]["text/plain"] == "drawing of inf"


def test_bad_values_are_rejected():
    with pytest.raises(ValueError, match="value=3"):
        dropdown_explorer({"a": 1}, Drawing, value=3)
    with pytest.raises(ValueError, match="values"):
        slider_explorer([], Drawing)
