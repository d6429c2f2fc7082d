# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · The hypothesis: selfish tokens
#
# **Question.** A character-level GPT whose input embedding and output layer
# share one matrix *W* learns its rare symbols badly. Where does the gradient
# that shapes a rare symbol's embedding come from, and can we stop the part
# of it that carries no information about that symbol?
#
# This notebook states the hypothesis, shows how skewed the symbol
# distribution of Tiny Shakespeare is, and follows the gradient of every
# embedding row through a model small enough to check by hand. No model is
# trained here; notebooks 02 to 06 test the hypothesis at scale.

# %% tags=["parameters"]
profile = "smoke"  # smoke, paper or large
device = "auto"  # auto, cpu, cuda, cuda:N or mps
seeds = None  # a list of seeds, or None for those of the profile
layout = 2.0  # the HNS margin in logit units, float("inf") for plain cross-entropy

# %%
from selfish_lib.report.notebook import Markdown, charts, display, open_study
from selfish_lib.study import hypothesis as we

study = open_study(globals())  # checks every parameter first: a typo fails here

# %% [markdown]
# ## Three ways an embedding row learns
#
# With tied embeddings, row *W*<sub>*j*</sub> of the matrix plays two roles: it
# is the vector looked up when symbol *j* is read, and it is the output
# vector whose dot product with the hidden state *h* gives the logit
# *z*<sub>*j*</sub> = *W*<sub>*j*</sub> · *h* when the next symbol is predicted.
# Its gradient is therefore a sum of three parts, at every position of every
# batch:
#
# 1. **input**: when *j* is the symbol being read, the gradient flows back
#    through the lookup; it reflects the contexts in which *j* occurs;
# 2. **output**, split by the role of *j* at that position:
#    - **2.1 target**: when *j* is the next symbol, its row is pulled toward
#      *h* by (1 − *p*<sub>*j*</sub>) *h*;
#    - **2.2 non-target**: at *every other* position its row is pushed away
#      from *h* by *p*<sub>*j*</sub> *h*, whether or not *j* occurs anywhere in
#      the batch.
#
# ## The hypothesis
#
# A common symbol receives plenty of scenario 1 and 2.1 updates: it learns
# from its own contexts. A rare symbol is read and predicted only now and
# then, but it is a non-target at nearly every position. **For rare symbols,
# scenario 2.2 dominates the gradient**: their embeddings are shaped by
# being pushed away from the hidden states of *other* symbols, that is by
# noise, rather than by their own contexts. They are *selfish*: they learn
# only to stay out of the way.
#
# ## Hard negative sampling (HNS)
#
# HNS keeps the push where it is informative. Before the cross-entropy,
# every logit more than ℓ (the `layout`) below the target's logit is set to
# −∞. Such an *easy negative* leaves the softmax: it receives exactly zero
# gradient and does not enter the normalizer. Only *hard negatives*, the
# symbols the model could confuse with the target, are pushed away.
# ℓ = ∞ is plain cross-entropy.
#
# In probabilities: with the full softmax *P*(*j*) = e<sup>*z*<sub>*j*</sub></sup> / *Z*,
# the normalizer *Z* cancels in a ratio, so for the target *t* and any symbol *T*
#
# > *P*(*T*) / *P*(*t*) = e<sup>*z*<sub>*T*</sub></sup> / e<sup>*z*<sub>*t*</sub></sup>
# > = exp(*z*<sub>*T*</sub> − *z*<sub>*t*</sub>).
#
# Since exp is increasing,
#
# > *z*<sub>*T*</sub> &lt; *z*<sub>*t*</sub> − ℓ
# > ⟺ *z*<sub>*T*</sub> − *z*<sub>*t*</sub> &lt; −ℓ
# > ⟺ *P*(*T*) / *P*(*t*) &lt; e<sup>−ℓ</sup>.
#
# HNS excludes exactly the symbols that are at least e<sup>ℓ</sup> times less
# likely than the target, and keeps every *T* with
# *P*(*T*) ≥ *P*(*t*) · e<sup>−ℓ</sup>.

