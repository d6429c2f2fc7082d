"""Chapter 08, the subword scale: the hypothesis and HNS at BPE vocabularies of growing size.

With 65 characters the long tail is five symbols; a real vocabulary has thousands of
rare tokens. This module trains CE and HNS at each BPE vocabulary size V of the profile
(``Profile.subword``), in one language and in the bilingual simulation, and measures,
as V grows:

- scenario 2.2's share of each frequency decile's gradient and update (chapter 02's
  instrument, ``gradients.group_shares``);
- HNS minus CE on the rarest deciles (one language) and on the low-resource language
  (bilingual), paired by seed;
- the unigram probe of chapter 05 on each output embedding: how far its one-direction
  reconstruction of the unigram distribution is (KL), and how much mass it gives the
  rarest decile against the truth (the over-estimated tail);
- the claims S1-S4 with their verdicts.

**Units across V.** A loss per token is not comparable across vocabularies: a bpe-4096
token spells about three characters, a bpe-256 token fewer than two. Every loss here is
therefore also given in nats per character (``loss_per_char``): the sum of the token
losses of a scope divided by the number of characters its predicted tokens spell
(``per_character``). For the whole validation text that is the text's loss per
character; for the characters it is the loss per token; for a frequency decile it is the
loss per character of the text the decile's tokens cover (within one V every run
predicts the same tokens, so HNS − CE per character is the per-token difference divided
by one constant: same sign, same verdict; across V it puts the numbers in one unit,
although the rarest decile at one V covers other text than at another). Top-1 stays
per token, compared within one V only: a top-1 on characters would need the model's
distribution of the next character, which for a subword model (a distribution of the
next token given one segmentation of the text so far) means summing over every
segmentation of the text so far and every subword that continues it with that character.

Frequency groups are the corpus's (``engine.corpus.group_size_for``): for V > 100 ten
groups of equal numbers of ranks, rank deciles of training frequency, numbered 1 (the
most frequent tenth of the vocabulary) to 10 (the rarest).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..engine.corpus import Corpus
from ..engine.evaluation import METRICS, aggregate
from ..engine.objectives import CrossEntropy, HardNegatives
from ..engine.profiles import Profile
from ..engine.runs import stack_runs
from ..engine.training import TrainConfig
from ..engine.validation import ParameterError, check_choice, check_int
from . import bilingual, gradients
from .claims import claim_row, evidence_note, seed_series
from .frequency import verdict
from .matrix import as_array
from .probe import probe_unigram, unigram_target
from .readings import (
    METRIC_NAMES,
    MIXTURE,
    POOLED,
    Reading,
    clipping_note,
    format_interval,
    interval_of,
)
from .stats import RANGES, aggregate_seeds, paired_difference

SOURCE = "08_subword_scale"
SUBWORD_SETTINGS = ("single", "bilingual")
REFERENCE, TREATMENT = "CE", "HNS"
RAREST = "rarest decile"  # the scope of the pooled rarest tenth of the vocabulary
SHARE_THRESHOLD = 0.5  # S1: scenario 2.2 "dominates" a row's gradient above half of it
SHARES = ("share_nontarget", "update_share_nontarget")
# S1 and S4 as made (the gradient, chapter 02's summed definition), and beside them the
# same share of this step's part of AdamW's update, which rescales a rare row's small
# gradients
S1_DEFINITIONS = (
    ("share_nontarget", "gradient, summed over the logged steps", True),
    ("update_share_nontarget", "this step's part of AdamW's update", False),
)
# The loss in the one unit every tokenizer shares: nats per character of the text the
# predicted tokens spell (``per_character``); the chapter's metrics put it first.
PER_CHARACTER = "loss_per_char"
CHAPTER_METRICS = (PER_CHARACTER, *METRICS)
CHAPTER_METRIC_NAMES = {
    PER_CHARACTER: "loss per character (nats)",
    **METRIC_NAMES,
    "loss": "loss per token (nats)",
}
# the range of each metric (the loss per character is a loss: non-negative)
BOUNDS = {**RANGES, PER_CHARACTER: RANGES["loss"]}
# the scope of every validation position of the one-language runs
OVERALL = "all text"
# the metrics the effect chart and the reading follow across V: the loss in the shared
# unit, and top-1, whose unit (one token of that V) only allows a comparison within a V
ACROSS_SIZES = (PER_CHARACTER, "top1")


def check_sizes(name: str, value, corpus: Corpus | None = None) -> tuple[int, ...]:
    """A non-empty list of distinct vocabulary sizes, each an integer >= 2; with
    ``corpus``, each one the corpus supports (its tokenizer is trained here, so that a
    bad size fails before any run does)."""
    allowed = "a non-empty list of distinct integer vocabulary sizes (e.g. [256, 1024, 4096])"
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or not value:
        raise ParameterError(name, value, allowed)
    sizes = tuple(check_int(name, v, 2) for v in value)
    if len(set(sizes)) != len(sizes):
        raise ParameterError(name, value, allowed)
    if corpus is not None:
        for size in sizes:
            try:
                corpus.with_tokenizer(f"bpe-{size}")
            except ParameterError as exc:  # say which entry of the list, and why
                raise ParameterError(name, value, f"sizes the corpus supports; {size} is not: "
                                     f"{exc.allowed}") from None  # fmt: skip
    return tuple(sorted(sizes))


def subword_sizes(profile: Profile, sizes: Sequence[int] | None = None) -> tuple[int, ...]:
    """The vocabulary sizes a chapter runs at: ``sizes``, or the profile's."""
    return check_sizes("sizes", profile.subword["sizes"] if sizes is None else sizes)


