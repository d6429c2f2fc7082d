"""Charts: the figure builders encode the intended fields, the offline renderer
returns both an interactive spec and an SVG, and static copies are written."""

from __future__ import annotations

import json

import altair as alt
import pandas as pd
import pytest

from selfish_lib.engine.validation import ParameterError
from selfish_lib.report import charts
from selfish_lib.study import hypothesis as we


@pytest.fixture
def offline():
    """Enable the offline renderer for one test, then restore altair's global state."""
    renderer, theme = alt.renderers.active, alt.theme.active
    transformer = alt.data_transformers.active
    charts.use_offline_renderer()
    yield
    alt.renderers.enable(renderer)
    alt.theme.enable(theme)
    alt.data_transformers.enable(transformer)


def layers(spec: dict) -> list[dict]:
    """The unit specs of a (faceted, layered) spec."""
    inner = spec.get("spec", spec)
    return inner.get("layer", [inner])


def test_frequency_by_rank_shows_every_symbol_in_rank_order_on_a_log_scale(corpus):
    freq = corpus.frequencies
    spec = charts.chart_spec(charts.frequency_by_rank(freq))
    enc = spec["encoding"]
    assert enc["x"]["field"] == "display"
    assert enc["x"]["sort"] == freq.sort_values("rank")["display"].tolist()
    assert len(enc["x"]["sort"]) == corpus.vocab_size == 65
    assert enc["y"]["field"] == "count"
    assert enc["y"]["scale"]["type"] == "log"
    assert enc["y"]["stack"] is None  # stacked bars vanish on a log scale
    assert {t["field"] for t in enc["tooltip"]} >= {"rank", "display", "count", "share"}
    assert enc["color"]["field"] == "group"
    (rows,) = spec["datasets"].values()
    assert len(rows) == 65


def test_rank_group_table_partitions_the_tokens(corpus):
    freq = corpus.frequencies
    table = charts.rank_group_table(freq)
    assert table["group"].tolist() == list(dict.fromkeys(freq.sort_values("rank")["group"]))
    assert table["share"].sum() == pytest.approx(1.0)
    assert table["count"].sum() == freq["count"].sum()
    assert table["symbols"].sum() == len(freq)
    assert table["first_rank"].is_monotonic_increasing


def test_group_shares_layers_bars_and_percentage_labels(corpus):
    spec = charts.chart_spec(charts.group_shares(corpus.frequencies))
    bars, labels = spec["layer"]
    assert bars["mark"]["type"] == "bar" and labels["mark"]["type"] == "text"
    for layer in (bars, labels):
        assert layer["encoding"]["x"]["field"] == "group"
        assert layer["encoding"]["y"]["field"] == "share"
        assert layer["encoding"]["y"]["scale"]["type"] == "log"
    assert labels["encoding"]["text"]["format"].endswith("%")


def test_worked_example_chart_facets_scenarios_and_marks_excluded_rows():
    norms = we.gradient_norms(we.default_example(), 2.0)
    spec = charts.chart_spec(charts.worked_example_chart(norms))
    assert spec["facet"]["column"]["field"] == "scenario_label"
    shade, bars, tags = layers(spec)
    assert shade["mark"]["type"] == "rect" and tags["mark"]["type"] == "text"
    assert "excluded" in json.dumps(shade["transform"])
    color = bars["encoding"]["color"]
    assert color["field"] == "objective"
    assert color["scale"]["domain"] == list(charts.OBJECTIVE_COLORS)
    assert color["scale"]["range"] == list(charts.OBJECTIVE_COLORS.values())
    assert bars["encoding"]["y"]["field"] == "grad_norm"


def test_shared_palettes_cover_the_scenarios_and_objectives():
    from selfish_lib.engine.scenarios import SCENARIO_LABELS, SCENARIOS

    assert list(charts.SCENARIO_COLORS) == list(SCENARIOS)
    assert charts.scenario_scale(labels=True).to_dict()["domain"] == [
        SCENARIO_LABELS[s] for s in SCENARIOS
    ]
    assert set(charts.OBJECTIVE_COLORS) == {"CE", "HNS"}


def test_language_colours_and_titles_are_the_same_in_every_chart():
    from selfish_lib.study.readings import LANGUAGE_NAMES, METRIC_NAMES, POOLED

    assert charts.LANGUAGE_TITLES is LANGUAGE_NAMES and POOLED in charts.LANGUAGE_TITLES
    assert charts.METRIC_TITLES is METRIC_NAMES
    emb = pd.DataFrame(
        {
            "arm": "CE",
            "label": "∞ (CE)",
            "seed": 0,
            "token": [0, 1],
            "display": ["a", "a"],
            "language": ["high", "low"],
            "rank": [1, 1],
            "group": "1-10",
            "pc1": [0.0, 1.0],
            "pc2": [1.0, 0.0],
        }
    )
    sweep = charts.chart_spec(charts.layout_embedding_chart(emb, "CE"))["spec"]["encoding"]
    assert sweep["color"]["scale"]["range"] == list(charts.LANGUAGE_COLORS.values())
    assert sweep["color"]["scale"]["domain"] == [
        charts.LANGUAGE_TITLES[k] for k in charts.LANGUAGE_COLORS
    ]
    norms = emb.assign(objective="CE", symbol="a", norm=1.0, norm_lo=0.9, norm_hi=1.1, n_seeds=3)
    (_, line) = layers(charts.chart_spec(charts.norms_by_rank(norms)))
    assert line["encoding"]["color"]["scale"]["range"] == list(charts.LANGUAGE_COLORS.values())
    assert line["encoding"]["color"]["scale"]["domain"] == list(charts.LANGUAGE_COLORS)


