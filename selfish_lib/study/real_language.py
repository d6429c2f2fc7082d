"""Chapter 10: a real low-resource language beside English.

Chapter 04's low-resource language is a cipher: Shakespeare with every id shifted, the
high-resource language's statistics in other symbols. Here the second language is real
running text from the ``elotl`` corpora (``engine.languages``): Nahuatl, with Otomí as
a replication, at the profile's 2% of the training blocks, in two alphabet modes:

- ``disjoint``: every character of the language gets an id of its own (the cipher's
  structure, with real text);
- ``shared``: one vocabulary over both texts, a character English has keeps English's
  id and its row serves both languages (what a Latin-script language really meets).

The chapter's cells are the language in both modes and the replication language in
'disjoint' mode, each with CE, HNS at ``layout`` and untied CE; the cipher's CE and HNS
runs (chapter 04's) stand beside them. The primary cell's CE and HNS train at every seed
of the profile, the rest at the first ``Profile.real_language['seeds']``.

Every table keeps the two languages apart: each language is evaluated on its own
validation text (``evaluation.evaluate_languages``); frequency groups are each
language's own ranks; a row of the embedding ('shared' only) may serve both languages,
and the tables say so (``shared_row``, the rows' ``language`` 'both').
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from ..engine.corpus import Corpus
from ..engine.evaluation import METRICS, add_metrics, aggregate
from ..engine.languages import (
    ALPHABETS,
    BOTH,
    CIPHER,
    HIGH,
    LOW,
    REAL_LANGUAGES,
    TwoLanguageCorpus,
    check_alphabet,
    corpus_statistics,
    display,
    generate_in_language,
    language_text,
    limit_split,
    split_by_document,
    split_summary,
    statistics_table,
)
from ..engine.objectives import CrossEntropy, HardNegatives
from ..engine.profiles import Profile
from ..engine.training import TrainConfig, training_corpus
from ..engine.validation import ParameterError, check_choice, check_float
from .claims import NOT_WORSE_ACCURACY_MARGIN, claim_row, evidence_note
from .frequency import verdict
from .gradients import group_shares, token_totals
from .readings import METRIC_NAMES, Reading, clipping_note, format_interval, interval_of
from .stats import RANGES, aggregate_seeds, any_clipped, mean_ci, paired_difference

SOURCE = "10_real_language"
ARMS = ("CE", "HNS", "CE untied")
COMPARISONS = {"HNS": "HNS − CE", "CE untied": "CE untied − CE"}
# The languages in prose and on axes.
LANGUAGE_TITLES = {CIPHER: "cipher", "nahuatl": "Nahuatl", "otomi": "Otomí", "mixtec": "Mixtec"}
ENGLISH = "English"
# The registered contrasts (claims.PRIMARY_CONTRASTS): R1 on Nahuatl in 'shared' mode,
# R3 on Otomí in 'disjoint' mode. Other parameters give the same rows, exploratory.
REGISTERED_LANGUAGE, REGISTERED_ALPHABET = "nahuatl", "shared"
REPLICATION, REPLICATION_ALPHABET = "otomi", "disjoint"
# R2: the cipher predicts the real effect's size when the two effects (HNS − CE on the
# low-resource top-1, per seed) differ by less than one point of top-1 accuracy.
PREDICTION_MARGIN = 2 * NOT_WORSE_ACCURACY_MARGIN
# What the rows of the embedding serve, in prose.
ROW_TITLES = {HIGH: "English only", BOTH: "both languages", LOW: "the language only"}
PROMPT_CHARS = 40  # the prompt of a sample: the start of the validation text's first row


@dataclass(frozen=True)
class Cell:
    """One second language of the chapter: the language and its alphabet mode (the
    cipher has one mode, its own)."""

    language: str
    alphabet: str = "disjoint"

    @property
    def title(self) -> str:
        """'Nahuatl shared', 'Otomí disjoint', or 'cipher'."""
        name = LANGUAGE_TITLES[self.language]
        return name if self.language == CIPHER else f"{name} {self.alphabet}"


CIPHER_CELL = Cell(CIPHER)


def check_chapter_language(name: str, value) -> str:
    """The chapter's low-resource language: a real one ('nahuatl', 'otomi', 'mixtec'; the
    cipher stands beside it anyway)."""
    if value == CIPHER:
        raise ParameterError(
            name, value, "a real language: " + ", ".join(repr(x) for x in REAL_LANGUAGES)
            + " (the chapter always shows the cipher beside it)",
        )  # fmt: skip
    return check_choice(name, value, REAL_LANGUAGES)


def replication_of(language: str) -> str:
    """The language that replicates the chapter's: Otomí, or Nahuatl when the chapter's
    language is Otomí."""
    language = check_chapter_language("language", language)
    return REPLICATION if language != REPLICATION else REGISTERED_LANGUAGE


def chapter_cells(language: str, alphabet: str) -> tuple[Cell, Cell, Cell]:
    """The primary cell (``language`` in ``alphabet``), the same language in the other
    mode, and the replication language in 'disjoint' mode."""
    language = check_chapter_language("language", language)
    alphabet = check_alphabet("alphabet", alphabet)
    other = next(a for a in ALPHABETS if a != alphabet)
    return (Cell(language, alphabet), Cell(language, other),
            Cell(replication_of(language), REPLICATION_ALPHABET))  # fmt: skip


def is_registered(language: str, alphabet: str) -> bool:
    """Whether the chapter runs with the parameters its primary contrasts were
    registered for (R1: Nahuatl, 'shared'; R3: Otomí, 'disjoint')."""
    return (language, alphabet) == (REGISTERED_LANGUAGE, REGISTERED_ALPHABET)


def arm_of(config: TrainConfig) -> str:
    """'CE', 'HNS' or 'CE untied' (an untied CE run)."""
    return config.objective.arm if config.model.tie_embeddings else f"{config.objective.arm} untied"


def chapter_configs(profile: Profile, language: str, alphabet: str, layout: float) -> dict:
    """(cell title, arm, seed) -> TrainConfig for every run of the chapter's three cells:
    CE and HNS at ``layout`` of the primary cell at every seed of ``profile``; untied CE
    there, and every arm of the other cells, at ``profile.language_seeds()``."""
    objectives = {"CE": CrossEntropy(), "HNS": HardNegatives(layout), "CE untied": CrossEntropy()}
    out = {}
    for index, cell in enumerate(chapter_cells(language, alphabet)):
        for arm in ARMS:
            every = index == 0 and arm != "CE untied"
            for seed in profile.seeds if every else profile.language_seeds():
                untied = {"tie_embeddings": False} if arm == "CE untied" else {}
                out[(cell.title, arm, seed)] = profile.language_config(
                    cell.language, cell.alphabet, objectives[arm], seed, **untied
                )
    return out


def cipher_configs(profile: Profile, layout: float) -> dict:
    """('cipher', arm, seed) -> the cipher's CE and HNS runs at every seed: chapter 04's
    baseline and HNS runs (the same configs, so the store trains them once)."""
    objectives = {"CE": CrossEntropy(), "HNS": HardNegatives(layout)}
    return {(CIPHER_CELL.title, arm, seed): profile.config("bilingual", objective, seed)
            for arm, objective in objectives.items() for seed in profile.seeds}  # fmt: skip


# --- the corpora ----------------------------------------------------------------------------


def corpora_statistics(english: Corpus) -> pd.DataFrame:
    """English and each real language side by side: documents, rows, characters, distinct
    characters, those English also has (``shared``, ``overlap``), the non-ASCII share and
    the rarest symbols (``languages.corpus_statistics``; English counted alike, its text
    one document)."""
    alphabet = english.tokenizer.symbols
    body = english.text
    counts = Counter(body)
    rarest = sorted(counts.items(), key=lambda kv: (kv[1], kv[0]))[:10]
    first = {
        "language": ENGLISH, "documents": 1, "rows": body.count("\n"),
        "characters": len(body), "distinct": len(counts), "shared": len(counts),
        "overlap": 1.0, "non_ascii_share": sum(n for c, n in counts.items() if not c.isascii())
        / len(body), "non_ascii_distinct": sum(not c.isascii() for c in counts),
        "rows_equal_to_spanish": 0,
        "rarest": " ".join(f"{display(c)}:{n}" for c, n in rarest),
    }  # fmt: skip
    stats = [corpus_statistics(language_text(name), alphabet) for name in REAL_LANGUAGES]
    table = statistics_table(stats)
    table["language"] = table["language"].map(LANGUAGE_TITLES)
    return pd.concat([pd.DataFrame([first]), table], ignore_index=True)


def corpora_splits(chars: int = 0) -> pd.DataFrame:
    """Each real language's split by document (``languages.split_summary``), whole and,
    with ``chars`` > 0, as a run of this profile reads it (``limit_split``)."""
    parts = []
    for name in REAL_LANGUAGES:
        split = split_by_document(language_text(name))
        views = [("whole corpus", split)]
        if chars:
            views.append((f"first {chars:,} characters per side", limit_split(split, chars)))
        for view, part in views:
            summary = split_summary(part).assign(read=view)
            summary["language"] = LANGUAGE_TITLES[name]
            parts.append(summary)
    return pd.concat(parts, ignore_index=True)


def corpora_frequencies(english: Corpus) -> pd.DataFrame:
    """Per language (English and each real one) and character: count, share of the
    text, rank (1 = most frequent; ties by code point) and ``in_english`` (English has
    the character)."""
    alphabet = set(english.tokenizer.symbols)
    texts = {ENGLISH: english.text} | {LANGUAGE_TITLES[n]: language_text(n).text
                                       for n in REAL_LANGUAGES}  # fmt: skip
    rows = []
    for name, body in texts.items():
        counts = sorted(Counter(body).items(), key=lambda kv: (-kv[1], kv[0]))
        for rank, (ch, n) in enumerate(counts, start=1):
            rows.append({"language": name, "symbol": ch, "display": display(ch), "count": n,
                         "share": n / len(body), "rank": rank,
                         "in_english": ch in alphabet})  # fmt: skip
    return pd.DataFrame(rows)


# --- the runs' tables -------------------------------------------------------------------------


class Infos:
    """The token tables of each run's corpus, built once per language, alphabet and
    slice: ``token`` (the evaluation table's rows, ``token_info``) and ``rows`` (the
    embedding rows, ``row_info``)."""

    def __init__(self, corpus: Corpus) -> None:
        self.corpus = corpus
        self._cache: dict[tuple, tuple[pd.DataFrame, pd.DataFrame, Corpus]] = {}

    def _entry(self, config: TrainConfig) -> tuple[pd.DataFrame, pd.DataFrame, Corpus]:
        key = (config.language, config.alphabet, config.language_chars, config.tokenizer)
        if key not in self._cache:
            run_corpus = training_corpus(self.corpus, config)
            token = run_corpus.token_info(bilingual=True)
            if not isinstance(run_corpus, TwoLanguageCorpus):  # the cipher: rows are ids
                token = token.assign(model_token=token["token"], shared_row=False)
            self._cache[key] = (token, run_corpus.row_info(bilingual=True), run_corpus)
        return self._cache[key]

    def token(self, config: TrainConfig) -> pd.DataFrame:
        """The rows of the run's evaluation table (language 'high' or 'low')."""
        return self._entry(config)[0]

    def rows(self, config: TrainConfig) -> pd.DataFrame:
        """The run's embedding rows (language 'high', 'low' or 'both')."""
        return self._entry(config)[1]

    def run_corpus(self, config: TrainConfig) -> Corpus:
        """The corpus the run trained on (``training.training_corpus``)."""
        return self._entry(config)[2]


