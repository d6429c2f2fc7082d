"""Explorers redraw from the control's value, headlessly."""

from __future__ import annotations

import pytest

from selfish_lib.report.widgets import dropdown_explorer, slider_explorer


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


# --- the explorers of notebook 06 -------------------------------------------------------------


def chart_rows(chart) -> list[dict]:
    spec = chart.to_dict(validate=False)  # the data is all we read; skip the slow validation
    return [row for rows in spec["datasets"].values() for row in rows]


@pytest.fixture(scope="module")
def sweep_tables():
    from test_sweep import fake_tables

    return fake_tables()


def test_controls_explorer_redraws_on_any_control():
    import ipywidgets as w

    from selfish_lib.report.widgets import ControlsExplorer

    a, b = w.IntText(value=1), w.IntText(value=2)
    ex = ControlsExplorer({"x": a, "y": b}, lambda x, y: Drawing(x + y))
    assert ex.current.value == 3 and ex.values() == {"x": 1, "y": 2}
    b.value = 5
    assert ex.current.value == 6
    assert [o["data"]["text/plain"] for o in ex.output.outputs] == ["drawing of 6"]
    with pytest.raises(ValueError, match="controls"):
        ControlsExplorer({}, Drawing)


def test_layout_explorer_highlights_the_slider_layout_and_the_schedule(sweep_tables):
    from selfish_lib.report.widgets import layout_explorer

    ex = layout_explorer(sweep_tables, layout=2.0)
    slider, dropdown = ex.controls["layout"], ex.controls["schedule"]
    assert list(slider.options) == [("1", 1.0), ("2", 2.0), ("∞ (CE)", float("inf"))]
    assert {r["label"] for r in chart_rows(ex.current) if r.get("chosen")} == {"2"}
    slider.value = float("inf")
    assert {r["label"] for r in chart_rows(ex.current) if r.get("chosen")} == {"∞ (CE)"}
    assert {r["arm"] for r in chart_rows(ex.current) if "pc1" in r} == {"CE"}
    assert len(ex.output.outputs) == 1
    dropdown.value = "cosine"
    assert slider.disabled
    assert {r["label"] for r in chart_rows(ex.current) if r.get("chosen")} == {"cosine 8→2"}
    dropdown.value = "constant"
    assert not slider.disabled
    assert {r["label"] for r in chart_rows(ex.current) if r.get("chosen")} == {"∞ (CE)"}
    with pytest.raises(ValueError, match="layout=3.0"):
        layout_explorer(sweep_tables, layout=3.0)


def test_toy_explorer_redraws_the_exclusions():
    from selfish_lib.report.widgets import toy_layout_explorer
    from selfish_lib.study import toy

    example = toy.toy_example()
    ex = toy_layout_explorer(example, [0.0, 2.0, float("inf")], value=float("inf"))

    def n_excluded():
        return sum(1 for r in chart_rows(ex.current) if r.get("status") == "excluded")

    assert n_excluded() == 0
    ex.control.value = 2.0
    assert n_excluded() == int(toy.toy_gradients(example, 2.0)["excluded"].sum()) > 0
    ex.control.value = 0.0
    assert n_excluded() == len(example.logits) - 2  # all but the target and the one above it


def test_nucleus_calculator_outputs_the_margin():
    import math

    from selfish_lib.report.widgets import nucleus_calculator

    ex = nucleus_calculator(130, 0.9, layouts=[2.0, 8.0, float("inf")])

    def shown() -> str:
        return ex.output.outputs[-1]["data"]["text/markdown"]

    assert f"**{math.log(130) - math.log(0.1):.3f}**" in shown()
    assert "8, ∞ (CE)" in shown()
    ex.controls["vocab_size"].value = 65
    ex.controls["top_p"].value = 0.99
    assert f"**{math.log(65) - math.log(0.01):.3f}**" in shown()
    assert "∞ (CE)" in shown() and "8," not in shown()


def test_live_redraws_of_altair_charts_skip_the_static_svg():
    import altair as alt
    import pandas as pd

    from selfish_lib.report import charts

    charts.use_offline_renderer()
    data = pd.DataFrame({"x": [1, 2, 3], "y": [3, 1, 2]})
    ex = dropdown_explorer(
        {"bars": "bar", "points": "point"},
        lambda mark: getattr(alt.Chart(data), f"mark_{mark}")().encode(x="x:Q", y="y:Q"),
    )
    ex.control.value = "point"
    (output,) = ex.output.outputs
    assert output["data"][charts.VEGALITE_V5_MIME]["mark"]["type"] == "point"
    assert "image/svg+xml" not in output["data"]
