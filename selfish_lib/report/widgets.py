"""ipywidgets explorers: a control (dropdown, slider) that redraws a chart from stored results.

Every explorer is a ``ChartExplorer``: a control, an output area and a
function from the control's value to a chart (a ``ControlsExplorer`` when
several controls feed one chart). Redrawing only calls that
function on tables already in memory, so it is instant, and the explorer can
be driven without a browser (set ``control.value``; read ``current``), which
is how the tests exercise the callbacks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import altair as alt
import ipywidgets as widgets
from IPython.display import Markdown

from ..study.layout import CONSTANT, SweepTables, layout_label
from ..study.toy import ToyLogits, nucleus_margin_text, toy_gradients
from . import charts
from .charts.core import live_output


def _show(output: widgets.Output, obj: Any) -> None:
    """Make ``obj`` the only thing ``output`` displays."""
    # Replace the outputs rather than clear_output(): that one defers to the
    # frontend and would keep the old chart when no browser is attached.
    if isinstance(obj, alt.TopLevelMixin):
        output.outputs = (live_output(obj),)
        return
    output.outputs = ()
    output.append_display_data(obj)


class ChartExplorer:
    """A control whose value selects what ``build`` draws into an output area."""

    def __init__(self, control: widgets.ValueWidget, build: Callable[[Any], Any]) -> None:
        self.control, self.build = control, build
        self.output = widgets.Output()
        self.current: Any = None  # the last object drawn
        self.widget = widgets.VBox([control, self.output])
        control.observe(self._on_change, names="value")
        self.redraw()

    def _on_change(self, change: dict) -> None:
        self.redraw()

    def redraw(self) -> None:
        """Build the object for the control's current value and show it."""
        self.current = self.build(self.control.value)
        _show(self.output, self.current)

    def _repr_mimebundle_(self, **kwargs) -> dict:
        return self.widget._repr_mimebundle_(**kwargs)


def dropdown_explorer(
    options: Mapping[str, Any] | Sequence[tuple[str, Any]],
    build: Callable[[Any], Any],
    value: Any = None,
    description: str = "",
) -> ChartExplorer:
    """A dropdown over ``options`` (label -> value) redrawing ``build(value)``."""
    items = list(options.items()) if isinstance(options, Mapping) else list(options)
    if not items:
        raise ValueError("invalid options=[]: expected at least one option")
    values = [v for _, v in items]
    if value is not None and value not in values:
        raise ValueError(f"invalid value={value!r}: expected one of {values!r}")
    control = widgets.Dropdown(
        options=items,
        value=values[0] if value is None else value,
        description=description,
        style={"description_width": "initial"},
    )
    return ChartExplorer(control, build)


def slider_explorer(
    values: Sequence[Any],
    build: Callable[[Any], Any],
    value: Any = None,
    description: str = "",
) -> ChartExplorer:
    """A slider over the discrete ``values`` redrawing ``build(value)``."""
    values = list(values)
    if not values:
        raise ValueError("invalid values=[]: expected at least one value")
    if value is not None and value not in values:
        raise ValueError(f"invalid value={value!r}: expected one of {values!r}")
    control = widgets.SelectionSlider(
        options=values,
        value=values[0] if value is None else value,
        description=description,
        continuous_update=False,
        style={"description_width": "initial"},
    )
    return ChartExplorer(control, build)


def scenario_curve_explorer(curves, token_info, labels: dict, value=None) -> ChartExplorer:
    """A dropdown over symbols that redraws ``charts.scenario_curves`` for the chosen one."""
    return dropdown_explorer(
        labels,
        lambda token: charts.scenario_curves(curves, token_info, [token]),
        value,
        description="symbol",
    )