def _stack(runs: Mapping, table) -> pd.DataFrame:
    """``table(key, run)`` for every run, with cell, arm and seed in front."""
    frames = []
    for key, run in runs.items():
        part = table(key, run)
        if part is None or part.empty:
            continue
        part = part.copy()
        part.insert(0, "seed", run.config.seed)
        part.insert(0, "arm", arm_of(run.config))
        part.insert(0, "cell", key[0])
        frames.append(part)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def describe_runs(runs: Mapping, infos: Infos) -> pd.DataFrame:
    """One row per run: cell, arm, seed, its id, steps, the model's vocabulary (English's
    ids and the language's new ones), training seconds and the final validation loss on
    each language's text."""

    def row(key, run) -> pd.DataFrame:
        final = aggregate(_final(run), infos.token(run.config), by=["language"])
        loss = final.set_index("language")["loss"]
        corpus = infos.run_corpus(run.config)
        return pd.DataFrame([{
            "id": run.id, "steps": run.config.max_steps,
            "vocabulary": corpus.model_vocab_size(run.config.bilingual),
            "train_seconds": run.meta.get("train_seconds"),
            "val_loss_english": loss.get(HIGH), "val_loss_language": loss.get(LOW),
        }])  # fmt: skip

    return _stack(runs, row)


