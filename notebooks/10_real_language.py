# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 10 · A real low-resource language
#
# **Question.** Chapter 04 asks whether HNS helps a low-resource language,
# but its language is a cipher: 2% of the blocks are Shakespeare itself with
# every id shifted. A shared model can transfer perfectly between the twins,
# and the "rare language" has exactly the statistics of the frequent one.
# Does what HNS does to the cipher happen to a real language, with its own
# words, its own letter frequencies and characters English never writes?
#
# **The data.** The second language is real running text from the `elotl`
# package's parallel corpora of languages of Mexico: **Nahuatl** (the
# `axolotl` corpus, several varieties), with **Otomí** (`tsunkua`) as a
# replication; Mixtec (`kolo`) is described beside them. Only the
# indigenous side of each corpus is read, each row normalised to Unicode
# NFC, and the bytes of each corpus file are verified against a recorded
# sha256 before use; the elotl version and the sha256 are stored with every
# run. Each language is split into training and validation text **by
# document**, about a tenth of its characters for validation, no document on
# both sides. A block of the training stream is written in the language with
# the profile's probability (2%), as in chapter 04. A character that occurs
# only in the validation text still has an id, a training count of 0 and
# whatever metrics its validation positions give; one absent from a text has
# no metrics there (NaN), never a silent zero.
#
# **Two alphabet modes.** *Disjoint*: every character of the language gets an
# embedding row of its own, even a letter English also writes, as a different
# script would; this is the cipher's structure with real text. *Shared*: one
# vocabulary over both texts, so a character English has keeps English's id,
# and its row is trained, and pushed away, by both languages; only the
# characters English lacks get new rows. This is what a Latin-script
# language really meets.
#
# **The runs.** Three cells: the chapter's language in both modes and the
# replication language in the disjoint mode, each with CE, HNS at `layout`
# and CE with untied input and output embeddings (does untying alone free
# the rare rows?). The primary cell's CE and HNS train at every seed of the
# profile, the other runs at three. The cipher's CE and HNS runs of chapter
# 04 stand beside them. Each language is scored on its own validation text:
# the loss, top-1 accuracy, recall@5 and the mean reciprocal rank (MRR), and
# every difference is paired by seed.

# %% tags=["parameters"]
profile = "smoke"  # smoke, paper or large
device = "auto"  # auto, cpu, cuda, cuda:N or mps
seeds = None  # a list of seeds, or None for those of the profile
language = "nahuatl"  # the low-resource language: nahuatl, otomi or mixtec
alphabet = "shared"  # the alphabet mode of the primary contrast: shared or disjoint
layout = 2.0  # the HNS margin compared with CE
temperature = 0.8  # sampling temperature of the text samples
top_p = 0.9  # nucleus of the text samples
sample_length = 150  # characters per sample

# %%
from selfish_lib.report.notebook import Markdown, charts, display, open_study
from selfish_lib.study import claims, real_language

study = open_study(globals())  # checks every parameter first: a typo fails here

# %% [markdown]
# ## The corpora side by side
#
# Each corpus's size, its distinct characters and how many of them English
# also has (the overlap), the share of its text outside ASCII, how many of
# its rows merely repeat the Spanish side, and its rarest symbols.

# %%
corpus = study.corpus
statistics = real_language.corpora_statistics(corpus)
display(statistics.style.format(precision=3).hide(axis="index"))

# %% [markdown]
# The split by document, of the whole corpus and as a run of this profile
# reads it (the smoke profile reads a slice of each side).

# %%
splits = real_language.corpora_splits(study.profile.real_language["chars"])
display(splits.style.format(precision=3).hide(axis="index"))

# %%
frequencies = real_language.corpora_frequencies(corpus)
study.figure(charts.corpus_frequencies(frequencies), "corpus_frequencies")

# %% [markdown]
# ## The runs

# %%
cells = real_language.chapter_cells(language, alphabet)
order = [cell.title for cell in cells] + [real_language.CIPHER_CELL.title]
runs = {**study.planned_runs("runs", show=False), **study.planned_runs("cipher", show=False)}
infos = real_language.Infos(corpus)
display(real_language.describe_runs(runs, infos).style.format(precision=4).hide(axis="index"))

