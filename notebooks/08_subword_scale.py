# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 08 · The subword scale
#
# **Question.** With 65 characters the long tail is five symbols. The
# hypothesis is about rare tokens, and real vocabularies, tens of thousands
# of subwords with Zipf-distributed frequencies, have them by the thousand.
# Does scenario 2.2 dominate more of the vocabulary as it grows, and does
# HNS's gain hold, shrink or grow?
#
# **The tokenizers.** Byte-pair encoding over the corpus's characters (not
# over bytes: every subword is a string the text can produce), learnt from
# the training split alone, at each vocabulary size V of the profile. The
# validation text never reaches the tokenizer; a subword run stores its
# trained tokenizer and is named by it. Each V is its own experiment with
# the paper model: CE against HNS at `layout`, paired by seed, in one
# language and in the bilingual simulation (its second alphabet is ids + V).
#
# **Frequency groups.** The 65 characters keep their groups of ten ranks.
# A subword vocabulary is cut into ten groups of equal numbers of ranks:
# decile 1 is the most frequent tenth of the subwords, decile 10 the
# rarest tenth.
#
# **One unit across V.** A loss per token does not compare across
# vocabularies: a token of a larger V spells more characters, so it carries
# more information and costs more nats. The chapter therefore measures the
# loss in **nats per character**: the sum of the token losses over the
# validation text divided by the number of characters those tokens spell
# (for the characters it is the loss per token). Per language, each
# alphabet's loss over the same text; per frequency decile, the decile's
# summed loss per character of the text its tokens cover. Within one V
# every run predicts the same tokens, so HNS − CE per character is the
# per-token difference divided by one constant (same sign, same verdict);
# across V only the per-character numbers are in one unit, and a decile of
# one V covers other text than the decile of another.
#
# **Top-1 stays per token, within one V.** A top-1 on characters would need
# the model's distribution of the next *character* given the text so far.
# A subword model gives the distribution of the next *token* given one
# segmentation of that text, cut at a token boundary. The next character's
# probability is a sum over every segmentation of the text so far (those
# that end inside a token included) of the probability of every subword
# that continues it with that character; even at a token boundary, summing
# the subwords that begin with the character covers one segmentation only.
# The chapter does not compute that sum, so top-1 is compared between CE and
# HNS within each V only, and across V the comparable unit is the loss per
# character (bits per character are the same numbers divided by ln 2).

# %% tags=["parameters"]
profile = "smoke"  # smoke, paper or large
device = "auto"  # auto, cpu, cuda, cuda:N or mps
seeds = None  # a list of seeds, or None for those of the profile
layout = 2.0  # the HNS margin compared with CE
settings = ["single", "bilingual"]  # one language (deciles), two languages, or both
sizes = None  # BPE vocabulary sizes, e.g. [256, 1024, 4096]; None: the profile's

# %%
from selfish_lib.report.notebook import Markdown, charts, display, open_study
from selfish_lib.study import claims, subword

study = open_study(globals())  # checks every parameter first: a bad size fails here

# %% [markdown]
# ## The vocabularies
#
# What each tokenizer makes of the training split: how many tokens it
# becomes, how many subwords it never produces at all (merges absorbed by
# longer ones: their rows are only ever pushed away, never a target), and
# how little of the text the rarest group holds.

# %%
vocabularies = subword.subword_sizes(study.profile, sizes)
display(subword.tokenizer_table(study.corpus, vocabularies).style.format(precision=4)
        .hide(axis="index"))  # fmt: skip
study.figure(charts.zipf_curves(subword.zipf_points(study.corpus, vocabularies)), "zipf")

# %% [markdown]
# ## The runs
#
# CE and HNS at every V and seed, in each setting.

# %%
runs = {setting: subword.by_size(study.planned_runs(setting)) for setting in settings}
corpora = {size: study.corpus.with_tokenizer(f"bpe-{size}") for size in vocabularies}
infos = {
    setting: {size: study.token_info(setting == "bilingual", f"bpe-{size}")
              for size in vocabularies}
    for setting in settings
}  # fmt: skip