def _final(run) -> pd.DataFrame:
    ev = run.eval_tokens
    return ev[ev["step"] == ev["step"].max()]


def language_metrics(runs: Mapping, infos: Infos) -> pd.DataFrame:
    """Per run (cell, arm, seed) and side ('high': English's validation text, 'low': the
    second language's): the final whole-text count, loss, top-1, recall@5 and MRR."""

    def per_side(key, run) -> pd.DataFrame:
        out = aggregate(_final(run), infos.token(run.config), by=["language"])
        return out.rename(columns={"language": "side"})

    return _stack(runs, per_side)


def final_table(per_seed: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(table, differences)``: per cell, arm and side each metric's mean and 95%
    interval over seeds; and per cell, side and metric the paired differences HNS − CE
    and CE untied − CE (column ``comparison``) with their intervals and HNS's verdict
    word (``frequency.verdict``: better, worse, indistinguishable)."""
    table = aggregate_seeds(per_seed, ["cell", "arm", "side"], list(METRICS))
    parts = []
    for arm, comparison in COMPARISONS.items():
        if arm not in set(per_seed["arm"]):
            continue
        for metric in METRICS:
            d = paired_difference(per_seed, ["cell", "side"], metric, "arm", arm, "CE")
            d = d.assign(metric=metric, comparison=comparison)
            d["verdict"] = [verdict(metric, lo, hi) for lo, hi in zip(d["diff_lo"], d["diff_hi"],
                                                                        strict=True)]  # fmt: skip
            parts.append(d)
    return table, pd.concat(parts, ignore_index=True)


def _group_order(label: str) -> int:
    return int(str(label).split("-")[0])


def group_metrics(runs: Mapping, infos: Infos) -> pd.DataFrame:
    """Per run and frequency group of the low-resource language (its own ranks, by its
    training counts): the final validation metrics on its text, ``characters`` in the
    group and ``shared_rows`` among them (rows that also serve English)."""

    def per_group(key, run) -> pd.DataFrame:
        info = infos.token(run.config)
        low = info[info["language"] == LOW]
        out = aggregate(_final(run), low, by=["group"])
        size = low.groupby("group").agg(characters=("token", "size"),
                                        shared_rows=("shared_row", "sum"))  # fmt: skip
        out = out.merge(size.reset_index(), on="group", how="left")
        out["order"] = out["group"].map(_group_order)
        return out.sort_values("order").drop(columns="order")

    return _stack(runs, per_group)


def group_differences(per_group: pd.DataFrame) -> pd.DataFrame:
    """Per cell, group and metric: HNS − CE on the low-resource language's text, paired
    by seed, with the verdict word; ``order`` sorts the groups by rank."""
    parts = []
    for metric in METRICS:
        d = paired_difference(per_group, ["cell", "group"], metric, "arm", "HNS", "CE")
        d["metric"] = metric
        d["verdict"] = [verdict(metric, lo, hi) for lo, hi in zip(d["diff_lo"], d["diff_hi"],
                                                                    strict=True)]  # fmt: skip
        parts.append(d)
    out = pd.concat(parts, ignore_index=True)
    out["order"] = out["group"].map(_group_order)
    return out.sort_values(["cell", "metric", "order"]).reset_index(drop=True)


def token_metrics(run, infos: Infos) -> pd.DataFrame:
    """Per character of the low-resource language, one run: token (evaluation row),
    model_token, symbol, display, rank, group, train_count, val_count, shared_row;
    ``train_loss``, the mean training cross-entropy of the positions whose target it is
    (over every logged step; for a shared row, English's positions included; NaN for a
    character never a training target), and the final validation count, loss, top-1,
    recall@5 and MRR on the language's text (NaN for a character absent from it). Every
    character of the vocabulary is listed: none is dropped for lack of data."""
    info = infos.token(run.config)
    low = info[info["language"] == LOW].drop(columns="language")
    final = add_metrics(_final(run).drop(columns="step"))
    val = final[["token", "count", *METRICS]].rename(columns={"count": "count_val"})
    out = low.merge(val, on="token", how="left")
    out["count_val"] = out["count_val"].fillna(0).astype(int)
    trained = run.train_tokens.groupby("token")[["count", "ce_sum"]].sum()
    trained = trained.reindex(out["model_token"])
    out["train_loss"] = (trained["ce_sum"] / trained["count"].where(trained["count"] > 0)
                         ).to_numpy()  # fmt: skip
    return out.sort_values("rank").reset_index(drop=True)


def rarest_characters(runs: Mapping, infos: Infos, cell: str, n: int = 12) -> pd.DataFrame:
    """The ``n`` rarest characters of ``cell``'s language (by training count; those seen
    only in validation first among equals) with each arm's mean validation top-1 and
    loss over seeds (NaN where the character is absent from the validation text)."""
    parts = []
    for key, run in runs.items():
        if key[0] != cell or arm_of(run.config) not in ("CE", "HNS"):
            continue
        table = token_metrics(run, infos).assign(arm=arm_of(run.config), seed=run.config.seed)
        parts.append(table)
    if not parts:
        return pd.DataFrame()
    every = pd.concat(parts, ignore_index=True)
    keys = ["rank", "display", "train_count", "val_count", "shared_row"]
    rarest = every[keys].drop_duplicates("rank").sort_values("rank", ascending=False).head(n)
    # the mean over seeds keeps NaN (no validation position) as NaN, never as 0
    means = every.groupby(["rank", "arm"])[["top1", "loss"]].mean().unstack("arm")
    means.columns = [f"{arm} {metric}" for metric, arm in means.columns]
    return rarest.merge(means.reset_index(), on="rank", how="left").reset_index(drop=True)


def nontarget_shares(runs: Mapping, infos: Infos) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scenario 2.2's share of the gradient (``gradients.group_shares``: summed over the
    logged steps, both definitions) of the embedding rows, by what the rows serve:
    'high' (English only), 'both' (a shared row) and 'low' (the second language only).
    Returns (per seed, aggregated over seeds with intervals). Runs without a scenario
    log are left out."""

    def per_rows(key, run) -> pd.DataFrame | None:
        if run.scenarios.empty:
            return None
        rows = infos.rows(run.config)[["token", "language"]].assign(group="all")
        shares = group_shares(token_totals(run.scenarios), rows)
        return shares.rename(columns={"language": "rows"}).drop(columns="group")

    per_seed = _stack(runs, per_rows)
    if per_seed.empty:
        return per_seed, per_seed
    values = [c for c in ("share_nontarget", "share_nontarget_pp") if c in per_seed]
    return per_seed, aggregate_seeds(per_seed, ["cell", "arm", "rows"], values)