# %% [markdown]
# ## How rare are the rare symbols?
#
# Tiny Shakespeare has 65 distinct characters. Ranked by their count in the
# training split, they span several orders of magnitude (hover over a bar for
# its numbers).

# %%
freq = study.corpus.frequencies
study.figure(charts.frequency_by_rank(freq), "frequency_by_rank")

# %% [markdown]
# Grouped by rank, ten symbols carry most of the text, and the last group
# almost none of it:

# %%
groups = charts.rank_group_table(freq)
display(groups.style.format({"share": "{:.3%}", "count": "{:,}"}).hide(axis="index"))
study.figure(charts.group_shares(freq), "group_shares")

# %% [markdown]
# ## The three scenarios on a worked example
#
# The smallest tied-embedding model: six symbols embedded in three
# dimensions, no network at all (the hidden state of the context symbol *c*
# is its own row, *h* = *W*<sub>*c*</sub>), one position with context `t` and
# target `h`. The logits are *z* = *W h*, and the loss is the library's
# `hns_cross_entropy`. The gradients below come from autograd with separate
# copies of *W* for the lookup and for the logits, which splits them into the
# three scenarios exactly (the tests check that the parts add up to the
# gradient of the tied matrix).
#
# Note that the context symbol's own logit is its squared norm
# |*W*<sub>*c*</sub>|², so it is a hard negative of its own position.

# %%
example = we.default_example()
tokens = we.token_table(example, layout)
tokens.style.format(precision=4).hide(axis="index")

# %% [markdown]
# `prob` is the full softmax and `ratio` = *P*(*T*) / *P*(target). Rows with
# `excluded` are below the margin at this `layout`. Their gradients, under
# plain cross-entropy (CE) and under HNS, one panel per scenario:

# %%
norms = we.gradient_norms(example, layout)
study.figure(charts.worked_example_chart(norms), "worked_example")

# %% [markdown]
# Every excluded row satisfies the bound derived above:

# %%
we.bound_check(example, layout).style.format(precision=4).hide(axis="index")

# %% [markdown]
# ## What the numbers say

# %%
top, rarest_group = groups.iloc[0], groups.iloc[-1]
rarest = freq.iloc[-1]
ex = we.summarize(example, layout)
excluded = ", ".join(f"`{label}`" for label in ex["excluded_labels"]) or "none"
study.fragment(
    {
        "top_group_share": top["share"],
        "rarest_group": rarest_group["group"],
        "rarest_group_share": rarest_group["share"],
        "rarest_symbol": rarest["symbol"],
        "rarest_symbol_count": rarest["count"],
        "worked_example": ex,
    },
)
Markdown(
    study.conclusion(
        f"""
- The {top["symbols"]} most frequent symbols (ranks {top["first_rank"]}-{top["last_rank"]})
  hold **{top["share"]:.1%}** of the {freq["count"].sum():,} training tokens; the rarest
  group ({rarest_group["group"]}, {rarest_group["symbols"]} symbols) holds
  **{rarest_group["share"]:.3%}**. The rarest symbol, `{rarest["display"]}`, occurs
  **{rarest["count"]:,}** time(s). For such a symbol, almost every position of every
  batch is a non-target position.
- In the worked example at layout ℓ = {ex["layout"]:g}, HNS excludes
  **{ex["n_excluded"]} of {ex["n_rows"]}** rows ({excluded}). Under plain cross-entropy
  they received **{ex["excluded_share_ce"]:.1%}** of the non-target push; under HNS they
  receive exactly {ex["excluded_norm_hns"]:g}. The bound *P*(*T*) &lt; *P*(target)·e<sup>−ℓ</sup>
  holds for every excluded row: **{ex["bound_holds"]}**.
- The summed non-target push goes from {ex["nontarget_norm_ce"]:.3f} (CE) to
  {ex["nontarget_norm_hns"]:.3f} (HNS): the renormalized softmax pushes the hard negatives
  that remain a little harder, and leaves the easy ones alone.

Whether this protects rare symbols in a trained model is what the next notebooks measure.
"""
    )
)
