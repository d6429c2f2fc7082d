# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · Does HNS help a low-resource language?
#
# **Question.** A rare *language* is the extreme case of rare tokens: every
# one of its symbols is rare, and its embedding rows are pushed away at
# almost every position of the dominant language (scenario 2.2), where they
# never occur. If HNS stops that noise, a model trained with it should do
# better on the low-resource language.
#
# **The simulation.** Each training block is written, with probability 2%,
# in a second alphabet: all its ids shifted by +65. The second alphabet is
# the same text in different symbols, so the two languages have the same
# grammar and only differ in how much data each gets. The vocabulary is
# 2 × 65 for every model. Four experiments, each over the profile's seeds:
#
# - **baseline**: CE on the bilingual stream;
# - **HNS**: the same stream with HNS at `layout`;
# - **low-only HNS**: the original study's control, HNS at layout 2 on
#   second-alphabet blocks only, for 50 times fewer steps (the compute a
#   proportional split would give that language), warmup 2 steps as there;
# - **low-only CE**: the same control with CE and the same short warmup, the
#   fair comparison with the baseline (with the profile's warmup of 100
#   steps, 62% of the 160 paper steps would be warmup).
#
# Validation evaluates every window of the validation split twice, once in
# each alphabet, so the two languages are scored on exactly the same text.
# The metrics are the loss, top-1 accuracy, recall@5 (the target among the
# five most probable symbols) and the mean reciprocal rank (MRR) of the
# target.

# %% tags=["parameters"]
profile = "smoke"  # smoke, paper or large
device = "auto"  # auto, cpu, cuda, cuda:N or mps
seeds = None  # a list of seeds, or None for those of the profile
layout = 2.0  # the HNS margin compared with CE
temperature = 0.8  # sampling temperature of the text samples
top_p = 0.9  # nucleus of the text samples
sample_length = 300  # symbols per sample

# %%
from selfish_lib.report.notebook import Markdown, charts, display, open_study
from selfish_lib.study import bilingual, claims, frequency, gradients

study = open_study(globals())  # checks every parameter first: a typo fails here

# %% [markdown]
# ## The runs

# %%
corpus, info = study.corpus, study.token_info(bilingual=True)
runs = study.planned_runs()

# %% [markdown]
# ## Learning curves
#
# Every metric at every evaluation point, in each language. The points
# before a run's last score a systematic sample of the validation text
# (every `interim_eval_stride`-th window of it, the profile's choice); the
# last point, which every table below reads, scores all of it. The two
# low-only models train for 50 times fewer steps, so their curves end early.

# %%
curves = bilingual.learning_curves(runs, info)
study.figure(charts.bilingual_learning_curves(curves), "learning_curves")

# %% [markdown]
# ## Final metrics
#
# Mean over seeds with 95% intervals, per language, then HNS minus the
# baseline, paired by seed. Two overall figures: 'both languages' pools every
# validation position of both alphabets, which weighs the two languages
# 50/50 (each alphabet scores the whole split); 'training mixture' weighs
# them 98/2, as the training stream mixes them: the loss the bilingual
# models are trained on, and the one claim C4 is about.

# %%
per_seed = bilingual.language_metrics(runs, info, study.profile.p_low)
table, diffs = bilingual.final_table(per_seed)
study.figure(charts.bilingual_final_metrics(table), "final_metrics")

# %%
display(table.style.format(precision=4).hide(axis="index"))
display(diffs.style.format(precision=4).hide(axis="index"))

# %% [markdown]
# ## Where the loss goes
#
# The loss only looks at the target's probability, the ranking metrics only
# at its rank. HNS never pushes down an *easy* negative, a token already
# more than e<sup>layout</sup> times less likely than the target, so such
# tokens keep whatever probability they have: a model can rank the target
# first more often and still put less probability on it. Below, for the
# baseline and the HNS model: the distribution of the probabilities given
# to non-target tokens at every validation position (log scale), and the
# mean probability mass outside the target, with the part of it held by the
# easy negatives.

# %%
hist, mass = bilingual.where_the_loss_goes(runs, corpus, layout, str(study.device))
study.figure(charts.probability_histogram(hist), "probability_histogram")

# %%
study.figure(charts.probability_mass(mass), "probability_mass")

# %% [markdown]
# ## Samples
#
# What each model writes in each alphabet (seed of the first run, prompted
# with a newline in that alphabet; second-alphabet symbols are decoded to
# their twins so both read as text).

# %%
from selfish_lib.engine.samples import as_markdown, generate_text

first = study.seeds[0]
samples = {
    (experiment, language): generate_text(
        runs[(experiment, first)].model(),
        corpus.tokenizer,
        language,
        sample_length,
        temperature,
        top_p,
        seed=first,
    )
    for experiment in bilingual.EXPERIMENTS
    for language in ("high", "low")
}
Markdown(as_markdown(samples, lambda key: f"{key[0]}, {key[1]}-resource alphabet"))

# %% [markdown]
# ## The claims of the study
#
# Each claim of the study, tested from the runs of notebooks 02, 03 and this
# one. A is compared with B over seeds, paired by seed; the verdict follows
# from the 95% interval of A − B: *supported*, *contradicted* or
# *inconclusive*. 'Similar' (C5) means the interval lies within a stated
# margin. Three claims are also reported under a second definition or test,
# in a row beside the claim as made: C1 with the per-position gradient
# sizes, C4 on the 50/50 pooled loss beside the 98/2 training mixture, and
# C7's "slightly better" (a 'greater' test) beside the weaker "not worse by
# more than a margin of 0.005". `claims.json` carries each row's definition, test and
# figures, and whether it is the claim as made (`primary`).
#
# Fewer than three paired seeds, or per-seed differences with no spread,
# decide nothing: such a row is *inconclusive* whatever its interval. Beside
# each interval stand the p-value of its own t test and an exact paired
# sign-flip test (every one of the 2^n sign patterns of the per-seed
# differences; its smallest p is 2/2^n: 2/64 with six seeds), and, for an
# inconclusive row, the seeds that would decide it if its mean and spread
# held (80% power).

# %%
single = study.planned_runs("single", show=False)
single_info = study.token_info()
shares, _ = gradients.per_group_share(single, single_info)
validation = frequency.group_validation(single, single_info)
table_of_claims = claims.build_claims(shares, validation, per_seed)
claims.save_claims(table_of_claims, study.report_dir, profile=study.profile.name)
claims.styled(table_of_claims)

# %% [markdown]
# ## One family of primary contrasts
#
# The study's questions are decided by one family of contrasts fixed before
# any run is read, across all chapters. Every other row of `claims.json` is
# exploratory. Holm's correction runs over the whole family as it stands in
# `claims.json`: each chapter that writes its rows corrects the family again,
# so the last chapter's write holds the verdicts of the complete study.

# %%
claims.primary_contrasts()

# %% [markdown]
# The family as it stands after this chapter's rows, with Holm's verdicts:

# %%
claims.family_table(claims.load_claims(study.report_dir, table_of_claims))

# %% [markdown]
# ## What the numbers say

# %%
reading = bilingual.reading(diffs, mass, table_of_claims, per_seed)
study.fragment({"layout": layout, **reading.summary})
Markdown(study.conclusion(reading))