def test_offline_renderer_bundles_an_interactive_spec_and_an_svg(offline):
    chart = alt.Chart(pd.DataFrame({"a": ["x", "y"], "b": [1, 2]})).mark_bar().encode(x="a", y="b")
    data, meta = chart._repr_mimebundle_()
    assert data[charts.VEGALITE_V5_MIME]["mark"]["type"] == "bar"
    assert data["image/svg+xml"].lstrip().startswith("<svg")
    assert meta[charts.VEGALITE_V5_MIME]["embed_options"]["actions"]["editor"] is False
    # The spec recovered from the output is the one altair produced (with the theme).
    assert charts.spec_of_output(data) == chart.to_dict()
    assert chart.to_dict()["config"]["title"]["fontSize"] == 15


def test_offline_renderer_keeps_specs_vega_lite_5_cannot_compile(offline, monkeypatch):
    monkeypatch.setattr(charts.core, "_as_v5", lambda spec: None)
    chart = alt.Chart(pd.DataFrame({"a": [1, 2]})).mark_point().encode(x="a")
    data, _ = chart._repr_mimebundle_()
    assert charts.VEGALITE_V5_MIME not in data
    assert isinstance(data[charts.VEGALITE_MIME], str)  # nbformat wants a string here
    assert charts.spec_of_output(data) == chart.to_dict()
    assert "<svg" in data["image/svg+xml"]


def test_use_offline_renderer_is_idempotent_and_lifts_the_row_limit(offline):
    charts.use_offline_renderer()
    assert alt.renderers.active == charts.RENDERER
    assert alt.theme.active == charts.THEME
    big = pd.DataFrame({"a": range(6000)})
    alt.Chart(big).mark_tick().encode(x="a").to_dict()  # would raise MaxRowsError


