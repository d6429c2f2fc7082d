"""Chapter 09, what HNS does to sampling: nucleus coverage and size, calibration, and the
noise in sampled text.

HNS never pushes down an easy negative, so the mass it leaves on implausible tokens
could make sampled text worse even where the target ranks first more often. Measured
on the whole validation split, per language (bilingual) or frequency group (one
language), for CE and HNS:

- **nucleus coverage**: the share of positions whose target lies inside the top-p
  nucleus of the model's full softmax, at p in ``engine.evaluation.NUCLEUS_MASSES``,
  and the nucleus **size** (tokens) at those p;
- **calibration**: the expected calibration error of the top-1 probability over
  ``N_BINS`` equal-mass bins (each holds the same number of positions, in order of
  confidence; ECE = sum over bins of (share of positions) x |accuracy - mean
  confidence|), the reliability diagram, and the Brier score beside the loss;
- **sampled text**: the share of character bigrams of text sampled at top-p 0.9 and
  temperature 1 that never occur in the training text, per language, next to the same
  share for the validation text itself, the floor;
- the claim N1, "HNS's ranking gain survives nucleus sampling", and the nucleus-margin
  lemma of notebook 06 against the measured nuclei: every token inside a top-p nucleus
  has probability at least (1 - p) / V, which is why no token HNS excludes at a layout
  of ln V - ln(1 - p) or more can be sampled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..engine.corpus import Corpus
from ..engine.evaluation import NUCLEUS_MASSES, sampling_values
from ..engine.samples import generate_streams
from ..engine.validation import ParameterError, check_int
from .claims import NOT_WORSE_ACCURACY_MARGIN, claim_row, seed_series
from .readings import LANGUAGE_NAMES, Reading, clipping_note, format_interval, interval_of
from .stats import RANGES, aggregate_seeds

SOURCE = "09_sampling"
N_BINS = 15  # equal-mass bins of the expected calibration error
CLAIM_MASS = 0.9  # N1 compares coverage at top-p 0.9
RARE_FROM_RANK = 51  # one language: ranks 51-65 pooled are "the rare tokens"
REFERENCE, TREATMENT = "CE", "HNS"
STREAMS = 16  # the sampled symbols of a run are drawn as this many parallel samples


def equal_mass_bins(confidence: np.ndarray, bins: int = N_BINS) -> np.ndarray:
    """The bin (0 .. bins-1) of each position: positions sorted by confidence (ties in
    position order) and cut into ``bins`` runs of equal size (the first ones one larger
    when the count does not divide)."""
    bins = check_int("bins", bins, 1)
    n = len(confidence)
    order = np.argsort(np.asarray(confidence), kind="stable")
    out = np.empty(n, dtype=np.int64)
    for k, chunk in enumerate(np.array_split(order, min(bins, max(n, 1)))):
        out[chunk] = k
    return out


def reliability(confidence, correct, bins: int = N_BINS) -> pd.DataFrame:
    """Per equal-mass bin: its positions, mean confidence and accuracy (the reliability
    diagram; a calibrated model has accuracy = confidence in every bin)."""
    confidence, correct = np.asarray(confidence, float), np.asarray(correct, float)
    if confidence.shape != correct.shape or confidence.ndim != 1 or not len(confidence):
        allowed = "a non-empty 1-D array with one correctness value per entry"
        raise ParameterError("confidence", f"an array of shape {confidence.shape}", allowed)
    which = equal_mass_bins(confidence, bins)
    frame = pd.DataFrame({"bin": which, "confidence": confidence, "accuracy": correct})
    table = frame.groupby("bin").agg(count=("bin", "size"), confidence=("confidence", "mean"),
                                     accuracy=("accuracy", "mean"))  # fmt: skip
    return table.reset_index()


def expected_calibration_error(confidence, correct, bins: int = N_BINS) -> float:
    """ECE over equal-mass bins: sum over bins of (bin's share of the positions) x
    |its accuracy - its mean confidence|."""
    table = reliability(confidence, correct, bins)
    weights = table["count"] / table["count"].sum()
    return float((weights * (table["accuracy"] - table["confidence"]).abs()).sum())


def bigrams(text: str) -> set[str]:
    """The distinct character bigrams of ``text``."""
    return {text[i : i + 2] for i in range(len(text) - 1)}


def unseen_bigram_rate(text: str | Sequence[str], known: set[str]) -> float:
    """The share of the bigrams of ``text`` (with repetition; of each text in turn when
    several are given, never across two) that are not in ``known``."""
    texts = [text] if isinstance(text, str) else list(text)
    pairs = [t[i : i + 2] for t in texts for i in range(len(t) - 1)]
    if not pairs:
        raise ParameterError("text", text, "a text of at least two characters")
    return sum(pair not in known for pair in pairs) / len(pairs)


def split_values(run, corpus: Corpus, device: str = "cpu") -> pd.DataFrame:
    """``sampling_values`` of a run's final model on the whole validation split, in both
    alphabets for a bilingual run (column ``language``)."""
    model = run.model(device)
    frames = [sampling_values(model, corpus.val, device=device).assign(language="high")]
    if run.config.bilingual:
        low = sampling_values(model, corpus.val + corpus.vocab_size, device=device)
        frames.append(low.assign(language="low"))
    return pd.concat(frames, ignore_index=True)


def _scopes(values: pd.DataFrame, token_info: pd.DataFrame, setting: str) -> pd.DataFrame:
    """The positions with their ``scope``: the language (bilingual), or the frequency
    group and the rare tokens pooled (one language); a position may be in two scopes."""
    if setting == "bilingual":
        return values.assign(scope=values["language"])
    info = token_info.set_index("token")
    groups = values.assign(scope=values["token"].map(info["group"]).to_numpy())
    rank = values["token"].map(info["rank"]).to_numpy()
    rare = values[rank >= RARE_FROM_RANK].assign(scope=f"ranks {RARE_FROM_RANK}+")
    return pd.concat([groups, rare, values.assign(scope="all")], ignore_index=True)


def run_table(values: pd.DataFrame, token_info: pd.DataFrame, setting: str,
              bins: int = N_BINS) -> tuple[pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """Per scope of one run: coverage and mean size of each nucleus, ECE, Brier score,
    accuracy, mean confidence and the lemma's margin (the smallest nucleus probability
    times V / (1 - p), at least 1 by the lemma); and the reliability diagram per scope."""
    V = len(token_info)
    rows, diagrams = [], []
    for scope, part in _scopes(values, token_info, setting).groupby("scope", sort=False):
        row = {"scope": scope, "positions": len(part), "ece": expected_calibration_error(
            part["confidence"], part["correct"], bins), "brier": part["brier"].mean(),
            "top1": part["correct"].mean(), "confidence": part["confidence"].mean()}  # fmt: skip
        for mass in NUCLEUS_MASSES:
            row[f"coverage_{mass}"] = part[f"covered_{mass}"].mean()
            row[f"size_{mass}"] = part[f"size_{mass}"].mean()
            row[f"lemma_{mass}"] = part[f"floor_{mass}"].min() * V / (1 - mass)
        rows.append(row)
        diagrams.append(reliability(part["confidence"], part["correct"], bins).assign(scope=scope))
    return pd.DataFrame(rows), pd.concat(diagrams, ignore_index=True)


def sample_rates(run, corpus: Corpus, known: set[str], length: int, top_p: float = 0.9,
                 temperature: float = 1.0, device: str = "cpu") -> pd.DataFrame:  # fmt: skip
    """Per language of a run: the unseen-bigram rate of ``length`` symbols sampled at
    ``top_p`` and ``temperature`` (``STREAMS`` samples of ``length / STREAMS`` symbols
    each, seeded by the run's seed; bigrams are counted within a sample), and the share
    of them that stayed in the prompted alphabet."""
    languages = ("high", "low") if run.config.bilingual else ("high",)
    model = run.model(device)
    per_stream = max(2, check_int("length", length, 2) // STREAMS)
    rows = []
    for language in languages:
        sample = generate_streams(
            model, corpus.tokenizer, language, STREAMS, per_stream, temperature, top_p,
            seed=run.config.seed, device=device,
        )  # fmt: skip
        rate = unseen_bigram_rate(sample.texts, known)
        rows.append({"scope": language, "unseen_bigrams": rate,
                     "in_alphabet": sample.in_alphabet})  # fmt: skip
    return pd.DataFrame(rows)


def floor_rate(corpus: Corpus, known: set[str]) -> float:
    """The unseen-bigram rate of the validation text itself (the floor a sample of the
    training distribution would still show)."""
    return unseen_bigram_rate(corpus.tokenizer.decode(corpus.val.tolist()), known)


VALUES = ("ece", "brier", "top1", "confidence",
          *(f"{k}_{m}" for m in NUCLEUS_MASSES for k in ("coverage", "size")))  # fmt: skip


@dataclass(frozen=True)
class Sampling:
    """Chapter 09's tables for one setting."""

    per_seed: pd.DataFrame  # per run and scope: coverage, size, ECE, Brier, ...
    table: pd.DataFrame  # mean and interval over seeds per arm and scope
    diagrams: pd.DataFrame  # reliability diagrams per run and scope
    samples: pd.DataFrame  # unseen-bigram rates per run and language
    floor: float  # the validation text's own rate
    lemma: pd.DataFrame  # per mass: the smallest lemma margin over every run and position


def measure(runs: Mapping, corpus: Corpus, token_info: pd.DataFrame, setting: str,
            length: int = 2000, top_p: float = 0.9, temperature: float = 1.0,
            device: str = "cpu", bins: int = N_BINS) -> Sampling:  # fmt: skip
    """Chapter 09's measures on ``runs`` ({(arm, seed): run}) of one setting."""
    known = bigrams(corpus.tokenizer.decode(corpus.train.tolist()))
    tables, diagrams, samples = [], [], []
    for (arm, seed), run in runs.items():
        table, diagram = run_table(split_values(run, corpus, device), token_info, setting, bins)
        keys = {"experiment": arm, "seed": seed}
        tables.append(table.assign(**keys))
        diagrams.append(diagram.assign(**keys))
        samples.append(sample_rates(run, corpus, known, length, top_p, temperature,
                                    device).assign(**keys))  # fmt: skip
    per_seed = pd.concat(tables, ignore_index=True)
    table = aggregate_seeds(per_seed, ["experiment", "scope"], list(VALUES))
    lemma = pd.DataFrame([{"p": m, "smallest margin": per_seed[f"lemma_{m}"].min(),
                           "holds": bool(per_seed[f"lemma_{m}"].min() >= 1.0 - 1e-9)}
                          for m in NUCLEUS_MASSES])  # fmt: skip
    diagrams_all = pd.concat(diagrams, ignore_index=True)
    samples_all = pd.concat(samples, ignore_index=True)
    return Sampling(per_seed, table, diagrams_all, samples_all, floor_rate(corpus, known), lemma)


def nucleus_claim(per_seed: pd.DataFrame) -> pd.DataFrame:
    """N1, "HNS's ranking gain survives nucleus sampling": coverage of the top-0.9 nucleus
    on the low-resource language, HNS not lower than CE by more than half a point
    (``not_worse``); beside it, the same at the other masses. Empty without a
    low-resource language."""
    low = per_seed[per_seed["scope"] == "low"]
    if low.empty:
        return pd.DataFrame()
    rows = []
    for mass in sorted(NUCLEUS_MASSES, key=lambda m: m != CLAIM_MASS):
        column = f"coverage_{mass}"
        rows.append(claim_row(
            "N1", "HNS's ranking gain survives nucleus sampling: its top-p nucleus holds the "
            "low-resource target no less often than CE's", SOURCE, column, "low",
            "HNS", seed_series(low, value=column, experiment=TREATMENT),
            "CE", seed_series(low, value=column, experiment=REFERENCE), kind="not_worse",
            margin=NOT_WORSE_ACCURACY_MARGIN, bounds=RANGES["top1"],
            definition=f"coverage at top-p {mass}", primary=mass == CLAIM_MASS,
        ))  # fmt: skip
    return pd.DataFrame(rows)


def chapter_claims(results: Mapping[str, Sampling]) -> pd.DataFrame:
    """The chapter's claims: N1 on the bilingual runs (none without them)."""
    return nucleus_claim(results["bilingual"].per_seed) if "bilingual" in results else (
        pd.DataFrame())  # fmt: skip


def reading(results: Mapping[str, Sampling], claims: pd.DataFrame) -> Reading:
    """What the numbers say: N1, coverage and size at 0.9, ECE, the samples, the lemma."""
    lines, summary = [], {"claims": {}, "lemma_holds": {}}
    for rec in claims.to_dict("records") if len(claims) else []:
        diff = format_interval(*interval_of(rec, "diff"), digits=4, sign="+")
        if rec["primary"]:
            lines.append(f"- **N1** ({rec['statement']}; {rec['definition']}, margin "
                         f"{rec['margin']}): **{rec['verdict']}**, HNS − CE = {diff} over "
                         f"{rec['n_seeds']} seeds.")  # fmt: skip
            summary["claims"]["N1"] = {
                "verdict": rec["verdict"],
                "diff": rec["diff"],
                "diff_lo": rec["diff_lo"],
                "diff_hi": rec["diff_hi"],
            }
        else:
            lines.append(f"  - beside it, {rec['definition']}: {rec['verdict']}, {diff}.")
    for setting, result in results.items():
        table = result.table.set_index(["experiment", "scope"])
        for scope in dict.fromkeys(result.table["scope"]):
            if setting == "single" and scope not in ("all", f"ranks {RARE_FROM_RANK}+"):
                continue
            cells = []
            for arm in (REFERENCE, TREATMENT):
                if (arm, scope) not in table.index:
                    continue
                r = table.loc[(arm, scope)]
                cells.append(
                    f"{arm} coverage@0.9 {r['coverage_0.9']:.3f}, size "
                    f"{r['size_0.9']:.1f}, ECE {r['ece']:.3f}, Brier {r['brier']:.3f}"
                )
            lines.append(f"- {setting}, {LANGUAGE_NAMES.get(scope, scope)}: " + "; ".join(cells))
        rates = result.samples.groupby(["experiment", "scope"])["unseen_bigrams"].mean()
        cells = ", ".join(f"{a} {LANGUAGE_NAMES.get(s, s)} {v:.4f}" for (a, s), v in rates.items())
        lines.append(f"- {setting}, unseen bigrams in samples at top-p 0.9: {cells}; the "
                     f"validation text's own rate, the floor: {result.floor:.4f}.")  # fmt: skip
        holds = bool(result.lemma["holds"].all())
        summary["lemma_holds"][setting] = holds
        margin = result.lemma["smallest margin"].min()
        lines.append(
            f"- {setting}: the nucleus-margin lemma "
            f"{'holds' if holds else 'FAILS'} at every position (smallest nucleus "
            f"probability × V / (1 − p) = {margin:.3f}, at least 1 by the lemma)."
        )
        summary[setting] = {"floor": result.floor, "samples": {f"{a}/{s}": v for (a, s), v
                                                               in rates.items()}}  # fmt: skip
    clipped = bool(claims["intervals_clipped"].any()) if len(claims) else False
    return Reading("\n".join(lines + clipping_note(clipped)), summary)
