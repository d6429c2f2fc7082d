"""Altair charts of the study: one builder per figure, one module per chapter.

``core`` holds the offline renderer (every chart carries its Vega-Lite spec for
JupyterLab and an SVG for the static HTML report), static copies and the
shared palettes; the other modules hold the figures of one notebook each.
Notebooks use them as ``charts.<name>``.
"""

from .bilingual import (
    EXPERIMENT_COLORS,
    bilingual_final_metrics,
    bilingual_learning_curves,
    probability_histogram,
    probability_mass,
)
from .comparison import group_curves, group_differences
from .core import (
    EMBED_OPTIONS,
    EXCLUDED_COLOR,
    FORMATS,
    GROUP_SCHEME,
    OBJECTIVE_COLORS,
    RENDERER,
    SCENARIO_COLORS,
    THEME,
    VEGALITE_MIME,
    VEGALITE_V5_MIME,
    chart_spec,
    javascript_bundle,
    objective_scale,
    offline_renderer,
    save_chart,
    save_figure,
    scenario_scale,
    spec_of_output,
    to_svg,
    use_offline_renderer,
)
from .geometry import (
    LANGUAGE_COLORS,
    MODEL_COLORS,
    embedding_projections,
    language_scale,
    metric_comparison,
    model_scale,
    norms_by_rank,
    paired_differences,
    unigram_probe_scatter,
)
from .hypothesis import frequency_by_rank, group_shares, rank_group_table, worked_example_chart
from .layout import (
    layout_embedding_chart,
    layout_explorer_chart,
    layout_group_chart,
    layout_metrics_chart,
    toy_gradient_chart,
)
from .scenarios import nontarget_share_by_group, scenario_curves, scenario_norms_by_rank

__all__ = [
    "EMBED_OPTIONS",
    "EXCLUDED_COLOR",
    "FORMATS",
    "GROUP_SCHEME",
    "LANGUAGE_COLORS",
    "MODEL_COLORS",
    "OBJECTIVE_COLORS",
    "RENDERER",
    "SCENARIO_COLORS",
    "THEME",
    "VEGALITE_MIME",
    "VEGALITE_V5_MIME",
    "EXPERIMENT_COLORS",
    "bilingual_final_metrics",
    "bilingual_learning_curves",
    "probability_histogram",
    "probability_mass",
    "chart_spec",
    "embedding_projections",
    "group_curves",
    "group_differences",
    "frequency_by_rank",
    "group_shares",
    "javascript_bundle",
    "language_scale",
    "layout_embedding_chart",
    "layout_explorer_chart",
    "layout_group_chart",
    "layout_metrics_chart",
    "metric_comparison",
    "model_scale",
    "norms_by_rank",
    "toy_gradient_chart",
    "nontarget_share_by_group",
    "objective_scale",
    "offline_renderer",
    "paired_differences",
    "rank_group_table",
    "save_chart",
    "save_figure",
    "scenario_curves",
    "scenario_norms_by_rank",
    "scenario_scale",
    "spec_of_output",
    "to_svg",
    "unigram_probe_scatter",
    "use_offline_renderer",
    "worked_example_chart",
]
