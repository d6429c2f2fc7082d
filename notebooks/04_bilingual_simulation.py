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
# 2 × 65 for every model. Three experiments, each over the profile's seeds:
#
# - **baseline**: CE on the bilingual stream;
# - **HNS**: the same stream with HNS at `layout`;
# - **low-resource only**: CE on second-alphabet blocks only, for 50 times
#   fewer steps: the compute a proportional split would give that language.
#
# Validation evaluates every window of the validation split twice, once in
# each alphabet, so the two languages are scored on exactly the same text.
# The metrics are the loss, top-1 accuracy, recall@5 (the target among the
# five most probable symbols) and the mean reciprocal rank (MRR) of the
# target.

# %% tags=["parameters"]
profile = "smoke"  # smoke, paper or large
device = "auto"  # auto, cpu, cuda or mps
seeds = None  # a list of seeds, or None for those of the profile
results_dir = "../results"  # the run store shared by the notebooks
data_path = None  # the corpus file, or None for SELFISH_DATA, the cache or a download
progress = True  # progress bars while training
layout = 2.0  # the HNS margin compared with CE
temperature = 0.8  # sampling temperature of the text samples
top_p = 0.9  # nucleus of the text samples
sample_length = 300  # symbols per sample
report_dir = None  # set by the pipeline: where figures and summary numbers go

# %%
from IPython.display import Markdown, display

from selfish_lib.engine.corpus import load_corpus
from selfish_lib.engine.losses import check_layout
from selfish_lib.engine.runs import describe_runs, get_or_train_grid
from selfish_lib.engine.samples import as_markdown, generate_text
from selfish_lib.engine.training import resolve_device
from selfish_lib.engine.validation import check_float, check_int
from selfish_lib.report import charts, pipeline
from selfish_lib.study import bilingual as bl
from selfish_lib.study import claims
from selfish_lib.study import frequency as cmp
from selfish_lib.study import gradients as sc

charts.use_offline_renderer()
# Check every parameter before any work, so a typo fails here with a clear message.
study = pipeline.check_study(profile, seeds, device)
layout = check_layout(layout, finite=True)
temperature = check_float("temperature", temperature, 0.0, min_inclusive=False)
top_p = check_float("top_p", top_p, 0.0, 1.0, min_inclusive=False)
sample_length = check_int("sample_length", sample_length, 1)

# %% [markdown]
# ## The runs

# %%
corpus = load_corpus(data_path)
info = corpus.token_info(bilingual=True)
runs = get_or_train_grid(
    bl.experiment_configs(study, layout),
    corpus=corpus,
    results_dir=results_dir,
    device=device,
    progress=progress,
)
display(describe_runs(runs, info))

# %% [markdown]
# ## Learning curves
#
# Every metric at every evaluation point, in each language. The
# low-resource-only model trains for 50 times fewer steps, so its curve
# ends early.

# %%
curves = bl.learning_curves(runs, info)
curve_chart = charts.bilingual_learning_curves(curves)
charts.save_figure(curve_chart, report_dir, "04_learning_curves")
curve_chart

# %% [markdown]
# ## Final metrics
#
# Mean over seeds with 95% intervals, per language ('both' pools every
# position of both alphabets), then HNS minus the baseline, paired by seed.

# %%
per_seed = bl.language_metrics(runs, info)
table, diffs = bl.final_table(per_seed)
final_chart = charts.bilingual_final_metrics(table)
charts.save_figure(final_chart, report_dir, "04_final_metrics")
final_chart

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
hist, mass = bl.where_the_loss_goes(runs, corpus, layout, str(resolve_device(device)))
hist_chart = charts.probability_histogram(hist)
charts.save_figure(hist_chart, report_dir, "04_probability_histogram")
hist_chart

# %%
mass_chart = charts.probability_mass(mass)
charts.save_figure(mass_chart, report_dir, "04_probability_mass")
mass_chart

# %% [markdown]
# ## Samples
#
# What each model writes in each alphabet (seed of the first run, prompted
# with a newline in that alphabet; second-alphabet symbols are decoded to
# their twins so both read as text).

# %%
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
    for experiment in bl.EXPERIMENTS
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
# margin; 'at least as good' (C7) means it lies above minus a stated margin.

# %%
single = get_or_train_grid(
    study.objective_configs("single", layout),
    corpus=corpus,
    results_dir=results_dir,
    device=device,
    progress=progress,
)
single_info = corpus.token_info()
shares, _ = sc.per_group_share(single, single_info)
table_of_claims = claims.build_claims(shares, cmp.group_validation(single, single_info), per_seed)
claims.save_claims(table_of_claims, report_dir)
claims.styled(table_of_claims)

# %% [markdown]
# ## What the numbers say

# %%
text, summary = bl.reading(diffs, mass, table_of_claims)
pipeline.write_fragment(report_dir, "04_bilingual_simulation", {"layout": layout, **summary})
Markdown(text)