def test_save_chart_writes_each_format_atomically(tmp_path):
    chart = alt.Chart(pd.DataFrame({"a": ["x", "y"], "b": [1, 2]})).mark_bar().encode(x="a", y="b")
    paths = charts.save_chart(chart, tmp_path / "fig" / "bars", ("svg", "png", "html", "json"))
    assert [p.name for p in paths] == ["bars.svg", "bars.png", "bars.html", "bars.json"]
    assert paths[0].read_text().lstrip().startswith("<svg")
    assert paths[1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = paths[2].read_text()
    assert "vegaEmbed" in html and '<script src="http' not in html
    assert json.loads(paths[3].read_text())["mark"]["type"] == "bar"
    assert sorted(p.name for p in (tmp_path / "fig").iterdir()) == sorted(p.name for p in paths)


def test_save_chart_rejects_unknown_formats(tmp_path):
    chart = alt.Chart(pd.DataFrame({"a": [1]})).mark_point().encode(x="a")
    with pytest.raises(ParameterError, match="formats"):
        charts.save_chart(chart, tmp_path / "x", ("svg", "gif"))
    assert not list(tmp_path.iterdir())


def test_save_figure_does_nothing_without_a_report_dir(tmp_path):
    chart = alt.Chart(pd.DataFrame({"a": [1]})).mark_point().encode(x="a")
    assert charts.save_figure(chart, None, "01_x") == []
    (path,) = charts.save_figure(chart, tmp_path, "01_x", formats=("svg",))
    assert path == tmp_path / "figures" / "01_x.svg"


def test_a_failing_conversion_leaves_no_partial_file(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("renderer crashed")

    monkeypatch.setattr(charts.core.vl_convert, "vegalite_to_png", broken)
    chart = alt.Chart(pd.DataFrame({"a": [1]})).mark_point().encode(x="a")
    with pytest.raises(RuntimeError, match="crashed"):
        charts.save_chart(chart, tmp_path / "fig", ("svg", "png"))
    assert [p.name for p in tmp_path.iterdir()] == ["fig.svg"]  # complete, and nothing else


# --- layouts that must not collide (smoke report review) ----------------------------------------


def axis_labels(svg: str) -> list[list[dict]]:
    """Per axis of a rendered SVG: its visible labels, with their anchor, x and lines."""
    import re

    axes = []
    for group in re.findall(r'<g class="mark-text role-axis-label".*?</g>', svg, re.S):
        labels = []
        for attrs, body in re.findall(r"<text([^>]*)>(.*?)</text>", group, re.S):
            if 'opacity="0"' in attrs:
                continue
            x = float(re.search(r"translate\(([-\d.e]+)", attrs).group(1))
            anchor = re.search(r'text-anchor="(\w+)"', attrs).group(1)
            size = float(re.search(r'font-size="([\d.]+)px"', attrs).group(1))
            lines = re.findall(r"<tspan[^>]*>(.*?)</tspan>", body) or [body]
            labels.append({"x": x, "anchor": anchor, "size": size, "lines": lines})
        axes.append(labels)
    return axes


def extent(label: dict) -> tuple[float, float]:
    """Left and right of a label, its widest line at 0.6 em per character (wider than
    Helvetica's digits and letters, so a pass means room to spare)."""
    width = 0.6 * label["size"] * max(len(line) for line in label["lines"])
    start = {"start": 0.0, "middle": -width / 2, "end": -width}[label["anchor"]]
    return label["x"] + start, label["x"] + start + width


def assert_no_overlap(labels: list[dict]) -> None:
    spans = sorted(extent(label) for label in labels)
    for (_, right), (left, _) in zip(spans, spans[1:], strict=False):
        assert right <= left, [label["lines"] for label in labels]


def rank_group_bands(groups: list[str]) -> pd.DataFrame:
    rows = []
    for group in groups:
        for objective in ("CE", "HNS"):
            for step in (5, 10, 15):
                rows.append(
                    {
                        "objective": objective,
                        "language": "high",
                        "group": group,
                        "step": step,
                        "loss": 4.0,
                        "loss_lo": 3.5,
                        "loss_hi": 4.5,
                    }
                )
    return pd.DataFrame(rows)


def test_training_curves_draw_one_cell_per_group_and_no_axis_under_an_empty_slot():
    import vl_convert as vlc

    groups = ["1-10", "11-20", "21-30", "31-40", "41-50", "51-60", "61-65"]  # 7: 4 + 3
    spec = charts.chart_spec(charts.group_curves(rank_group_bands(groups)))
    assert spec["facet"]["field"] == "group" and spec["facet"]["sort"] == groups
    assert spec["columns"] == 4
    assert spec["resolve"]["axis"]["x"] == "independent"  # each cell its own x axis
    svg = vlc.vegalite_to_svg(spec)
    assert svg.count(">training step</text>") == len(groups)  # one per cell, none spare
    # fewer groups than a row holds: a single row, as many columns as groups
    two = charts.chart_spec(charts.group_curves(rank_group_bands(["1-10", "61-65"])))
    assert two["columns"] == 2 and two["facet"]["sort"] == ["1-10", "61-65"]


def final_metrics_table() -> pd.DataFrame:
    rows = []
    for experiment in ("baseline", "HNS", "low-only HNS", "low-only CE"):
        for language in ("high", "low", "both"):
            row = {"experiment": experiment, "language": language}
            for metric, value in (("loss", 4.0), ("top1", 0.1), ("recall5", 0.3), ("mrr", 0.2)):
                row |= {metric: value, f"{metric}_lo": 0.0, f"{metric}_hi": 2 * value}
            rows.append(row)
    return pd.DataFrame(rows)


def test_final_metrics_put_each_language_on_two_short_lines_that_do_not_touch():
    import vl_convert as vlc

    spec = charts.chart_spec(charts.bilingual_final_metrics(final_metrics_table()))
    (x_axis,) = {json.dumps(layer["encoding"]["x"]["axis"]) for layer in layers(spec)}
    assert json.loads(x_axis)["labelExpr"] == charts.bilingual.WRAP_LABEL
    axes = axis_labels(vlc.vegalite_to_svg(spec))
    x_axes = [a for a in axes if a and a[0]["lines"][0] == "high-"]
    assert len(x_axes) == 4  # one per metric panel
    for labels in x_axes:
        lines = [label["lines"] for label in labels]
        assert lines == [["high-", "resource"], ["low-", "resource"], ["both", "languages"]]
        assert_no_overlap(labels)


def test_paired_differences_thin_their_ticks_so_labels_do_not_run_together():
    import vl_convert as vlc

    diffs = pd.DataFrame(
        [
            {"label": "rarest-to-rest centroid distance (low)", "diff": 0.0245,
             "diff_lo": 0.0077, "diff_hi": 0.0412, "n_pairs": 2, "direction": "higher"},
            {"label": "mean pairwise cosine", "diff": 0.0064, "diff_lo": -0.0114,
             "diff_hi": 0.0229, "n_pairs": 2, "direction": "indistinguishable"},
            {"label": "Spearman(norm, rank), low", "diff": -0.21, "diff_lo": -1.03,
             "diff_hi": 0.61, "n_pairs": 2, "direction": "indistinguishable"},
        ]
    )  # fmt: skip
    spec = charts.chart_spec(charts.paired_differences(diffs))
    point = layers(spec)[-1]
    axis = point["encoding"]["x"]["axis"]
    assert axis["tickCount"] == charts.geometry.DIFF_TICKS and axis["labelOverlap"] == "greedy"
    axes = [a for a in axis_labels(vlc.vegalite_to_svg(spec)) if a]
    assert len(axes) == len(diffs)
    for labels in axes:
        assert 3 <= len(labels) <= 2 * charts.geometry.DIFF_TICKS
        assert_no_overlap(labels)
