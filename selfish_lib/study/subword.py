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

Frequency groups are the corpus's (``engine.corpus.group_size_for``): for V > 100 ten
groups of equal numbers of ranks, rank deciles of training frequency, numbered 1 (the
most frequent tenth of the vocabulary) to 10 (the rarest).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..engine.corpus import Corpus
from ..engine.evaluation import METRICS
from ..engine.objectives import CrossEntropy, HardNegatives
from ..engine.profiles import Profile
from ..engine.runs import stack_runs
from ..engine.training import TrainConfig
from ..engine.validation import ParameterError, check_choice, check_int
from . import bilingual, gradients
from .claims import claim_row, seed_series
from .frequency import verdict
from .matrix import as_array
from .probe import probe_unigram, unigram_target
from .readings import METRIC_NAMES, Reading, clipping_note, format_interval, interval_of
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


def metrics_per_seed(per_size: Mapping[int, Mapping], infos: Mapping[int, pd.DataFrame],
                     setting: str, p_low: float = 0.02) -> pd.DataFrame:  # fmt: skip
    """Per V and run: the final whole-split validation metrics in column ``scope``.
    One language: per decile ('decile 1' .. 'decile 10') and the rarest decile pooled
    with the one before it ('deciles 9-10'); bilingual: per language ('high', 'low',
    pooled, mixture)."""
    check_choice("setting", setting, SUBWORD_SETTINGS)
    if setting == "bilingual":
        frames = [bilingual.language_metrics(dict(runs), infos[size], p_low).assign(V=size)
                  for size, runs in per_size.items() if runs]  # fmt: skip
        out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        return out.rename(columns={"language": "scope"})

    def groups(run, size):
        info = decile_info(infos[size])
        last = info["decile"].max()
        per = run.metrics(info.assign(scope="decile " + info["decile"].astype(str)),
                          by=["scope"])  # fmt: skip
        tail = info.assign(scope=np.where(info["decile"] >= last - 1,
                                          f"deciles {last - 1}-{last}", "rest"))  # fmt: skip
        pooled = run.metrics(tail, by=["scope"])
        return pd.concat([per, pooled[pooled["scope"] != "rest"]], ignore_index=True)

    return _stack(per_size, groups)


def differences(per_seed: pd.DataFrame) -> pd.DataFrame:
    """Per V, scope and metric: HNS minus CE paired by seed, with its 95% interval,
    p-value and verdict ('better', 'worse' or 'indistinguishable')."""
    parts = []
    for metric in METRICS:
        d = paired_difference(per_seed, ["V", "scope"], metric, "experiment", TREATMENT,
                              REFERENCE)  # fmt: skip
        d["metric"] = metric
        d["verdict"] = [verdict(metric, lo, hi) for lo, hi in zip(d["diff_lo"], d["diff_hi"],
                                                                  strict=True)]  # fmt: skip
        parts.append(d)
    return pd.concat(parts, ignore_index=True)


def difference_table(diffs: pd.DataFrame, scopes: Sequence[str]) -> pd.DataFrame:
    """HNS − CE as text cells 'diff [lo, hi]' (with '(+)' where HNS is better, '(−)' where
    worse), one row per V and scope, one column per metric."""
    marks = {"better": " (+)", "worse": " (−)", "indistinguishable": ""}
    part = diffs[diffs["scope"].isin(scopes)].copy()
    part["cell"] = [
        format_interval(*interval_of(r, "diff"), digits=4, sign="+") + marks[r["verdict"]]
        for r in part.to_dict("records")
    ]
    table = part.pivot_table(index=["V", "scope"], columns="metric", values="cell",
                             aggfunc="first").reset_index()  # fmt: skip
    table = table[["V", "scope", *[m for m in METRICS if m in table]]]
    return table.rename(columns=METRIC_NAMES)


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


