# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · Embedding geometry: does HNS bring the two languages closer?
#
# **Question.** In the bilingual simulation, 2% of the training blocks are
# written in a second alphabet: symbol *i* and its *twin* *i* + *V* (*V*
# symbols per alphabet) mean the same thing and occur in the same contexts.
# A model that understood this would place twins close together. Under
# plain cross-entropy (CE) every row is pushed away from the hidden state
# at every position where it is not the target (scenario 2.2), and the
# low-resource rows, rarely read or predicted, are shaped mostly by that
# push. HNS removes the push of easy negatives. After training, **are the
# twins, the two languages and the rarest symbols closer together under HNS
# than under CE?** And what does HNS do to the overall shape of the matrix
# (its isotropy) and to how it encodes symbol frequency?
#
# **Method.** We read the tied embedding matrix *W* (one row per token,
# 2*V* rows) of the final bilingual models, for both objectives and every
# seed, and of the model every run starts from. All distances are in units
# of the matrix's *scale* s(*W*) = (mean<sub>*i*</sub> ‖*w*<sub>*i*</sub>‖²)<sup>½</sup>,
# so that models whose embeddings grew to different sizes are comparable.
# Uncertainty is the 95% Student-t interval over seeds, and HNS is compared
# with CE *paired by seed* (both runs of a seed share initial weights and
# batches).

# %% tags=["parameters"]
profile = "smoke"  # smoke, paper or large
device = "auto"  # auto, cpu, cuda, cuda:N or mps
seeds = None  # a list of seeds, or None for those of the profile
layout = 2.0  # the HNS margin compared with CE
perplexity = 30.0  # t-SNE perplexity: > 0 and < the number of embedding rows
projection_seed = 0  # seed of the t-SNE layout and of the unigram probe's starting point
n_rare = 5  # how many of the rarest symbols are marked and compared with the rest

# %%
from selfish_lib.report.notebook import Markdown, charts, open_study
from selfish_lib.study import geometry, probe, projection

study = open_study(globals())  # checks every parameter first: a typo fails here

# %% [markdown]
# ## The runs
#
# The bilingual configuration of the profile, CE and HNS, every seed: the
# same configurations as notebook 04, so the run store returns the runs
# trained there (or trains them now, if this notebook runs first).

# %%
corpus, info = study.corpus, study.token_info(bilingual=True)
runs = study.planned_runs()
weights = geometry.model_weights(runs, corpus.vocab_size)

# %% [markdown]
# ## The matrix in two dimensions
#
# Two views of the rows of *W* / s(*W*), for the first seed: **PCA** keeps
# the two directions of largest variance (distances along them are true
# distances, in units of the scale), **t-SNE** keeps neighbourhoods (its
# units mean nothing, so each picture is centred and rescaled to unit
# root-mean-square radius). The two models of a row share the same axes.
# High-resource rows are blue, low-resource rows red; a thin grey line joins
# each symbol to its twin, so short lines mean twins close together. The
# rarest symbols are diamonds. Hover over a point for its symbol, frequency
# rank and language.

# %%
points = projection.projection_table(
    geometry.for_seed(weights, study.seeds[0]),
    info,
    perplexity=perplexity,
    seed=projection_seed,
    n_rare=n_rare,
)
study.figure(charts.embedding_projections(points, n_rare), "projections")

# %% [markdown]
# ## Distances between the languages and to the rare symbols
#
# Per model and seed, on *W* / s(*W*):
#
# - **twin distance**: the mean over symbols of ‖*w*<sub>*i*</sub> − *w*<sub>*i*+*V*</sub>‖;
# - **language centroids**: the distance between the mean high-resource row
#   and the mean low-resource row;
# - **rarest to the rest**: within each language, the distance between the
#   centroid of the rarest symbols and the centroid of all the others;
# - **norm against rank**: the Spearman correlation between a row's norm and
#   its symbol's frequency rank (positive: rarer symbols have longer rows).
#
# For reference: independent random rows, as in the initial matrix, are
# nearly orthogonal in many dimensions, so twins start about √2 apart.

# %%
target = probe.unigram_target(corpus, runs[("CE", study.seeds[0])].config)
per_seed = geometry.metrics_table(weights, info, target, n_rare=n_rare, seed=projection_seed)
means, diffs = geometry.summarize(per_seed)
metrics = geometry.DISTANCE_METRICS + geometry.NORM_METRICS
distances = geometry.comparison_table(means, diffs, metrics)
distances.style.hide(axis="index")