# --- the cipher's prediction and the claims -------------------------------------------------


def _effects(per_seed: pd.DataFrame, cell: str, metric: str = "top1") -> pd.Series:
    """HNS − CE of ``metric`` on the low-resource text of ``cell``, per seed."""
    low = per_seed[(per_seed["cell"] == cell) & (per_seed["side"] == LOW)]
    wide = low.pivot_table(index="seed", columns="arm", values=metric)
    if not {"HNS", "CE"} <= set(wide.columns):
        return pd.Series(dtype=float)
    return (wide["HNS"] - wide["CE"]).dropna()


def cipher_prediction(per_seed: pd.DataFrame, metric: str = "top1") -> pd.DataFrame:
    """Per real cell: its effect (HNS − CE of ``metric`` on the low-resource text, mean
    and 95% interval over seeds) beside the cipher's, whether the two point the same way
    (``same_direction``: both means of one sign), and whether the real mean lies inside
    the cipher's interval (``inside_cipher_interval``)."""
    cipher = _effects(per_seed, CIPHER_CELL.title, metric)
    c_mean, c_lo, c_hi, c_n = mean_ci(cipher.to_numpy(dtype=float))
    rows = []
    for cell in dict.fromkeys(per_seed["cell"]):
        if cell == CIPHER_CELL.title:
            continue
        real = _effects(per_seed, cell, metric)
        mean, lo, hi, n = mean_ci(real.to_numpy(dtype=float))
        rows.append({
            "cell": cell, "metric": metric, "real": mean, "real_lo": lo, "real_hi": hi,
            "real_seeds": n, "cipher": c_mean, "cipher_lo": c_lo, "cipher_hi": c_hi,
            "cipher_seeds": c_n,
            "same_direction": bool(math.copysign(1, mean) == math.copysign(1, c_mean))
            if not (math.isnan(mean) or math.isnan(c_mean)) else None,
            "inside_cipher_interval": bool(c_lo <= mean <= c_hi)
            if not any(math.isnan(v) for v in (mean, c_lo, c_hi)) else None,
        })  # fmt: skip
    return pd.DataFrame(rows)