# %% [markdown]
# ## Scenario 2.2 by frequency decile
#
# Chapter 02's instrument at each V: the share of scenario 2.2 (non-target
# rows pushed away) in each decile's gradient and in this step's part of
# AdamW's update, summed over the logged steps. The hypothesis predicts a
# share that rises towards the rare deciles, and a tail that is longer, and
# more selfish, as V grows.

# %%
scale = subword.compare(runs, infos, corpora, study.profile.p_low)
for setting, shares in scale.shares.items():
    if len(shares):
        display(Markdown(f"### {setting}"))
        display(study.figure(charts.decile_shares(shares), f"shares_{setting}"))

# %% [markdown]
# ## The loss per character as V grows
#
# CE's and HNS's validation loss per character (the unit every V shares)
# and per token (that V's own), mean and 95% interval over the seeds named
# in each row: on all the text and the two rarest deciles pooled (one
# language), and on each language and the training mixture, the two
# weighted as the training blocks mix them (bilingual).

# %%
for setting in settings:
    display(Markdown(f"### {setting}"))
    display(scale.loss_table(setting).style.hide(axis="index"))
study.figure(charts.loss_per_character(scale.all_levels, scale.scopes), "loss_per_char")

# %% [markdown]
# ## HNS minus CE as V grows
#
# The validation metrics of the whole split, HNS minus CE paired by seed,
# with the seeds each row rests on: the loss per character first, then the
# per-token metrics of that V. '(+)' marks an interval that says HNS is
# better, '(−)' worse; a cell without a mark has an interval that includes
# 0. The chart follows the loss per character and top-1 across V.

# %%
for setting in settings:
    display(Markdown(f"### {setting}"))
    display(scale.difference_table(setting).style.hide(axis="index"))
study.figure(charts.effect_by_size(scale.all_diffs, scale.scopes), "effect_by_size")

# %% [markdown]
# ## The unigram probe at each V
#
# Chapter 05's probe: one latent direction x is fitted so that
# softmax(W x) matches the unigram distribution the model was trained on
# (on the bilingual runs when there are some). Its KL says how much of the
# frequency profile one direction of the output embedding carries; the
# rarest decile's reconstructed mass over its true mass says whether that
# direction over-estimates the tail (above 1).

# %%
display(scale.probe.style.format(precision=4).hide(axis="index"))
study.figure(charts.probe_by_size(scale.probe), "probe")

# %% [markdown]
# ## The claims of this chapter
#
# - **S1**, per V: with CE, scenario 2.2 is more than half of the rarest
#   decile's gradient (one language); beside it, the same share of this
#   step's part of AdamW's update, which rescales a rare row's small
#   gradients.
# - **S2**, per V: HNS lowers the validation loss of the two rarest deciles
#   (one language), in nats per token; beside it, the same in nats per
#   character of the text those tokens cover (the same verdict within a V,
#   in the unit the other vocabularies share).
# - **S3**, per V: HNS raises top-1 on the low-resource language (bilingual),
#   per token of that V; one of the study's primary contrasts.
# - **S4**: with CE, 2.2's share of the rarest decile's gradient is higher at
#   the largest V than at the smallest; beside it, the same for the update.
#
# Verdicts follow from the 95% interval of A − B over seeds, paired by seed:
# *supported* above 0, *contradicted* below, *inconclusive* otherwise. They
# are written to `claims.json` beside the other chapters' claims.

# %%
claims.save_claims(scale.claims, study.report_dir, profile=study.profile.name)
claims.styled(scale.claims) if len(scale.claims) else Markdown("No claim: no runs.")

# %% [markdown]
# ## What the numbers say

# %%
study.fragment({"layout": layout, "settings": list(settings), "sizes": list(vocabularies),
                **scale.reading.summary})  # fmt: skip
Markdown(study.conclusion(scale.reading))