# %% [markdown]
# Each row's norm against its symbol's frequency rank, per language, mean
# over seeds with 95% intervals.

# %%
norms = geometry.norm_table(weights, info)
study.figure(charts.norms_by_rank(norms), "norms_by_rank")

# %% [markdown]
# ## Isotropy
#
# Three views of how evenly the rows spread over the directions of the space:
#
# - **mean pairwise cosine** between distinct rows: 0 for an orthogonal set,
#   near 1 when every row points the same way;
# - **effective rank** of the centred matrix (column means removed): with
#   σ<sub>1</sub>, …, σ<sub>*k*</sub> its singular values and
#   *p*<sub>*j*</sub> = σ<sub>*j*</sub> / Σ σ, the effective rank is
#   exp(−Σ *p*<sub>*j*</sub> log *p*<sub>*j*</sub>): 1 for a rank-one matrix,
#   min(*n*, *d*) when all singular values are equal;
# - **partition isotropy** *I*(*W*) = min<sub>*c*</sub> *Z*(*c*) / max<sub>*c*</sub> *Z*(*c*),
#   with *Z*(*c*) = Σ<sub>*i*</sub> exp(*c* · *w*<sub>*i*</sub>), *c* running
#   over the unit eigenvectors of *W*<sup>T</sup>*W*. Both *u* and −*u* are
#   unit eigenvectors, so both signs are used, which also makes the value
#   independent of the sign an eigensolver happens to return. *I*(*W*) is 1
#   when the partition function is the same in every principal direction.
#   *I*(*W*) depends on the scale of *W* (multiplying *W* by 10 multiplies
#   every exponent by 10), so it is computed on *W* / s(*W*).
#
# **Zero directions.** *W*<sup>T</sup>*W* is *d* × *d*, but with *n* rows its
# rank is at most min(*n*, *d*). A single-language matrix of 65 rows in 128
# dimensions therefore has at least 63 eigenvectors with eigenvalue zero;
# along them every *c* · *w*<sub>*i*</sub> is 0 and *Z*(*c*) = *n* says
# nothing about the matrix, so they are left out. A bilingual matrix of 130
# rows in 128 dimensions generically has full rank and no zero direction.
# For the matrices of this notebook:

# %%
Markdown(geometry.isotropy_note(per_seed))

# %%
geometry.comparison_table(means, diffs, geometry.ISOTROPY_METRICS).style.hide(axis="index")

# %% [markdown]
# ## How strongly does *W* encode unigram frequency?
#
# A *unigram probe* fits one vector *x* ∈ ℝ<sup>*d*</sup> so that
# softmax(*W* *x*) reproduces the unigram distribution *f* the model is
# trained on, minimizing the mean squared error between log softmax(*W* *x*)
# and log *f* with Adam. Over the 2*V* rows, symbol *i* has share
# (1 − *p*<sub>low</sub>) *f*<sub>*i*</sub> and its twin
# *p*<sub>low</sub> *f*<sub>*i*</sub>, with *f* the training-split frequencies
# and *p*<sub>low</sub> the share of low-resource blocks; a symbol absent
# from the training split would get half a count. We report
# KL(*f* ‖ softmax(*W* *x*)) in nats.

# %%
Markdown(probe.probe_note(per_seed))

# %%
geometry.comparison_table(means, diffs, ["probe_kl"]).style.hide(axis="index")

# %% [markdown]
# True share against the probe's reconstruction, every token of every seed
# (log-log). Points on the dashed diagonal are reconstructed exactly.

# %%
reconstruction = probe.probe_points(weights, info, target, seed=projection_seed)
study.figure(charts.unigram_probe_scatter(reconstruction), "unigram_probe")

# %% [markdown]
# ## Every metric at a glance
#
# First the mean of each model with its 95% interval over seeds (the
# initial model is the common starting point of both objectives), then the
# comparison that decides: HNS minus CE on the same seed, with the 95%
# interval of the paired differences. An interval that does not cross the
# dashed zero line is a difference the seeds agree on.

# %%
study.figure(charts.metric_comparison(means), "metrics")

# %%
study.figure(charts.paired_differences(diffs), "paired_differences")

# %% [markdown]
# ## What the numbers say

# %%
reading = geometry.reading(per_seed, means, diffs, corpus.vocab_size, n_rare)
study.fragment({"layout": layout, "n_rare": n_rare, **reading.summary})
Markdown(study.conclusion(reading))
