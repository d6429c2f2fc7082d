# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

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
device = "auto"  # auto, cpu, cuda, cuda:N or mps
seeds = None  # a list of seeds, or None for those of the profile
layout = 2.0  # the HNS margin compared with CE

# %%
from selfish_lib.report.notebook import Markdown, charts, display, open_study, widgets
from selfish_lib.study import gradients as sc

study = open_study(globals())  # checks every parameter first: a typo fails here

# %% [markdown]
# ## The runs
#
# One language, the profile's model and steps, every seed, for both
# objectives. The run store trains what is missing and loads the rest, so
# notebook 03 reuses these runs.

# %%
info = study.token_info()
runs = study.planned_runs()

# %% [markdown]
# ## Each scenario, token by token
#
# The summed norm of each scenario's gradient per symbol, symbols in order of
# their training frequency (most frequent on the left), CE and HNS side by
# side. Bars show the spread over seeds (95% t interval).

# %%
tokens = sc.per_token_summary(runs, info)
study.figure(charts.scenario_norms_by_rank(tokens), "scenario_norms_by_rank")

# %% [markdown]
# ## The share of scenario 2.2 by frequency group
#
# Within each group of ten ranks, the share of the non-target push in the
# summed norms of the three scenarios. Above one half, scenario 2.2 carries
# more gradient than scenarios 1 and 2.1 together. Points are seeds; the bar
# is the mean with its 95% interval.

# %%
per_seed, shares = sc.per_group_share(runs, info)
study.figure(charts.nontarget_share_by_group(per_seed, shares), "nontarget_share_by_group")

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
study.figure(charts.scenario_curves(curves, info, defaults), "scenario_curves")

# %% [markdown]
# ## What the numbers say

# %%
reading = sc.reading(per_seed, shares, rare_groups=("51-60", "61-65"))
study.fragment(reading.summary)
Markdown(study.conclusion(reading))
