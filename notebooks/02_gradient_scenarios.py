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
# add up to the autograd gradient within a tolerance of 1e-10, for CE and HNS, with ignored
# positions and on bilingual batches.
#
# **What is measured.** At a logged step, scenario *s* gives row *j* of the
# tied matrix the vector *g*<sub>*s*</sub>(*j*) = Σ<sub>*n*</sub>
# *c*<sub>*s*,*n*</sub>(*j*), a sum over the batch's positions *n* (for
# 2.2, *c*<sub>*n*</sub>(*j*) = (∂*L*/∂*z*<sub>*n*</sub>)<sub>*j*</sub>
# *h*<sub>*n*</sub> at every position whose target is not *j*). A
# scenario's **size** for a group of rows is
#
# - **summed** (the definition the claims use): ‖*g*<sub>*s*</sub>(*j*)‖,
#   the norm of what the optimizer receives, summed over the group's rows
#   and the logged steps: contributions that point different ways cancel;
# - **per-position** (beside it): Σ<sub>*n*</sub>
#   ‖*c*<sub>*s*,*n*</sub>(*j*)‖, summed alike: nothing cancels.
#
# The share of scenario 2.2 is its size over the sum of the three sizes.
# Both are averaged over seeds with a 95% t interval.

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
# ## The two definitions side by side
#
# The same logged steps, measured both ways. Where the per-position share is
# much higher, the non-target pushes of different positions point in
# different directions and largely cancel in the summed vector the
# optimizer receives: the noise is there, but a good part of it averages out
# within a batch.

# %%
side = sc.definitions_side_by_side(shares)
study.figure(charts.share_definitions(side), "share_definitions")

# %% [markdown]
# ## How the rows actually move: the Adam update
#
# The hypothesis is about how rows *move*, and AdamW does not move a row in
# proportion to its gradient: it divides every coordinate by the root of
# its running mean squared gradient, so rows with small gradients (rare
# symbols) move much more per unit of gradient. The log records the applied
# update of every row and splits it exactly: the decoupled weight decay,
# the part earlier steps left in the first moment (momentum), and this
# step's gradient, which AdamW scales coordinate-wise by one factor, so it
# splits into the three scenarios exactly. Left: update norm over gradient
# norm per group; right: scenario 2.2's share of this step's part of the
# update.

# %%
study.figure(charts.update_view(shares), "update_view")

# %%
update_columns = ["objective", "group", "update_over_grad", "update_share_nontarget",
                  "momentum_share", "n_seeds"]  # fmt: skip
display(shares[update_columns].style.format(precision=3))

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
