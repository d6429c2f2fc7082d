# %% [markdown]
# # 02 · Where does each embedding row's gradient come from?
#
# **Question.** Notebook 01 split the gradient of a tied embedding row into
# three scenarios: (1) the row is read as input, (2.1) it is the target
# output row, (2.2) it is a non-target output row. The hypothesis says that
# for rare symbols scenario 2.2 dominates. Here we *measure* the split, in
# real training runs, for plain cross-entropy (CE) and for HNS.
#
# **Method.** During training, every `scenario_interval` steps, the library
# reads two gradients that the backward pass computes anyway (the gradient
# of the logits and the gradient arriving at the embedding lookup) and
# splits the gradient of the tied matrix into the three scenarios, row by
# row. The split is exact: the tests check in float64 that the three parts
# add up to the autograd gradient to 1e-10, for CE and HNS, with ignored
# positions and on bilingual batches. Here we sum each scenario's gradient
# norm over the logged steps of a run, then average over seeds.

# %% tags=["parameters"]
profile = "smoke"  # smoke, paper or large
device = "auto"  # auto, cpu, cuda or mps
seeds = None  # a list of seeds, or None for those of the profile
results_dir = "../results"  # the run store shared by the notebooks
data_path = None  # the corpus file, or None for SELFISH_DATA, the cache or a download
progress = True  # progress bars while training
layout = 2.0  # the HNS margin compared with CE
report_dir = None  # set by the pipeline: where figures and summary numbers go

# %%
from IPython.display import Markdown, display

from selfish_lib.engine.corpus import load_corpus
from selfish_lib.engine.losses import check_layout
from selfish_lib.engine.runs import describe_runs, get_or_train_grid
from selfish_lib.report import charts, pipeline, widgets
from selfish_lib.study import gradients as sc

charts.use_offline_renderer()
# Check every parameter before any work, so a typo fails here with a clear message.
study = pipeline.check_study(profile, seeds, device)
layout = check_layout(layout, finite=True)

# %% [markdown]
# ## The runs
#
# One language, the profile's model and steps, every seed, for both
# objectives. The run store trains what is missing and loads the rest, so
# notebook 03 reuses these runs.

# %%
corpus = load_corpus(data_path)
info = corpus.token_info()
runs = get_or_train_grid(
    study.objective_configs("single", layout),
    corpus=corpus,
    results_dir=results_dir,
    device=device,
    progress=progress,
)
display(describe_runs(runs, info))

# %% [markdown]
# ## Each scenario, token by token
#
# The summed norm of each scenario's gradient per symbol, symbols in order of
# their training frequency (most frequent on the left), CE and HNS side by
# side. Bars show the spread over seeds (95% t interval).

# %%
tokens = sc.per_token_summary(runs, info)
by_rank = charts.scenario_norms_by_rank(tokens)
charts.save_figure(by_rank, report_dir, "02_scenario_norms_by_rank")
by_rank

# %% [markdown]
# ## The share of scenario 2.2 by frequency group
#
# Within each group of ten ranks, the share of the non-target push in the
# summed norms of the three scenarios. Above one half, scenario 2.2 carries
# more gradient than scenarios 1 and 2.1 together. Points are seeds; the bar
# is the mean with its 95% interval.

# %%
per_seed, shares = sc.per_group_share(runs, info)
share_chart = charts.nontarget_share_by_group(per_seed, shares)
charts.save_figure(share_chart, report_dir, "02_nontarget_share_by_group")
share_chart

# %%
columns = ["objective", "group", "share_nontarget", "share_nontarget_lo", "share_nontarget_hi"]
display(shares[columns + ["nontarget_over_own", "n_seeds"]].style.format(precision=3))

# %% [markdown]
# ## Over training
#
# Each scenario's gradient norm at the logged steps, for one symbol (pick it
# in the menu when the notebook runs live; the report shows the default
# three: the most frequent, the median and the rarest symbol).

# %%
curves = sc.step_curves(runs, info)
defaults = sc.default_tokens(info)
labels = {f"{row.display} (rank {row.rank})": row.token for row in info.itertuples()}
explorer = widgets.scenario_curve_explorer(curves, info, labels, value=defaults[-1])
explorer.widget

# %%
static_curves = charts.scenario_curves(curves, info, defaults)
charts.save_figure(static_curves, report_dir, "02_scenario_curves")
static_curves

# %% [markdown]
# ## What the numbers say

# %%
reading = sc.reading(per_seed, shares, rare_groups=("51-60", "61-65"))
pipeline.write_fragment(report_dir, "02_gradient_scenarios", reading.summary)
Markdown(reading.text)