def subword_configs(
    profile: Profile,
    setting: str,
    sizes: Sequence[int] | None = None,
    layout: float = 2.0,
) -> dict[tuple[int, str, int], TrainConfig]:
    """(V, arm, seed) -> TrainConfig: CE and HNS at ``layout``, every seed of the profile,
    at every vocabulary size, in ``setting`` ('single' or 'bilingual')."""
    check_choice("setting", setting, SUBWORD_SETTINGS)
    objectives = {REFERENCE: CrossEntropy(), TREATMENT: HardNegatives(layout)}
    return {
        (size, arm, seed): profile.subword_config(setting, objective, size, seed)
        for size in subword_sizes(profile, sizes)
        for arm, objective in objectives.items()
        for seed in profile.seeds
    }


def by_size(runs: Mapping) -> dict[int, dict[tuple[str, int], object]]:
    """{(V, arm, seed): run} as {V: {(arm, seed): run}}."""
    out: dict[int, dict] = {}
    for (size, arm, seed), run in runs.items():
        out.setdefault(size, {})[(arm, seed)] = run
    return out


def decile_info(token_info: pd.DataFrame) -> pd.DataFrame:
    """``token_info`` with ``decile``: the position of the token's frequency group, 1 (the
    most frequent) to 10 (the rarest) for a subword vocabulary."""
    order = sorted(token_info["group"].unique(), key=lambda g: int(str(g).split("-")[0]))
    position = {group: k + 1 for k, group in enumerate(order)}
    return token_info.assign(decile=token_info["group"].map(position).astype(int))


def tokenizer_table(corpus: Corpus, sizes: Sequence[int]) -> pd.DataFrame:
    """Per vocabulary size (the characters first): the training split's length in tokens,
    characters per token, the subwords the training split never produces (merges wholly
    absorbed by longer ones: rows that are only ever pushed away), those seen fewer than
    10 times, and the rarest decile's share of the training tokens."""
    rows = []
    for size in (None, *sizes):
        sub = corpus if size is None else corpus.with_tokenizer(f"bpe-{size}")
        freq = sub.frequencies
        rarest = decile_info(freq.assign(language="high"))
        last = rarest["decile"].max()
        rows.append(
            {
                "tokenizer": sub.tokenizer.spec,
                "V": sub.vocab_size,
                "training tokens": len(sub.train),
                "characters per token": len(corpus.train) / len(sub.train),
                "never in training": int((freq["count"] == 0).sum()),
                "seen < 10 times": int((freq["count"] < 10).sum()),
                "rarest group": str(rarest.loc[rarest["decile"] == last, "group"].iloc[0]),
                "rarest group's share of tokens": float(
                    rarest.loc[rarest["decile"] == last, "share"].sum()
                ),
            }
        )
    return pd.DataFrame(rows)


def zipf_points(corpus: Corpus, sizes: Sequence[int], points: int = 60) -> pd.DataFrame:
    """Per vocabulary size: training count against frequency rank at about ``points``
    log-spaced ranks (a rank-frequency chart that stays small at any V)."""
    frames = []
    for size in sizes:
        freq = corpus.with_tokenizer(f"bpe-{size}").frequencies
        ranks = np.unique(np.geomspace(1, len(freq), points).round().astype(int))
        part = freq[freq["rank"].isin(ranks)][["rank", "count", "group"]].copy()
        part.insert(0, "V", size)
        frames.append(part)
    return pd.concat(frames, ignore_index=True)


