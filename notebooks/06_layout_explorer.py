# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 06 · How large should the layout be?
#
# **Question.** HNS has a single knob, the layout ℓ: the margin, in logit
# units, below the target's logit at which a token stops being pushed away.
# A small ℓ protects many tokens from the non-target push, including rare
# ones; a large ℓ approaches plain cross-entropy (CE, ℓ = ∞). Which layout
# helps a low-resource language most, and what does it cost the model as a
# whole?
#
# **Method.** The bilingual simulation: 2% of the training blocks are written
# in a second alphabet (token ids shifted by the vocabulary size), so the
# model has two copies of every symbol, one of them rare. One run per layout
# of a grid, plus one run whose layout follows a schedule, for every seed of
# the sweep (its steps and seeds come from the profile). Every run is
# evaluated on the whole validation split, once in each alphabet. Numbers
# are means over seeds with 95% Student-t intervals; a layout is compared
# with CE by the interval of the difference paired by seed (the same seed
# gives both runs the same initialization and the same batches).
#
# Two small tools come first: a toy that shows what a layout removes at one
# position, and a calculator for the layout beyond which HNS leaves every
# token a top-p sampler could draw untouched.

# %% tags=["parameters"]
profile = "smoke"  # smoke, paper or large
device = "auto"  # auto, cpu, cuda, cuda:N or mps
seeds = None  # a list of seeds, or None for the sweep seeds of the profile
layouts = [0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, float("inf")]  # the grid (inf: CE)
schedule = ("cosine", 8.0, 2.0)  # (kind, start, end) of the scheduled run, or None
layout = 2.0  # the layout the static figures show (one of the grid)
top_p = 0.9  # the nucleus mass of the margin calculator

# %%
from selfish_lib.report.notebook import Markdown, charts, display, open_study, widgets
from selfish_lib.study import layout as sw

study = open_study(globals())  # checks every parameter first: a typo fails here

# %% [markdown]
# ## What a layout removes, at one position
#
# Ten symbols after some context, with target `e`. HNS drops every logit
# below *z*<sub>target</sub> − ℓ (the dashed line) before the softmax. The
# gradient of the loss with respect to a logit *z*<sub>*j*</sub> is then
# *q*<sub>*j*</sub> − 1[*j* = target], where *q* is the softmax over the
# *kept* tokens only: a dropped token receives exactly zero, and the kept
# hard negatives are pushed a little harder than under CE (black ticks),
# because the same total push is now shared by fewer tokens. The gradients
# come from the library's `hns_cross_entropy` through autograd. Move the
# slider (with a running kernel) to drop the tokens one by one.

# %%
from selfish_lib.study import toy

toy_logits = toy.toy_example()
toy_explorer = widgets.toy_layout_explorer(toy_logits, toy.TOY_LAYOUTS, value=layout)
toy_explorer.widget

# %% [markdown]
# At the layout of the static figures:

# %%
toy_chart = charts.toy_gradient_chart(toy.toy_gradients(toy_logits, layout), layout)
study.figure(toy_chart, "toy_gradients")

