"""ipywidgets explorers: a control (dropdown, slider) that redraws a chart from stored results.

Every explorer is a ``ChartExplorer``: a control, an output area and a
function from the control's value to a chart. Redrawing only calls that
function on tables already in memory, so it is instant, and the explorer can
be driven without a browser (set ``control.value``; read ``current``), which
is how the tests exercise the callbacks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ipywidgets as widgets


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
        # Replace the outputs rather than clear_output(): that one defers to the
        # frontend and would keep the old chart when no browser is attached.
        self.output.outputs = ()
        self.output.append_display_data(self.current)

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
    from . import charts

    return dropdown_explorer(
        labels,
        lambda token: charts.scenario_curves(curves, token_info, [token]),
        value,
        description="symbol",
    )