class ControlsExplorer:
    """Several named controls whose values select what ``build(**values)`` draws.

    The multi-control sibling of ``ChartExplorer``: any control's change redraws;
    ``controls`` maps each keyword of ``build`` to its widget, ``values()`` reads them.
    """

    def __init__(
        self, controls: Mapping[str, widgets.ValueWidget], build: Callable[..., Any]
    ) -> None:
        if not controls:
            raise ValueError("invalid controls={}: expected at least one control")
        self.controls, self.build = dict(controls), build
        self.output = widgets.Output()
        self.current: Any = None  # the last object drawn
        self.widget = widgets.VBox([widgets.HBox(list(self.controls.values())), self.output])
        for control in self.controls.values():
            control.observe(self._on_change, names="value")
        self.redraw()

    def _on_change(self, change: dict) -> None:
        self.redraw()

    def values(self) -> dict[str, Any]:
        """The current value of every control, by keyword."""
        return {name: control.value for name, control in self.controls.items()}

    def redraw(self) -> None:
        """Build the object for the controls' current values and show it."""
        self.current = self.build(**self.values())
        _show(self.output, self.current)

    def _repr_mimebundle_(self, **kwargs) -> dict:
        return self.widget._repr_mimebundle_(**kwargs)


def layout_explorer(
    tables: SweepTables, layout: float | None = None, schedule: str = "constant"
) -> ControlsExplorer:
    """The sweep explorer of notebook 06: a slider over the swept layouts and a dropdown
    (constant layout, or the scheduled run) redrawing ``charts.layout_explorer_chart``
    from the precomputed ``study.layout.SweepTables``. The slider is disabled while the
    scheduled run is shown, since the schedule fixes its own layouts."""
    layouts = tables.layouts
    if layout is None:
        layout = layouts[0]
    tables.arm(layout, CONSTANT)  # validates the layout against the grid
    tables.arm(layout, schedule)  # validates the schedule
    slider = widgets.SelectionSlider(
        options=[(layout_label(v), v) for v in layouts],
        value=layout,
        description="layout ℓ",
        continuous_update=False,
        style={"description_width": "initial"},
        layout=widgets.Layout(width="420px"),
    )
    names = tables.table.drop_duplicates("schedule").set_index("schedule")["label"]
    options = [("constant layout (slider)", CONSTANT)] + [
        (f"scheduled: {names[kind]}", kind) for kind in tables.schedules if kind != CONSTANT
    ]
    dropdown = widgets.Dropdown(
        options=options, value=schedule, description="run", style={"description_width": "initial"}
    )
    slider.disabled = schedule != CONSTANT

    def disable_slider(change: dict) -> None:
        slider.disabled = change["new"] != CONSTANT

    # Registered before the explorer's own observer, so the slider state is right
    # when the chart is redrawn.
    dropdown.observe(disable_slider, names="value")
    return ControlsExplorer(
        {"layout": slider, "schedule": dropdown},
        lambda layout, schedule: charts.layout_explorer_chart(tables, layout, schedule),
    )


def toy_layout_explorer(
    example: ToyLogits, layouts: Sequence[float], value: float | None = None
) -> ChartExplorer:
    """A slider over ``layouts`` (plus ``value`` if it is not one of them) redrawing the
    toy explainer of notebook 06: the logits, the cut, and each logit's gradient under
    HNS and CE (``study.toy.toy_gradients``)."""
    values = list(layouts)
    if value is not None and value not in values:  # any layout can be the starting point
        values = sorted([*values, value])
    return slider_explorer(
        values,
        lambda layout: charts.toy_gradient_chart(toy_gradients(example, layout), layout),
        value,
        description="layout ℓ",
    )


def nucleus_calculator(
    vocab_size: int = 130, top_p: float = 0.9, layouts: Sequence[float] = ()
) -> ControlsExplorer:
    """Vocabulary size and top-p in, the nucleus margin ln V − ln(1 − p) out (as Markdown,
    with the swept ``layouts`` at or beyond it); a bad input shows its error instead."""
    layouts = list(layouts)
    size = widgets.BoundedIntText(
        value=vocab_size, min=2, max=10**9, description="vocabulary size V"
    )
    mass = widgets.BoundedFloatText(
        value=top_p, min=0.001, max=0.999999, step=0.01, description="top-p"
    )
    for control in (size, mass):
        control.style = {"description_width": "initial"}
    return ControlsExplorer(
        {"vocab_size": size, "top_p": mass},
        lambda vocab_size, top_p: Markdown(nucleus_margin_text(vocab_size, top_p, layouts)),
    )