# %% [markdown]
# ## A layout that leaves the nucleus alone
#
# Top-p (nucleus) sampling draws only from the *nucleus*: sort the tokens by
# probability, largest first (ties in any order), and keep the shortest
# prefix whose mass reaches *p*. A token outside it is never generated, so
# pushing it away is of no use to a sampler. How large must ℓ be for HNS to
# exclude only such tokens?
#
# **Claim.** With *V* tokens and 0 &lt; *p* &lt; 1, if
# ℓ ≥ ln *V* − ln(1 − *p*), then at every position, whatever the target,
# every token that HNS excludes lies outside the top-*p* nucleus of the full
# softmax.
#
# **Proof.** Let *T* be excluded at a position with target *t*. By the HNS
# rule (notebook 01) and because *P*(*t*) ≤ 1,
#
# > *P*(*T*) &lt; *P*(*t*) · e<sup>−ℓ</sup> ≤ e<sup>−ℓ</sup> ≤ (1 − *p*) / *V*,
#
# the last step being the assumption on ℓ. Let *S* be the set of tokens at
# most as probable as *T*: *T* itself, every token tied with it, and every
# less probable token. *S* has at most *V* members, each of probability at
# most *P*(*T*), so its mass is at most |*S*| · *P*(*T*) &lt; *V* · (1 − *p*) / *V*
# = 1 − *p*. The tokens *strictly* more probable than *T* therefore hold mass
# greater than *p*. In the sorted order, however ties are broken, every one
# of them comes before *T* and before every token tied with *T*; the prefix
# ending with the last of them already has mass &gt; *p*, so the nucleus, the
# shortest prefix reaching *p*, ends there at the latest, and *T* is not in
# it. ∎
#
# The condition is sufficient, not necessary: it uses only *P*(*t*) ≤ 1 and
# |*S*| ≤ *V*. It can also not be dropped: with the target at probability 0.86 and nine
# tied tokens sharing probability 0.14, layout 3.5 (below the bound
# `ln 10 − ln 0.1 ≈ 4.6`) excludes the tied tokens, yet the top-p 0.9 nucleus
# contains three of them (the tests
# check both this case and the claim on thousands of random distributions).
#
# The calculator (live with a kernel) gives the margin for any vocabulary
# size and *p*; the bilingual models of this notebook have both alphabets
# in their vocabulary:

# %%
info = study.token_info(bilingual=True)
vocab_size = len(info)  # both alphabets
calculator = widgets.nucleus_calculator(vocab_size, top_p, layouts)
calculator.widget

# %%
Markdown(toy.nucleus_margin_text(vocab_size, top_p, layouts))

# %% [markdown]
# ## The sweep
#
# One bilingual run per layout of the grid and per seed, plus the scheduled
# run, whose layout moves from its start to its end value over training. The
# run store trains what is missing and loads the rest.

# %%
sweep_seeds = sw.sweep_seeds(study.profile, study.params["seeds"])
runs = study.planned_runs()

# %% [markdown]
# ## Accuracy and loss against the layout
#
# Per layout: top-1 accuracy, mean reciprocal rank (MRR) and loss of the
# low-resource language, top-1 of the high-resource one, and the loss over
# both languages pooled. Each cell is the mean over seeds with its 95%
# interval, marked ▲ when the layout is better than CE by the 95% interval of
# the paired difference (higher accuracy or lower loss, the whole interval on
# that side of zero), ▼ when it is worse, and left unmarked when the two
# cannot be told apart.

# %%
tables = sw.sweep_tables(runs, info)
display(sw.readable_sweep_table(tables.table).style.hide(axis="index"))

# %% [markdown]
# The explorer (live with a kernel): pick a layout with the slider, or the
# scheduled run in the menu. The top rows show each metric against the
# layout for both languages, the chosen one in orange and the scheduled run
# as a dashed line with its band; below, the chosen run's validation loss
# per frequency-rank group beside CE's, and the first two principal
# components of its embedding matrix beside CE's (one seed), where the two
# alphabets of each symbol can be compared.

# %%
explorer = widgets.layout_explorer(tables, layout=layout)
explorer.widget

# %% [markdown]
# The same view at the layout of the static figures:

# %%
study.figure(charts.layout_explorer_chart(tables, layout), "layout_sweep")

# %% [markdown]
# ## What the numbers say

# %%
from selfish_lib.engine.losses import nucleus_margin

reading = sw.sweep_reading(tables.per_seed, tables.table)
fragment_path = study.fragment(
    {
        "profile": profile,
        "steps": study.profile.sweep["steps"],
        "seeds": list(sweep_seeds),
        "layouts": list(layouts),
        "schedule": schedule.label if schedule is not None else None,
        "layout_shown": layout,
        "nucleus": {
            "vocab_size": vocab_size,
            "top_p": top_p,
            "margin": nucleus_margin(vocab_size, top_p),
            "safe_layouts": toy.nucleus_safe_layouts(layouts, vocab_size, top_p),
        },
        "table": sw.fragment_table(tables.table),
        "reading": reading.summary,
    }
)

# %%
Markdown(
    study.conclusion(
        f"""
Profile `{profile}`: {study.profile.sweep["steps"]:,} training steps per run.

{reading.text}
- **Nucleus.** {toy.nucleus_margin_text(vocab_size, top_p, layouts)}
"""
    )
)