def _stack(per_size: Mapping[int, Mapping], table) -> pd.DataFrame:
    frames = []
    for size, runs in per_size.items():
        if runs:
            frames.append(stack_runs(dict(runs), lambda r, s=size: table(r, s)).assign(V=size))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def scenario_shares(per_size: Mapping[int, Mapping], infos: Mapping[int, pd.DataFrame]
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """Scenario 2.2's share of the gradient and of the update per V, arm, language and
    decile: ``(per seed, mean and interval over seeds)``. Runs without a scenario log
    are left out."""
    logged = {s: {k: r for k, r in runs.items() if len(r.scenarios)}
              for s, runs in per_size.items()}  # fmt: skip

    def shares(run, size):
        info = decile_info(infos[size])
        table = gradients.group_shares(gradients.token_totals(run.scenarios), info)
        return table.merge(info[["group", "decile"]].drop_duplicates(), on="group")

    per_seed = _stack(logged, shares)
    if per_seed.empty:
        return per_seed, per_seed
    values = [c for c in SHARES if c in per_seed]
    by = ["V", "experiment", "language", "decile"]
    return per_seed, aggregate_seeds(per_seed, by, values)


def per_character(sums: pd.DataFrame, token_info: pd.DataFrame, by: Sequence[str] = ()
                  ) -> pd.DataFrame:  # fmt: skip
    """The loss in nats per character, per group of ``by`` (columns of ``token_info``).

    ``sums`` holds validation sums per model token (``count``, ``loss_sum``: one step of a
    run's ``eval_tokens``); ``token_info`` the token's ``symbol`` (a second alphabet's token
    spells its twin's symbol). A group's ``characters`` is the number of characters its
    predicted tokens spell, sum of count × len(symbol), and ``loss_per_char`` its summed
    token loss over them (NaN for a group without a character). A token may stand in
    several groups (``token_info`` with one row per token and group), as in ``aggregate``.
    For the characters every token spells one character: the loss per token.
    """
    by = list(by)
    info = token_info[["token", "symbol", *[c for c in by if c != "token"]]]
    merged = sums[["token", "count", "loss_sum"]].merge(info, on="token", how="inner")
    if len(merged["token"].unique()) < len(sums["token"].unique()):
        missing = sorted(set(sums["token"]) - set(merged["token"]))[:5]
        raise ValueError(f"tokens without a symbol in token_info: {missing}")
    merged["characters"] = merged["count"] * merged["symbol"].str.len()
    values = ["characters", "loss_sum"]
    if by:
        summed = merged.groupby(by, sort=True, observed=True)[values].sum().reset_index()
    else:
        summed = merged[values].sum().to_frame().T
    summed["characters"] = summed["characters"].astype(np.int64)
    summed[PER_CHARACTER] = summed["loss_sum"] / summed["characters"].where(
        summed["characters"] > 0
    )
    return summed[[*by, "characters", PER_CHARACTER]]


def scoped_info(info: pd.DataFrame, setting: str) -> pd.DataFrame:
    """``info`` (``decile_info``) with a ``scope`` column, one row per token and scope it
    belongs to. One language: ``OVERALL``, each decile ('decile 1' .. 'decile 10') and
    the rarest decile pooled with the one before it ('deciles 9-10'); bilingual: each
    language ('high', 'low') and every position of both (``readings.POOLED``)."""
    check_choice("setting", setting, SUBWORD_SETTINGS)
    if setting == "bilingual":
        return pd.concat([info.assign(scope=info["language"]), info.assign(scope=POOLED)],
                         ignore_index=True)  # fmt: skip
    last = int(info["decile"].max())
    tail = info[info["decile"] >= last - 1]
    return pd.concat(
        [
            info.assign(scope=OVERALL),
            info.assign(scope="decile " + info["decile"].astype(str)),
            tail.assign(scope=f"deciles {last - 1}-{last}"),
        ],
        ignore_index=True,
    )


def metrics_per_seed(per_size: Mapping[int, Mapping], infos: Mapping[int, pd.DataFrame],
                     setting: str, p_low: float = 0.02) -> pd.DataFrame:  # fmt: skip
    """Per V and run: the final whole-split validation metrics in column ``scope``
    (``scoped_info``; bilingual adds ``readings.MIXTURE``, the two languages weighted
    1 - p_low and p_low as in ``bilingual.language_metrics``), each with
    ``characters`` and ``loss_per_char`` (``per_character``) beside the per-token
    metrics."""
    check_choice("setting", setting, SUBWORD_SETTINGS)

    def scopes(run, size):
        info = scoped_info(decile_info(infos[size]), setting)
        final = run.final_eval()
        per_char = per_character(final, info, by=["scope"])
        if setting == "bilingual":
            table = bilingual.language_metrics({("run",): run}, infos[size], p_low)
            table = table.drop(columns=["experiment", "objective", "seed"])
            table = table.rename(columns={"language": "scope"})
            by_scope = per_char.set_index("scope")
            mixture = {
                "scope": MIXTURE,
                "characters": by_scope.loc[POOLED, "characters"],
                PER_CHARACTER: (1 - p_low) * by_scope.loc["high", PER_CHARACTER]
                + p_low * by_scope.loc["low", PER_CHARACTER],
            }
            per_char = pd.concat([per_char, pd.DataFrame([mixture])], ignore_index=True)
        else:
            table = aggregate(final, info, by=["scope"])
        return table.merge(per_char, on="scope", how="left", validate="one_to_one")

    return _stack(per_size, scopes)


def seed_label(seeds) -> str:
    """Seeds as few words: runs of consecutive seeds as 'a-b', the rest listed,
    e.g. (0, 1, 2, 5) -> '0-2, 5'; no seed -> 'none'."""
    ordered = sorted({int(s) for s in seeds})
    if not ordered:
        return "none"
    parts, start = [], ordered[0]
    for prev, cur in zip(ordered, [*ordered[1:], None], strict=True):
        if cur is None or cur != prev + 1:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
            start = cur
    return ", ".join(parts)


def paired_seeds(per_seed: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Per group of ``by``: the seeds that stand in both arms (those a paired difference
    rests on), as ``seed_label`` in column ``seeds``."""
    rows = []
    for key, part in per_seed.groupby(list(by), sort=True, observed=True):
        arms = part.groupby("experiment")["seed"].agg(set)
        both = arms.get(TREATMENT, set()) & arms.get(REFERENCE, set())
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(by, key, strict=True)), "seeds": seed_label(both)})
    return pd.DataFrame(rows, columns=[*by, "seeds"])


def differences(per_seed: pd.DataFrame) -> pd.DataFrame:
    """Per V, scope and metric (``CHAPTER_METRICS``, those ``per_seed`` has): HNS minus CE
    paired by seed, with its 95% interval, p-value, verdict ('better', 'worse' or
    'indistinguishable') and the seeds it rests on (``seeds``)."""
    if per_seed.empty:
        return pd.DataFrame()
    parts = []
    for metric in (m for m in CHAPTER_METRICS if m in per_seed):
        d = paired_difference(per_seed, ["V", "scope"], metric, "experiment", TREATMENT,
                              REFERENCE, bounds=BOUNDS[metric])  # fmt: skip
        d["metric"] = metric
        # a loss per character is better lower, as the loss per token
        direction = "loss" if metric == PER_CHARACTER else metric
        d["verdict"] = [verdict(direction, lo, hi) for lo, hi in zip(d["diff_lo"], d["diff_hi"],
                                                                     strict=True)]  # fmt: skip
        parts.append(d)
    out = pd.concat(parts, ignore_index=True)
    return out.merge(paired_seeds(per_seed, ["V", "scope"]), on=["V", "scope"], how="left")


def difference_table(diffs: pd.DataFrame, scopes: Sequence[str]) -> pd.DataFrame:
    """HNS − CE as text cells 'diff [lo, hi]' (with '(+)' where HNS is better, '(−)' where
    worse), one row per V and scope with the seeds it rests on, one column per metric
    (the loss per character first)."""
    marks = {"better": " (+)", "worse": " (−)", "indistinguishable": ""}
    part = diffs[diffs["scope"].isin(scopes)].copy()
    part["cell"] = [
        format_interval(*interval_of(r, "diff"), digits=4, sign="+") + marks[r["verdict"]]
        for r in part.to_dict("records")
    ]
    table = part.pivot_table(index=["V", "scope", "seeds"], columns="metric", values="cell",
                             aggfunc="first").reset_index()  # fmt: skip
    order = {scope: k for k, scope in enumerate(scopes)}
    table = table.sort_values(["V", "scope"], key=lambda c: c.map(order) if c.name == "scope"
                              else c).reset_index(drop=True)  # fmt: skip
    table = table[["V", "scope", "seeds", *[m for m in CHAPTER_METRICS if m in table]]]
    return table.rename(columns=CHAPTER_METRIC_NAMES)


def loss_levels(per_seed: pd.DataFrame) -> pd.DataFrame:
    """Per V, scope and arm: the loss per character and per token, mean and 95% interval
    over seeds, with the seeds (``seeds``)."""
    if per_seed.empty:
        return pd.DataFrame()
    by = ["V", "scope", "experiment"]
    levels = aggregate_seeds(per_seed, by, [PER_CHARACTER, "loss"], bounds=BOUNDS)
    seeds = per_seed.groupby(by, observed=True)["seed"].agg(seed_label).rename("seeds")
    return levels.merge(seeds.reset_index(), on=by, how="left")


def loss_table(levels: pd.DataFrame, scopes: Sequence[str]) -> pd.DataFrame:
    """CE's and HNS's loss per character and per token as cells 'mean [lo, hi]', one row
    per V and scope (in the order of ``scopes``)."""
    part = levels[levels["scope"].isin(scopes)]
    rows = []
    for (size, scope), group in part.groupby(["V", "scope"], sort=False):
        arms = group.set_index("experiment")
        row = {"V": size, "scope": scope}
        for metric in (PER_CHARACTER, "loss"):
            unit = "per character" if metric == PER_CHARACTER else "per token"
            for arm in (REFERENCE, TREATMENT):
                cell = (format_interval(*interval_of(arms.loc[arm], metric), digits=4)
                        if arm in arms.index else "n/a")  # fmt: skip
                row[f"{arm} {unit} (nats)"] = cell
        row["seeds"] = " / ".join(
            f"{arm} {arms.loc[arm, 'seeds']}" for arm in (REFERENCE, TREATMENT) if arm in arms.index
        )
        rows.append(row)
    order = {scope: k for k, scope in enumerate(scopes)}
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    return table.sort_values(["V", "scope"], key=lambda c: c.map(order) if c.name == "scope"
                             else c).reset_index(drop=True)  # fmt: skip


def across_sizes(rows: Sequence[Mapping]) -> str:
    """What the intervals of one difference say across V, in words computed from them
    (``rows``: the difference's rows at each V with ``V``, ``diff_lo``, ``diff_hi`` and
    ``verdict``): 'HNS better at every V' only when every interval is clear of 0 on that
    side; otherwise the sizes of each kind: better, worse, an interval that includes 0, or
    a single seed (no interval)."""
    kinds: dict[str, list[int]] = {}
    for r in sorted(rows, key=lambda r: r["V"]):
        if math.isnan(float(r["diff_lo"])) or math.isnan(float(r["diff_hi"])):
            kind = "one seed"
        else:
            kind = r["verdict"]
        kinds.setdefault(kind, []).append(int(r["V"]))
    words = {
        "better": "HNS better",
        "worse": "HNS worse",
        "indistinguishable": "the interval includes 0",
        "one seed": "one seed, no interval",
    }
    if len(kinds) == 1 and len(rows) > 1:
        (kind,) = kinds
        return f"{words[kind]} at every V"
    return "; ".join(
        f"{words[kind]} at V = {', '.join(str(v) for v in kinds[kind])}"
        for kind in ("better", "worse", "indistinguishable", "one seed")
        if kind in kinds
    )


def seeds_caption(frame: pd.DataFrame, scopes: Mapping[str, str]) -> str:
    """The seeds a figure rests on, from ``frame``'s ``V``, ``scope`` and ``seeds``
    columns: 'seeds 0-1' when every point rests on the same ones, otherwise each set of
    seeds with where it applies ('seeds 0-1: low-resource language at V = 256, 1024; ...')."""
    part = frame[frame["scope"].isin(scopes)]
    labels = list(dict.fromkeys(part["seeds"]))
    if len(labels) == 1:
        return f"seeds {labels[0]}"
    pieces = []
    for label in labels:
        rows = part[part["seeds"] == label]
        where = "; ".join(
            f"{scopes[scope]} at V = {', '.join(str(int(v)) for v in sorted(group['V'].unique()))}"
            for scope, group in rows.groupby("scope", sort=False)
        )
        pieces.append(f"seeds {label}: {where}")
    return " | ".join(pieces)


def probe_table(per_size: Mapping[int, Mapping], corpora: Mapping[int, Corpus],
                infos: Mapping[int, pd.DataFrame], **probe) -> pd.DataFrame:  # fmt: skip
    """Per V and run: the unigram probe's KL on the output embedding, and the rarest
    decile's mass in the probe's reconstruction over its true mass (``tail_ratio``; above
    1 the probe, i.e. the embedding's frequency direction, over-estimates the tail).
    ``probe`` goes to ``probe_unigram`` (steps, lr, seed)."""
    rows = []
    for size, runs in per_size.items():
        if not runs:
            continue
        keys = list(runs)
        config = runs[keys[0]].config
        target = unigram_target(corpora[size], config)
        weights = np.stack([as_array(runs[k].model().embedding) for k in keys])
        fit = probe_unigram(weights, target, **probe)
        info = decile_info(infos[size]).sort_values("token")
        rare = (info["decile"] == info["decile"].max()).to_numpy()
        for k, (arm, seed) in enumerate(keys):
            rows.append(
                {
                    "V": size, "experiment": arm, "seed": seed, "kl": float(fit.kl[k]),
                    "tail_ratio": float(fit.reconstructed[k][rare].sum() / target[rare].sum()),
                }
            )  # fmt: skip
    return pd.DataFrame(rows)


def at_size(scope: str, size: int) -> str:
    """A claim row's scope at vocabulary size ``size``: 'low, V = 256'."""
    return f"{scope}, V = {int(size)}"


def subword_claims(
    shares: pd.DataFrame,
    single: pd.DataFrame,
    bilingual_metrics: pd.DataFrame,
) -> pd.DataFrame:
    """The chapter's claims, one row per vocabulary size (and S4 once):

    - **S1**: with CE, scenario 2.2 is more than half of the rarest decile's gradient
      (one language; its share against 0.5), and beside it (``primary`` False) its
      share of the update;
    - **S2**: HNS lowers the validation loss of the two rarest deciles (one language),
      in nats per token, and beside it (``primary`` False, when ``single`` has it) in
      nats per character of the text those deciles' tokens cover: within one V the same
      verdict (one constant divides every seed's difference), in the unit the other
      vocabularies share;
    - **S3**: HNS raises top-1 on the low-resource language (bilingual), per token of
      that V's tokenizer (top-1 compares within one V only);
    - **S4**: 2.2's share of the rarest decile's gradient under CE is higher at the
      largest V than at the smallest (the tail gets more selfish as V grows), and
      beside it the same for the update.

    The rows of one claim carry its id ('S1' .. 'S4', as ``claims.PRIMARY_CONTRASTS``
    lists S3, one row per V) and say their V in ``scope`` (``at_size``). A frame that is
    empty (a setting not run) gives no row for its claims.
    """
    rows = []
    if len(shares):
        ce = shares[(shares["experiment"] == REFERENCE) & (shares["language"] == "high")]
        last = ce.groupby("V")["decile"].transform("max")
        rarest = ce[ce["decile"] == last]
        for size in sorted(rarest["V"].unique()):
            for column, definition, primary in S1_DEFINITIONS:
                if column not in rarest:
                    continue
                share = seed_series(rarest, value=column, V=size)
                rows.append(claim_row(
                    "S1", f"With CE, scenario 2.2 is more than half of the rarest decile's "
                    f"gradient at V = {size}", SOURCE, column, at_size(RAREST, size),
                    "2.2 share (CE)", share, "one half", share * 0 + SHARE_THRESHOLD,
                    bounds=RANGES[column], definition=definition, primary=primary,
                ))  # fmt: skip
        sizes = sorted(rarest["V"].unique())
        for column, definition, primary in S1_DEFINITIONS if len(sizes) > 1 else ():
            if column not in rarest:
                continue
            big = seed_series(rarest, value=column, V=sizes[-1])
            small = seed_series(rarest, value=column, V=sizes[0])
            rows.append(claim_row(
                "S4", f"With CE, 2.2's share of the rarest decile's gradient is higher at "
                f"V = {sizes[-1]} than at V = {sizes[0]}", SOURCE, column, RAREST,
                f"V = {sizes[-1]}", big, f"V = {sizes[0]}", small,
                bounds=RANGES[column], definition=definition, primary=primary,
            ))  # fmt: skip
    if len(single):
        tail = single[single["scope"].str.startswith("deciles")]
        units = (
            ("loss", "CE − HNS, mean loss in nats per validation token of the two rarest deciles",
             True),
            (PER_CHARACTER, "CE − HNS, the two rarest deciles' summed loss in nats per character "
             "of the text their validation tokens spell", False),
        )  # fmt: skip
        for size in sorted(tail["V"].unique()):
            part = tail[tail["V"] == size]
            scope = part["scope"].iloc[0]
            for metric, definition, primary in units:
                if metric not in part:
                    continue
                rows.append(claim_row(
                    "S2", f"HNS lowers the validation loss of the two rarest deciles at "
                    f"V = {size}", SOURCE, metric, at_size(scope, size),
                    "CE", seed_series(part, value=metric, experiment=REFERENCE),
                    "HNS", seed_series(part, value=metric, experiment=TREATMENT),
                    bounds=BOUNDS[metric], definition=definition, primary=primary,
                ))  # fmt: skip
    if len(bilingual_metrics):
        low = bilingual_metrics[bilingual_metrics["scope"] == "low"]
        for size in sorted(low["V"].unique()):
            part = low[low["V"] == size]
            rows.append(claim_row(
                "S3", f"HNS raises top-1 on the low-resource language at V = {size}", SOURCE,
                "top1", at_size("low", size),
                "HNS", seed_series(part, value="top1", experiment=TREATMENT),
                "CE", seed_series(part, value="top1", experiment=REFERENCE), bounds=RANGES["top1"],
                definition=f"HNS − CE, top-1 accuracy over the low-resource alphabet's "
                f"validation tokens (bpe-{size} subwords), paired by seed; a token of one V "
                f"is not a token of another, so it compares within V = {size} only",
            ))  # fmt: skip
    return pd.DataFrame(rows)


def reading(claims: pd.DataFrame, diffs: pd.DataFrame, scopes: Mapping[str, str],
            probe: pd.DataFrame) -> Reading:  # fmt: skip
    """The chapter's reading: each claim's verdict with its numbers; HNS − CE across V on
    each scope of ``scopes`` (scope -> its words) for ``ACROSS_SIZES`` (the loss per
    character, top-1 per token), worded from the intervals (``across_sizes``) with the
    seeds each rests on; the probe's tail."""
    lines, summary = [], {"claims": {}, "across_sizes": {}}
    if claims.empty:
        return Reading("No claim: no runs.", summary)
    for rec in claims.to_dict("records"):
        diff = format_interval(*interval_of(rec, "diff"), digits=4, sign="+")
        if not rec["primary"]:
            lines.append(f"  - beside it, {rec['definition']}: {rec['verdict']}, {diff}.")
            continue
        lines.append(f"- **{rec['claim']}** ({rec['statement']}): **{rec['verdict']}**; "
                     f"{rec['A']} − {rec['B']} = {diff}{evidence_note(rec)}.")  # fmt: skip
        summary["claims"][f"{rec['claim']}: {rec['scope']}"] = {
            "verdict": rec["verdict"],
            "diff": rec["diff"],
            "diff_lo": rec["diff_lo"],
            "diff_hi": rec["diff_hi"],
        }
    if diffs is not None and len(diffs):
        lines.append("")
        lines.append(
            "HNS − CE as V grows (paired by seed, 95% interval; the loss per character "
            "compares across V, top-1 per token within each V only):"
        )
        for scope, words in scopes.items():
            for metric in ACROSS_SIZES:
                part = diffs[(diffs["scope"] == scope) & (diffs["metric"] == metric)]
                if part.empty:
                    continue
                records = part.sort_values("V").to_dict("records")
                cells = ", ".join(
                    f"V = {int(r['V'])}: "
                    + format_interval(*interval_of(r, "diff"), digits=4, sign="+")
                    + f" (seeds {r['seeds']})"
                    for r in records
                )
                pattern = across_sizes(records)
                lines.append(f"- {CHAPTER_METRIC_NAMES[metric]}, {words}: {pattern}; {cells}.")
                summary["across_sizes"][f"{scope}: {metric}"] = {
                    "pattern": pattern,
                    **{str(int(r["V"])): {"diff": r["diff"], "diff_lo": r["diff_lo"],
                                          "diff_hi": r["diff_hi"], "seeds": r["seeds"]}
                       for r in records},
                }  # fmt: skip
    if len(probe):
        mean = probe.groupby(["V", "experiment"])[["kl", "tail_ratio"]].mean().reset_index()
        cells = "; ".join(f"V = {int(r['V'])} {r['experiment']}: KL {r['kl']:.3f}, tail × "
                          f"{r['tail_ratio']:.2f}" for r in mean.to_dict("records"))  # fmt: skip
        lines.append(
            f"- The unigram probe (mean over seeds {seed_label(probe['seed'])}): {cells}. "
            "A tail ratio above 1: the embedding's frequency direction gives the rarest "
            "decile more mass than the training stream does."
        )
        summary["probe"] = mean.to_dict("records")
    clipped = bool(claims["intervals_clipped"].any())
    return Reading("\n".join(lines + clipping_note(clipped)), summary)


@dataclass(frozen=True)
class Scale:
    """Everything chapter 08 shows, per setting where it depends on one."""

    shares: dict[str, pd.DataFrame]  # setting -> 2.2's shares per V, arm, decile (intervals)
    shares_per_seed: dict[str, pd.DataFrame]
    per_seed: dict[str, pd.DataFrame]  # setting -> metrics per V, run and scope
    diffs: dict[str, pd.DataFrame]  # setting -> HNS − CE per V, scope and metric
    levels: dict[str, pd.DataFrame]  # setting -> the loss per character and per token
    scopes: dict[str, str]  # the scopes of the effect chart -> their titles
    table_scopes: dict[str, list[str]]  # setting -> the scopes of its tables
    probe: pd.DataFrame  # the unigram probe per V and run
    claims: pd.DataFrame
    reading: Reading

    @property
    def all_diffs(self) -> pd.DataFrame:
        """The differences of every setting in one frame."""
        frames = [d for d in self.diffs.values() if len(d)]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    @property
    def all_levels(self) -> pd.DataFrame:
        """The loss levels of every setting in one frame."""
        frames = [d for d in self.levels.values() if len(d)]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def difference_table(self, setting: str) -> pd.DataFrame:
        """``difference_table`` of ``setting`` on the scopes of its tables."""
        return difference_table(self.diffs[setting], self.table_scopes[setting])

    def loss_table(self, setting: str) -> pd.DataFrame:
        """``loss_table`` of ``setting`` on the scopes of its tables."""
        return loss_table(self.levels[setting], self.table_scopes[setting])


def compare(
    runs: Mapping[str, Mapping[int, Mapping]],
    infos: Mapping[str, Mapping[int, pd.DataFrame]],
    corpora: Mapping[int, Corpus],
    p_low: float = 0.02,
    **probe,
) -> Scale:
    """Chapter 08's comparison: ``runs`` is {setting: {V: {(arm, seed): run}}} (``by_size``),
    ``infos`` {setting: {V: token_info}}, ``corpora`` {V: the corpus under bpe-V}. The
    probe reads the bilingual runs when there are some, else the one-language runs."""
    shares, shares_per_seed, per_seed, diffs, levels = {}, {}, {}, {}, {}
    scopes, table_scopes = {}, {}
    for setting, per_size in runs.items():
        shares_per_seed[setting], shares[setting] = scenario_shares(per_size, infos[setting])
        per_seed[setting] = metrics_per_seed(per_size, infos[setting], setting, p_low)
        diffs[setting] = differences(per_seed[setting])
        levels[setting] = loss_levels(per_seed[setting])
        present = set(per_seed[setting]["scope"]) if len(per_seed[setting]) else set()
        if setting == "single":
            tail = sorted(s for s in present if str(s).startswith("deciles"))
            table_scopes[setting] = [OVERALL, *tail]
            scopes[OVERALL] = "all text (one language)"
            scopes.update({s: f"{s} (one language)" for s in tail})
        else:
            table_scopes[setting] = ["high", "low", MIXTURE]
            scopes["low"] = "low-resource language"
        table_scopes[setting] = [s for s in table_scopes[setting] if s in present]
    scopes = {s: t for s, t in scopes.items()
              if any(s in table_scopes[k] for k in table_scopes)}  # fmt: skip
    probed = "bilingual" if "bilingual" in runs else next(iter(runs))
    probes = probe_table(runs[probed], corpora, infos[probed], **probe)
    empty = pd.DataFrame()
    table = subword_claims(shares_per_seed.get("single", empty), per_seed.get("single", empty),
                           per_seed.get("bilingual", empty))  # fmt: skip
    frames = [d for d in diffs.values() if len(d)]
    read = reading(table, pd.concat(frames, ignore_index=True) if frames else empty, scopes,
                   probes)  # fmt: skip
    return Scale(shares, shares_per_seed, per_seed, diffs, levels, scopes, table_scopes, probes,
                 table, read)  # fmt: skip