DEFINITION = ("final whole-text validation {metric} on the {language} validation documents "
              "(a split by document), ranks counting ties against the target")  # fmt: skip


def _language_rows(per_seed, claim, statement, cell: Cell, primary: bool) -> list[dict]:
    """A claim on HNS against CE in ``cell``'s low-resource text: top-1 (the claim's
    metric; primary when ``primary``) and, beside it, recall@5 and MRR."""
    low = per_seed[(per_seed["cell"] == cell.title) & (per_seed["side"] == LOW)]
    rows = []
    for metric in ("top1", "recall5", "mrr"):
        name = METRIC_NAMES[metric]
        series = {arm: low[low["arm"] == arm].set_index("seed")[metric] for arm in ("HNS", "CE")}
        definition = DEFINITION.format(metric=name, language=LANGUAGE_TITLES[cell.language])
        if metric != "top1":
            definition += "; reported beside top-1, the claim's metric"
        rows.append(claim_row(
            claim, statement.format(metric=name), SOURCE, name, f"{cell.title} alphabet",
            "HNS", series["HNS"], "CE", series["CE"], bounds=RANGES[metric],
            definition=definition, primary=primary and metric == "top1",
        ))  # fmt: skip
    return rows


def chapter_claims(per_seed: pd.DataFrame, language: str, alphabet: str) -> pd.DataFrame:
    """The chapter's claims: R1 (HNS raises the language's top-1, in the primary cell),
    R3 (the replication language, 'disjoint') and R2 (the cipher predicts the real
    effect: HNS − CE on the low-resource top-1 of the primary cell, against the
    cipher's, per seed, *similar* within ±``PREDICTION_MARGIN``; exploratory). R1 and R3
    are the registered primary contrasts only for the registered parameters (Nahuatl,
    'shared'); with others their rows are exploratory."""
    first, _, replication = chapter_cells(language, alphabet)
    registered = is_registered(language, alphabet)
    name = LANGUAGE_TITLES[first.language]
    rows = _language_rows(per_seed, "R1", f"HNS has higher {{metric}} than CE on {name} "
                          f"({first.alphabet} alphabet).", first, registered)  # fmt: skip
    real, cipher = _effects(per_seed, first.title), _effects(per_seed, CIPHER_CELL.title)
    if len(real) and len(cipher):
        rows.append(claim_row(
            "R2", f"The cipher predicts the size and direction of HNS's effect on {name}'s "
            f"top-1 accuracy (within ±{PREDICTION_MARGIN}).", SOURCE,
            "top-1 accuracy gain over CE", f"{first.title} against the cipher",
            f"HNS − CE, {first.title}", real, "HNS − CE, cipher", cipher, kind="similar",
            margin=PREDICTION_MARGIN, bounds=RANGES["top1"],
            definition="per seed, HNS − CE of the final low-resource top-1 in each setting; the "
            "real language's and the cipher's runs paired by seed (independent runs)",
        ))  # fmt: skip
    rep = LANGUAGE_TITLES[replication.language]
    rows += _language_rows(per_seed, "R3", f"{rep} replicates R1: HNS has higher {{metric}} "
                           f"than CE on {rep} ({replication.alphabet} alphabet).", replication,
                           registered)  # fmt: skip
    return pd.DataFrame(rows)