# %% [markdown]
# ## Each language on its own text
#
# The final metrics of every arm, on English's validation text and on the
# second language's, mean over seeds with 95% intervals.

# %%
per_seed = real_language.language_metrics(runs, infos)
table, diffs = real_language.final_table(per_seed)
study.figure(charts.language_metrics(table, order, study.seeds), "metrics")

# %%
display(table.style.format(precision=4).hide(axis="index"))

# %% [markdown]
# ## HNS and untied CE against CE
#
# On the low-resource language's text, each arm minus CE, paired by seed;
# the cipher's HNS − CE beside the real languages'.

# %%
study.figure(charts.language_effects(diffs, order), "effects")

# %%
columns = ["cell", "side", "comparison", "metric", "diff", "diff_lo", "diff_hi", "n_pairs",
           "verdict"]  # fmt: skip
display(diffs[columns].style.format(precision=4).hide(axis="index"))

# %% [markdown]
# ## Inside the low-resource language
#
# HNS − CE per frequency group of the language's own characters, ranked by
# their counts in its training text (groups of ten ranks, or ten groups of
# equal size above a hundred characters).

# %%
groups = real_language.group_metrics(runs, infos)
group_diffs = real_language.group_differences(groups)
study.figure(charts.group_effects(group_diffs, order), "group_effects")

# %% [markdown]
# The rarest characters of the primary cell, each arm's mean validation top-1
# and loss over seeds. A character seen only in the validation text has a
# training count of 0; one absent from the validation text has no metric
# there. `shared_row` marks a row that also serves English.

# %%
rarest = real_language.rarest_characters(runs, infos, cells[0].title)
display(rarest.style.format(precision=4).hide(axis="index"))

# %% [markdown]
# ## Scenario 2.2 on the language's own rows
#
# Chapter 02's measure, per embedding row: the share of scenario 2.2 (the row
# pushed away where it is not the target) in the row's summed gradient,
# grouped by what the rows serve. In the shared mode most of the language's
# characters are English's, so their rows serve both; the rows the language
# uses alone are those English lacks.

# %%
_, shares = real_language.nontarget_shares(runs, infos)
study.figure(charts.row_shares(shares, order), "row_shares")

# %% [markdown]
# ## Samples
#
# What the CE and HNS runs of the first seed write in each language,
# prompted with the start of each validation text.

# %%
samples = real_language.sample_texts(runs, infos, study.seeds[0], sample_length, temperature,
                                     top_p, str(study.device))  # fmt: skip
Markdown(real_language.samples_markdown(samples))

# %% [markdown]
# ## The cipher beside the real languages
#
# Does the simulation predict the real effect? Per real cell, HNS − CE on
# the low-resource top-1 beside the cipher's: whether the two point the same
# way, and whether the real mean falls inside the cipher's 95% interval.

# %%
prediction = real_language.cipher_prediction(per_seed)
display(prediction.style.format(precision=4).hide(axis="index"))

# %% [markdown]
# ## The claims of this chapter
#
# **R1**, "HNS raises Nahuatl top-1": in the shared alphabet, HNS's top-1
# accuracy on the Nahuatl validation documents is higher than CE's (a
# *greater* test on HNS − CE, paired by seed); recall@5 and MRR beside it.
# **R3**, "Otomí replicates R1": the same in Otomí, disjoint alphabet. Both
# are contrasts of the study's primary family. **R2**, "the cipher predicts
# the direction and size of the real-language effect": the real HNS − CE
# against the cipher's, *similar* within one point of top-1 accuracy; it is
# exploratory. With a `language` or `alphabet` other than Nahuatl and
# shared, every row is exploratory: the family was registered for those.

# %%
table_of_claims = real_language.chapter_claims(per_seed, language, alphabet)
claims.save_claims(table_of_claims, study.report_dir, profile=study.profile.name)
claims.styled(table_of_claims)

# %% [markdown]
# The primary family as it stands after this chapter's rows, with Holm's
# verdicts:

# %%
claims.family_table(claims.load_claims(study.report_dir, table_of_claims))

# %% [markdown]
# ## What the numbers say

# %%
reading = real_language.reading(diffs, prediction, shares, table_of_claims, cells)
study.fragment({"language": language, "alphabet": alphabet, "layout": layout, **reading.summary})
Markdown(study.conclusion(reading))