def subword_claims(
    shares: pd.DataFrame,
    single: pd.DataFrame,
    bilingual_metrics: pd.DataFrame,
) -> pd.DataFrame:
    """The chapter's claims, one row per vocabulary size (and S4 once):

    - **S1**: with CE, scenario 2.2 is more than half of the rarest decile's gradient
      (one language; its share against 0.5), and beside it (``primary`` False) its
      share of the update;
    - **S2**: HNS lowers the validation loss of the two rarest deciles (one language);
    - **S3**: HNS raises top-1 on the low-resource language (bilingual);
    - **S4**: 2.2's share of the rarest decile's gradient under CE is higher at the
      largest V than at the smallest (the tail gets more selfish as V grows), and
      beside it the same for the update.

    A frame that is empty (a setting not run) gives no row for its claims.
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
                    f"S1 (V={size})", f"With CE, scenario 2.2 is more than half of the rarest "
                    f"decile's gradient at V = {size}", SOURCE, column, RAREST,
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
        for size in sorted(tail["V"].unique()):
            part = tail[tail["V"] == size]
            scope = part["scope"].iloc[0]
            rows.append(claim_row(
                f"S2 (V={size})", f"HNS lowers the validation loss of the two rarest deciles "
                f"at V = {size}", SOURCE, "loss", scope,
                "CE", seed_series(part, value="loss", experiment=REFERENCE),
                "HNS", seed_series(part, value="loss", experiment=TREATMENT),
                bounds=RANGES["loss"], definition="CE − HNS, nats per token",
            ))  # fmt: skip
    if len(bilingual_metrics):
        low = bilingual_metrics[bilingual_metrics["scope"] == "low"]
        for size in sorted(low["V"].unique()):
            part = low[low["V"] == size]
            rows.append(claim_row(
                f"S3 (V={size})", f"HNS raises top-1 on the low-resource language at "
                f"V = {size}", SOURCE, "top1", "low",
                "HNS", seed_series(part, value="top1", experiment=TREATMENT),
                "CE", seed_series(part, value="top1", experiment=REFERENCE), bounds=RANGES["top1"],
            ))  # fmt: skip
    return pd.DataFrame(rows)


def reading(claims: pd.DataFrame, diffs_single: pd.DataFrame, diffs_bilingual: pd.DataFrame,
            probe: pd.DataFrame) -> Reading:  # fmt: skip
    """The chapter's reading: each claim's verdict with its numbers, the probe's tail."""
    lines, summary = [], {"claims": {}}
    if claims.empty:
        return Reading("No claim: no runs.", summary)
    for rec in claims.to_dict("records"):
        if not rec["primary"]:
            diff = format_interval(*interval_of(rec, "diff"), digits=4, sign="+")
            lines.append(f"  - beside it, {rec['definition']}: {rec['verdict']}, {diff}.")
            continue
        diff = format_interval(*interval_of(rec, "diff"), digits=4, sign="+")
        lines.append(f"- **{rec['claim']}** ({rec['statement']}): **{rec['verdict']}**; "
                     f"{rec['A']} − {rec['B']} = {diff} over {rec['n_seeds']} seeds.")  # fmt: skip
        summary["claims"][rec["claim"]] = {
            "verdict": rec["verdict"],
            "diff": rec["diff"],
            "diff_lo": rec["diff_lo"],
            "diff_hi": rec["diff_hi"],
        }
    for name, diffs, scope in (("one language", diffs_single, None),
                               ("bilingual", diffs_bilingual, "low")):  # fmt: skip
        if diffs is None or diffs.empty:
            continue
        part = diffs[diffs["metric"] == "top1"]
        part = (
            part[part["scope"].str.startswith("deciles")]
            if scope is None
            else part[part["scope"] == scope]
        )
        cells = ", ".join(
            f"V = {int(r['V'])}: " + format_interval(*interval_of(r, "diff"), digits=4, sign="+")
            for r in part.to_dict("records")
        )
        where = "the two rarest deciles" if scope is None else "the low-resource language"
        lines.append(f"- HNS − CE top-1 on {where} ({name}): {cells}.")
    if len(probe):
        mean = probe.groupby(["V", "experiment"])[["kl", "tail_ratio"]].mean().reset_index()
        cells = "; ".join(f"V = {int(r['V'])} {r['experiment']}: KL {r['kl']:.3f}, tail × "
                          f"{r['tail_ratio']:.2f}" for r in mean.to_dict("records"))  # fmt: skip
        lines.append(f"- The unigram probe (mean over seeds): {cells}. A tail ratio above 1: "
                     "the embedding's frequency direction gives the rarest decile more mass "
                     "than the training stream does.")  # fmt: skip
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
    scopes: dict[str, str]  # the scopes of the effect chart -> their titles
    probe: pd.DataFrame  # the unigram probe per V and run
    claims: pd.DataFrame
    reading: Reading

    @property
    def all_diffs(self) -> pd.DataFrame:
        """The differences of every setting in one frame."""
        frames = [d for d in self.diffs.values() if len(d)]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def difference_table(self, setting: str) -> pd.DataFrame:
        """``difference_table`` of ``setting`` on its scopes of the effect chart."""
        return difference_table(
            self.diffs[setting], [s for s in self.scopes if s in set(self.diffs[setting]["scope"])]
        )


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
    shares, shares_per_seed, per_seed, diffs, scopes = {}, {}, {}, {}, {}
    for setting, per_size in runs.items():
        shares_per_seed[setting], shares[setting] = scenario_shares(per_size, infos[setting])
        per_seed[setting] = metrics_per_seed(per_size, infos[setting], setting, p_low)
        diffs[setting] = differences(per_seed[setting])
        if setting == "single":
            scopes.update({s: f"{s} (one language)" for s in per_seed[setting]["scope"].unique()
                           if str(s).startswith("deciles")})  # fmt: skip
        else:
            scopes["low"] = "low-resource language"
    probed = "bilingual" if "bilingual" in runs else next(iter(runs))
    probes = probe_table(runs[probed], corpora, infos[probed], **probe)
    empty = pd.DataFrame()
    table = subword_claims(shares_per_seed.get("single", empty), per_seed.get("single", empty),
                           per_seed.get("bilingual", empty))  # fmt: skip
    read = reading(table, diffs.get("single"), diffs.get("bilingual"), probes)
    return Scale(shares, shares_per_seed, per_seed, diffs, scopes, probes, table, read)
