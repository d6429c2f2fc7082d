# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · Does HNS help the rare tokens, and what does it cost the frequent ones?
#
# **Question.** Notebook 02 measured how much of each embedding row's
# gradient is the non-target push (scenario 2.2). HNS removes the push of
# *easy* negatives. If the hypothesis is right, rare symbols should learn
# better under HNS; the frequent ones, whose gradient is mostly their own,
# may lose a little, since HNS no longer lowers the probability of symbols
# that are already unlikely.
#
# **Method.** The same runs as notebook 02 (one language, the profile's
# model and steps, every seed, CE and HNS). We compare them per frequency
# group of ten ranks, on two kinds of numbers:
#
# - the **training loss** of each target symbol over the steps: the
#   full-softmax cross-entropy on the training batches, recorded for both
#   objectives so they are comparable (an HNS run's own objective leaves out
#   the easy negatives and is always lower), averaged over the symbols of a
#   group and smoothed with a moving average;
# - **validation** metrics at the end of training on the whole validation
#   split: loss, top-1 accuracy, recall@5 and mean reciprocal rank (MRR).
#   The target's rank is 1 + the number of other symbols whose logit is at
#   least its own: ties count against the target, so a model that cannot
#   separate it from another symbol is not credited with a hit (with every
#   logit equal, every target ranks last).
#
# Uncertainty is the 95% Student-t interval over seeds. HNS and CE are
# compared *paired by seed* (a seed gives both runs the same initial
# weights and the same batches), so the interval of the difference reflects
# the effect of the objective rather than the luck of the draw.

# %% tags=["parameters"]
profile = "smoke"  # smoke, paper or large
device = "auto"  # auto, cpu, cuda, cuda:N or mps
seeds = None  # a list of seeds, or None for those of the profile
layout = 2.0  # the HNS margin compared with CE
smoothing = 5  # moving-average window of the training curves, in logged steps

# %%
from selfish_lib.report.notebook import Markdown, charts, display, open_study
from selfish_lib.study import frequency as cmp

study = open_study(globals())  # checks every parameter first: a typo fails here

# %% [markdown]
# ## The runs
#
# Identical configurations to notebook 02, so the run store returns the
# runs trained there (or trains them now, if this notebook runs first).

# %%
info = study.token_info()
runs = study.planned_runs()

# %% [markdown]
# ## Training loss by frequency group
#
# One panel per group of ranks (1-10 are the most frequent symbols). The
# y axes differ between panels: rare symbols have a much higher loss. A
# group's loss is averaged over its *positions* (every occurrence of one of
# its symbols weighs the same), the rule of the validation table below too.

# %%
curves = cmp.group_training_curves(runs, info, window=smoothing)
bands = cmp.curve_bands(curves)
study.figure(charts.group_curves(bands), "training_curves")

# %% [markdown]
# ## Validation by frequency group
#
# Per group, at the end of training: the number of validation positions,
# each metric for CE and HNS (mean over seeds [95% interval]), and HNS minus
# CE with its paired interval over seeds. A group with no validation
# positions shows a count of 0 and n/a, not a number. The rarest groups rest
# on few positions (ranks 61-65 may be a single symbol): their seed interval
# says nothing about that, so they also get an interval over positions.
# Ranks count ties against the target.

# %%
per_seed = cmp.group_validation(runs, info)
table = cmp.validation_table(per_seed)
small = table.loc[table["small_group"], "group"].tolist()
boot = cmp.position_bootstrap(runs, study.corpus, info, small, device=str(study.device))
table = cmp.with_position_intervals(table, boot)
display(cmp.readable_table(table).style.hide(axis="index"))

# %%
Markdown(cmp.multiplicity_note(table))

# %%
study.figure(charts.group_differences(table), "validation_differences")

# %% [markdown]
# ## What the numbers say

# %%
reading = cmp.group_reading(cmp.final_training_loss(curves), table)
study.fragment(
    {"layout": layout, "seeds": list(study.seeds), "smoothing": smoothing, **reading.summary},
)
Markdown(study.conclusion(reading))