# --- samples ----------------------------------------------------------------------------------


def _first_row(text: str) -> str:
    """The start of the first whole non-empty row of ``text`` (the text may begin inside
    a row: English's validation split is cut from running text)."""
    rows = [row for row in text.split("\n")[1:] if row.strip()] or [text]
    return rows[0][:PROMPT_CHARS]


def prompts(run_corpus: TwoLanguageCorpus) -> dict[str, str]:
    """The prompt of each side: the start of the first whole row of its validation text
    (a newline before it, so that the row begins as rows do)."""
    english = run_corpus.tokenizer.decode(run_corpus.val[:2000].tolist())
    language = "\n" + run_corpus.second.split.val_text
    return {HIGH: "\n" + _first_row(english), LOW: "\n" + _first_row(language)}


def sample_texts(
    runs: Mapping,
    infos: Infos,
    seed: int,
    length: int,
    temperature: float,
    top_p: float,
    device: str = "cpu",
) -> dict:
    """(cell, arm, side) -> (prompt, text, share): what the CE and HNS runs of seed
    ``seed`` of each real cell write after a prompt in each language (``prompts``), and
    the share of the sampled characters whose id that language's text has."""
    temperature = check_float("temperature", temperature, 0.0, min_inclusive=False)
    out = {}
    for key, run in runs.items():
        cell, arm = key[0], arm_of(run.config)
        if run.config.seed != seed or arm not in ("CE", "HNS") or cell == CIPHER_CELL.title:
            continue
        run_corpus = infos.run_corpus(run.config)
        model = run.model(device)
        for index, (side, prompt) in enumerate(prompts(run_corpus).items()):
            # each side its own draws: under 'shared' the same draws would copy one text
            text, share = generate_in_language(model, run_corpus, side, prompt, length,
                                               temperature, top_p, 2 * seed + index,
                                               device)  # fmt: skip
            out[(cell, arm, side)] = (prompt, text, share)
    return out


def samples_markdown(samples: Mapping) -> str:
    """The samples as Markdown: a heading per run and language, the prompt, the text."""
    fence = "~~~~"  # the text may contain backticks
    parts = []
    for (cell, arm, side), (prompt, text, share) in samples.items():
        where = ENGLISH if side == HIGH else cell
        parts.append(f"**{cell}, {arm}, prompted in {where}** ({share:.0%} of the sampled "
                     f"characters in that language's alphabet)\n\n{fence}{prompt}{text}\n"
                     f"{fence}\n")  # fmt: skip
    return "\n".join(parts)


# --- the reading ------------------------------------------------------------------------------


def reading(
    diffs: pd.DataFrame,
    prediction: pd.DataFrame,
    shares: pd.DataFrame,
    claims: pd.DataFrame,
    cells: Sequence[Cell],
) -> Reading:
    """What the numbers say: per cell HNS − CE and CE untied − CE on the low-resource
    text (top-1 and loss), the cipher's effect beside the real ones, scenario 2.2's share
    of the rows only the language uses, and every claim's verdict."""
    clipped = any_clipped(diffs)
    summary: dict = {"cells": {}, "claims": {}, "intervals_clipped": clipped}
    lines = []
    low = diffs[diffs["side"] == LOW]
    for cell in [*cells, CIPHER_CELL]:
        part = low[low["cell"] == cell.title]
        cells_text = []
        for comparison in COMPARISONS.values():
            for metric in ("top1", "loss"):
                row = part[(part["comparison"] == comparison) & (part["metric"] == metric)]
                if row.empty:
                    continue
                r = row.iloc[0]
                text = format_interval(*interval_of(r, "diff"), digits=4, sign="+")
                summary["cells"].setdefault(cell.title, {}).setdefault(comparison, {})[metric] = {
                    "diff": r["diff"],
                    "ci": [r["diff_lo"], r["diff_hi"]],
                    "verdict": r["verdict"],
                }
                cells_text.append(f"{comparison} {METRIC_NAMES[metric]} {text} "
                                  f"(**{r['verdict']}**)")  # fmt: skip
        if cells_text:
            lines.append(f"- **{cell.title}**: " + "; ".join(cells_text) + ".")
    predicted = []
    for row in prediction.to_dict("records"):
        summary.setdefault("cipher_prediction", {})[row["cell"]] = {
            "same_direction": row["same_direction"],
            "inside_cipher_interval": row["inside_cipher_interval"],
        }
        sign = {True: "has the sign of", False: "has the opposite sign to",
                None: "cannot be compared with"}[row["same_direction"]]  # fmt: skip
        inside = {True: "lies inside", False: "lies outside", None: "cannot be placed in"}[
            row["inside_cipher_interval"]
        ]
        real = format_interval(*interval_of(row, "real"), digits=4, sign="+")
        cipher = format_interval(*interval_of(row, "cipher"), digits=4, sign="+")
        predicted.append(f"- {row['cell']}: HNS − CE {real}; its mean {sign} the cipher's "
                         f"{cipher} and {inside} the cipher's interval.")  # fmt: skip
    share_lines = []
    if not shares.empty:
        only = shares[shares["rows"] == LOW]
        for cell in cells:
            part = only[only["cell"] == cell.title].set_index("arm")
            if not {"CE", "HNS"} <= set(part.index):
                continue
            ce, hns = part.loc["CE"], part.loc["HNS"]
            shown = {
                arm: format_interval(*interval_of(part.loc[arm], "share_nontarget"), digits=1,
                                     percent=True)
                for arm in ("CE", "HNS")
            }  # fmt: skip
            share_lines.append(f"- {cell.title}: {shown['CE']} under CE, {shown['HNS']} under HNS")
            summary.setdefault("language_rows_nontarget_share", {})[cell.title] = {
                "CE": ce["share_nontarget"],
                "HNS": hns["share_nontarget"],
            }
    verdict_lines = []
    for row in claims.to_dict("records"):
        key = f"{row['claim']} {row['scope']} {row['metric']}"
        summary["claims"][key] = row["verdict"]
        verdict_lines.append(f"- {row['claim']} ({row['scope']}, {row['metric']}, "
                             f"{row.get('family', 'exploratory')}): {row['statement']} "
                             f"**{row['verdict']}**" + evidence_note(row))  # fmt: skip
    text = "\n".join([
        "On each low-resource language's own validation text, HNS and untied CE against CE "
        "(95% intervals paired by seed; *better* means lower loss or higher accuracy):",
        "", *lines, *clipping_note(clipped), "",
        "The cipher's prediction (HNS − CE on the low-resource top-1):", "", *predicted, "",
        *(["Scenario 2.2's share of the gradient of the rows only the second language uses:",
           "", *share_lines, ""] if share_lines else []),
        "The claims of this chapter:", "", *verdict_lines,
    ])  # fmt: skip
    return Reading(text, summary)
