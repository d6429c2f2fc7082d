"""Chapter 09, what HNS does to sampling: what a top-p sampler sees, calibration before and
after temperature scaling, and the noise in sampled text.

HNS never pushes down an easy negative, so the mass it leaves on implausible tokens
could make sampled text worse even where the target ranks first more often. Measured
on the whole validation split, per language (bilingual) or frequency group (one
language), for CE and HNS, each at temperature 1 (``RAW``) and at the temperature
fitted to its run (``FITTED``):

- **P(a top-p sample is the target)**: the mean over positions of
  1[y in N_p] p(y) / p(N_p), N_p the top-p nucleus of the full softmax, at p in
  ``engine.evaluation.NUCLEUS_MASSES``: what a sampler gets right, which a flatter
  distribution does not get for free;
- **coverage at a matched size**: the share of targets among the top k tokens, k CE's
  mean nucleus size at that p (over CE's seeds, in that scope and at that scaling,
  rounded to the nearest integer, ``matched_size``), the same k for both arms: the
  ranking at the size of nucleus a CE sampler draws from;
- the nucleus's **coverage** (the target inside N_p) and **size** beside them. Coverage
  alone rises for any flatter distribution with the same ranking, so it is never the
  measure a claim rests on;
- **temperature scaling**: one temperature per run, fitted on the tuning split (the
  last tenth of the training text, ``Corpus.for_tuning``; both alphabets pooled, each
  weighing the same, in a bilingual run) by minimising the NLL
  (``engine.evaluation.fit_temperature``); the ranking is unchanged by it. The runs of
  this chapter trained on the whole training text, that tail included: the fit is on
  text the model has seen, so it is reported beside the temperature the validation
  split itself would choose (in-sample, a check of that bias, used for nothing else);
- **calibration** on positions chosen by language, never by their label: the expected
  calibration error (ECE) of the top-1 probability over ``N_BINS`` equal-mass bins (each
  holds the same number of positions, in order of confidence; ECE = sum over bins of
  (share of positions) x |accuracy - mean confidence|), the reliability diagram, and
  the Brier score beside the loss;
- **calibration of the rare tokens** (base rank ``RARE_FROM_RANK`` or rarer): the
  class-wise ECE of each, ALL positions of its language binned (equal mass) by p(k | x)
  and each bin's mean p(k | x) compared with the share of its positions whose target is
  k; pooled as the mean over the rare tokens of their ECEs (each token weighs the same).
  ECE over the positions whose *label* is rare is not a calibration measure: it rewards
  an underconfident model (tests/test_sampling.py shows a calibrated model scoring worse
  there than a flattened copy of itself);
- beside every ECE its **floor**: the expected ECE of a perfectly calibrated model with
  the run's own confidences, at the same number of positions and bins, by simulation
  (``calibration_floor``: outcomes drawn from the model's own probabilities,
  ``FLOOR_REPEATS`` draws from a generator seeded by ``FLOOR_SEED``);
- **sampled text**: the share of character bigrams of text sampled at top-p and
  temperature (times the fitted temperature, for ``FITTED``) that never occur in the
  training text, per language, next to the same share for the validation text itself;
- the claims **N1**, "HNS's ranking gain survives nucleus sampling", on P(a top-p 0.9
  sample is the target), and **N2**, "after temperature scaling HNS keeps its
  low-resource ranking gain with CE's calibration", on the ECE at the fitted
  temperature.

The nucleus-margin lemma (the last token a top-p nucleus keeps has probability greater
than (1 - p) / (V - k + 1) >= (1 - p) / V, k the nucleus's size; ``losses.nucleus_margin``)
is a theorem, proved in notebook 06 and tested in tests/test_losses.py and
tests/test_sampling.py: nothing here measures it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..engine.corpus import Corpus
from ..engine.evaluation import (
    CHUNK_ROWS,
    NUCLEUS_MASSES,
    fit_temperature,
    logit_values,
    mean_nll,
    position_logits,
)
from ..engine.samples import generate_streams
from ..engine.validation import ParameterError, check_float, check_int
from .claims import NOT_WORSE_ACCURACY_MARGIN, claim_row, seed_series
from .readings import LANGUAGE_NAMES, Reading, clipping_note, format_interval, interval_of
from .stats import NON_NEGATIVE, RANGES, UNIT, aggregate_seeds

SOURCE = "09_sampling"
N_BINS = 15  # equal-mass bins of every expected calibration error
CLAIM_MASS = 0.9  # N1 compares P(sample = target) at top-p 0.9
RARE_FROM_RANK = 51  # base ranks 51-65 are "the rare tokens" (of each alphabet)
RARE_SCOPE = f"ranks {RARE_FROM_RANK}+"
REFERENCE, TREATMENT = "CE", "HNS"
STREAMS = 16  # the sampled symbols of a run are drawn as this many parallel samples
RAW, FITTED = "raw", "fitted"  # temperature 1, and the run's fitted temperature
SCALINGS = (RAW, FITTED)
SCALING_NAMES = {RAW: "temperature 1", FITTED: "the fitted temperature"}
FLOOR_REPEATS = 5  # simulated draws of a calibrated model behind each floor
FLOOR_SEED = 0
N1_MARGIN = NOT_WORSE_ACCURACY_MARGIN  # absolute probability: half a point
N2_MARGIN = 0.01  # absolute ECE: one point
# Scopes chosen by language: calibration is measured on these only (never on positions
# chosen by their label, such as a frequency group of targets).
LABEL_FREE = frozenset({"all", "high", "low"})


# --- calibration -------------------------------------------------------------------------


def _probabilities(values, name: str = "confidence") -> np.ndarray:
    """``values`` as a non-empty 1-D float array of probabilities, or a ParameterError."""
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or not len(array) or not np.all((array >= 0) & (array <= 1)):
        raise ParameterError(
            name,
            f"an array of shape {array.shape}",
            "a non-empty 1-D array of probabilities in [0, 1]",
        )
    return array


def _outcomes(outcome, like: np.ndarray) -> np.ndarray:
    array = np.asarray(outcome, dtype=float)
    if array.shape != like.shape:
        raise ParameterError(
            "correct",
            f"an array of shape {array.shape}",
            f"one outcome (0 or 1) per probability, shape {like.shape}",
        )
    return array


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


def _binned_ece(which: np.ndarray, confidence: np.ndarray, outcome: np.ndarray) -> float:
    """Sum over bins of (share of positions) x |mean outcome - mean confidence|, which is
    sum over bins of |sum of (outcome - confidence)| / N."""
    gaps = np.bincount(which, weights=outcome - confidence)
    return float(np.abs(gaps).sum() / len(confidence))


def reliability(confidence, correct, bins: int = N_BINS) -> pd.DataFrame:
    """Per equal-mass bin: its positions, mean confidence and accuracy (the reliability
    diagram; a calibrated model has accuracy = confidence in every bin)."""
    confidence = _probabilities(confidence)
    correct = _outcomes(correct, confidence)
    which = equal_mass_bins(confidence, bins)
    frame = pd.DataFrame({"bin": which, "confidence": confidence, "accuracy": correct})
    table = frame.groupby("bin").agg(
        count=("bin", "size"), confidence=("confidence", "mean"), accuracy=("accuracy", "mean")
    )
    return table.reset_index()


def expected_calibration_error(confidence, correct, bins: int = N_BINS) -> float:
    """ECE over equal-mass bins: sum over bins of (bin's share of the positions) x
    |its accuracy - its mean confidence|. ``confidence`` may be any predicted
    probability of a binary event and ``correct`` its outcome (class-wise ECE)."""
    confidence = _probabilities(confidence)
    correct = _outcomes(correct, confidence)
    return _binned_ece(equal_mass_bins(confidence, bins), confidence, correct)


def calibration_with_floor(
    confidence, correct, bins: int = N_BINS, repeats: int = FLOOR_REPEATS, seed: int = FLOOR_SEED
) -> tuple[float, float]:
    """``(ece, floor)``: the ECE of ``confidence`` against ``correct`` and the expected ECE
    of a perfectly calibrated model with the same confidences (``calibration_floor``),
    over the same bins."""
    confidence = _probabilities(confidence)
    correct = _outcomes(correct, confidence)
    which = equal_mass_bins(confidence, bins)
    return _binned_ece(which, confidence, correct), _floor(which, confidence, repeats, seed)


def _floor(which: np.ndarray, confidence: np.ndarray, repeats: int, seed: int) -> float:
    repeats = check_int("repeats", repeats, 1)
    rng = np.random.default_rng(check_int("seed", seed, 0))
    draws = [
        _binned_ece(which, confidence, (rng.random(len(confidence)) < confidence) * 1.0)
        for _ in range(repeats)
    ]
    return float(np.mean(draws))


def calibration_floor(
    confidence, bins: int = N_BINS, repeats: int = FLOOR_REPEATS, seed: int = FLOOR_SEED
) -> float:
    """The finite-sample floor of the ECE: the mean, over ``repeats`` simulated draws (a
    generator seeded by ``seed``), of the ECE of ``confidence`` against outcomes drawn
    true with probability the confidence itself, which is what drawing the target from
    the model's own probabilities gives (its top-1 is right with probability its top
    probability; the target is token k with probability p(k | x)). A perfectly
    calibrated model's ECE at this number of positions and bins is about this, not 0."""
    confidence = _probabilities(confidence)
    return _floor(equal_mass_bins(confidence, bins), confidence, repeats, seed)


def classwise_ece(token_probs, targets, token: int, bins: int = N_BINS) -> float:
    """The class-wise ECE of ``token`` k: ALL positions binned (equal mass) by p(k | x)
    (``token_probs``), each bin's mean p(k | x) against the share of its positions whose
    target is k, weighted by the bins' shares of the positions."""
    return expected_calibration_error(token_probs, np.asarray(targets) == token, bins)


def token_probabilities(
    logits: torch.Tensor, tokens: Sequence[int], temperature: float = 1.0
) -> np.ndarray:
    """p(k | x) under softmax(``logits`` / ``temperature``) for each token k of ``tokens``
    (columns, in that order) at every position (rows)."""
    temperature = check_float("temperature", temperature, 0.0, min_inclusive=False)
    index = torch.as_tensor(list(tokens), dtype=torch.long)
    parts = [
        F.softmax(logits[s : s + CHUNK_ROWS].double() / temperature, dim=-1)[:, index]
        for s in range(0, len(logits), CHUNK_ROWS)
    ]
    return torch.cat(parts).numpy()


def rare_calibration(
    logits: torch.Tensor,
    targets: torch.Tensor,
    tokens: Sequence[int],
    temperature: float = 1.0,
    bins: int = N_BINS,
) -> pd.DataFrame:
    """Per token of ``tokens``: its ``occurrences`` as a target, its mean probability,
    its class-wise ECE over every position (``classwise_ece``) and that ECE's ``floor``."""
    probs = token_probabilities(logits, tokens, temperature)
    y = targets.numpy()
    rows = []
    for j, token in enumerate(tokens):
        ece, floor = calibration_with_floor(probs[:, j], y == token, bins)
        rows.append(
            {
                "token": int(token),
                "occurrences": int((y == token).sum()),
                "mean_prob": float(probs[:, j].mean()),
                "ece": ece,
                "floor": floor,
            }
        )
    return pd.DataFrame(rows, columns=["token", "occurrences", "mean_prob", "ece", "floor"])


# --- the top-p nucleus at a matched size ---------------------------------------------------


def matched_size(mean_size: float) -> int:
    """The k of coverage at a matched size: CE's mean nucleus size rounded to the nearest
    integer (halves up), at least 1."""
    return max(1, math.floor(check_float("mean_size", mean_size, 0.0) + 0.5))


def coverage_within(places, k: int) -> float:
    """The share of positions whose target is among the top ``k`` tokens, from each
    target's 1-based ``place`` in the order of probability."""
    places = np.asarray(places, dtype=float)
    return float((places <= check_int("k", k, 1)).mean())


# --- text -------------------------------------------------------------------------------


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


def floor_rate(corpus: Corpus, known: set[str]) -> float:
    """The unseen-bigram rate of the validation text itself (the floor a sample of the
    training distribution would still show)."""
    return unseen_bigram_rate(corpus.tokenizer.decode(corpus.val.tolist()), known)


# --- one run ---------------------------------------------------------------------------


def _languages(run, corpus: Corpus) -> list[tuple[str, int]]:
    """(language, id offset) of the alphabets a run is evaluated in."""
    return [("high", 0)] + ([("low", corpus.vocab_size)] if run.config.bilingual else [])


def _pooled_fit(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> dict:
    """The temperature fitted on the positions of ``pairs`` (logits, targets) pooled, their
    number, and the NLL at temperature 1 and at the fitted one."""
    logits = torch.cat([p[0] for p in pairs])
    targets = torch.cat([p[1] for p in pairs])
    temperature = fit_temperature(logits, targets)
    return {
        "temperature": temperature,
        "positions": len(targets),
        "nll": mean_nll(logits, targets),
        "nll_fitted": mean_nll(logits, targets, temperature),
    }


def _language_scope(language: str, setting: str) -> str:
    return language if setting == "bilingual" else "all"


def _scopes(values: pd.DataFrame, token_info: pd.DataFrame, setting: str) -> pd.DataFrame:
    """The positions with their ``scope``: the language (bilingual), or the frequency
    group and the rare tokens pooled (one language); a position may be in two scopes."""
    if setting == "bilingual":
        return values.assign(scope=values["language"])
    info = token_info.set_index("token")
    groups = values.assign(scope=values["token"].map(info["group"]).to_numpy())
    rank = values["token"].map(info["rank"]).to_numpy()
    rare = values[rank >= RARE_FROM_RANK].assign(scope=RARE_SCOPE)
    return pd.concat([groups, rare, values.assign(scope="all")], ignore_index=True)


def scope_table(
    values: pd.DataFrame,
    token_info: pd.DataFrame,
    setting: str,
    rare: pd.DataFrame | None = None,
    bins: int = N_BINS,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per scope of one run at one temperature (``values``: ``logit_values`` of every
    position, with its ``language``): positions, top-1, mean confidence, NLL, and per
    mass the nucleus's coverage and size and P(sample = target) (``hit``); on the scopes
    chosen by language (``LABEL_FREE``) the top-1 ECE and its floor, the Brier score and
    the rare tokens' pooled class-wise ECE and floor (``rare``: ``rare_calibration``
    with its ``scope``); and the reliability diagram of those scopes."""
    rows, diagrams = [], []
    for scope, part in _scopes(values, token_info, setting).groupby("scope", sort=False):
        row = {
            "scope": scope,
            "positions": len(part),
            "top1": part["correct"].mean(),
            "confidence": part["confidence"].mean(),
            "nll": part["nll"].mean(),
            "ece": math.nan,
            "ece_floor": math.nan,
            "brier": math.nan,
            "rare_ece": math.nan,
            "rare_ece_floor": math.nan,
        }
        for mass in NUCLEUS_MASSES:
            row[f"coverage_{mass}"] = part[f"covered_{mass}"].mean()
            row[f"size_{mass}"] = part[f"size_{mass}"].mean()
            row[f"hit_{mass}"] = part[f"hit_{mass}"].mean()
        if scope in LABEL_FREE:
            row["ece"], row["ece_floor"] = calibration_with_floor(
                part["confidence"], part["correct"], bins
            )
            row["brier"] = part["brier"].mean()
            diagram = reliability(part["confidence"], part["correct"], bins)
            diagrams.append(diagram.assign(scope=scope))
            if rare is not None and (rare["scope"] == scope).any():
                mine = rare[rare["scope"] == scope]
                row["rare_ece"], row["rare_ece_floor"] = mine["ece"].mean(), mine["floor"].mean()
        rows.append(row)
    return pd.DataFrame(rows), pd.concat(diagrams, ignore_index=True)


def place_counts(values: pd.DataFrame, token_info: pd.DataFrame, setting: str) -> pd.DataFrame:
    """Per scope: how many targets stand at each 1-based ``place`` of the order of
    probability (columns scope, place, count), from which coverage at any k follows."""
    scoped = _scopes(values[["token", "language", "place"]], token_info, setting)
    counts = scoped.groupby(["scope", "place"], sort=False).size().rename("count")
    return counts.reset_index()


@dataclass(frozen=True)
class RunMeasures:
    """Chapter 09's measures of one run."""

    table: pd.DataFrame  # per scope and scaling (``scope_table``)
    diagrams: pd.DataFrame  # reliability diagrams per scope and scaling
    rare: pd.DataFrame  # class-wise ECE per language scope, scaling and rare token
    places: pd.DataFrame  # per scope: targets at each place (a temperature never moves one)
    fit: dict  # the fitted temperature and the NLLs behind it


def measure_run(
    run,
    corpus: Corpus,
    token_info: pd.DataFrame,
    setting: str,
    bins: int = N_BINS,
    device: str = "cpu",
) -> RunMeasures:
    """One run's measures on the whole validation split (each alphabet of a bilingual
    run), at temperature 1 and at the temperature fitted on the tuning split."""
    model = run.model(device)
    languages = _languages(run, corpus)
    tuning = corpus.for_tuning().val
    tuned = _pooled_fit(
        [position_logits(model, tuning + offset, device) for _, offset in languages]
    )
    temperature = tuned["temperature"]
    kept = {
        language: position_logits(model, corpus.val + offset, device)
        for language, offset in languages
    }
    fit = {
        "temperature": temperature,
        "tuning_positions": tuned["positions"],
        "tuning_nll": tuned["nll"],
        "tuning_nll_fitted": tuned["nll_fitted"],
        "validation_temperature": _pooled_fit(list(kept.values()))["temperature"],
    }
    ranks = token_info.set_index("token")
    tables, diagrams, rares, places = [], [], [], None
    for scaling, scale in ((RAW, 1.0), (FITTED, temperature)):
        values, rare = [], []
        for language, (logits, targets) in kept.items():
            values.append(
                logit_values(logits, targets, NUCLEUS_MASSES, scale).assign(language=language)
            )
            own = ranks[(ranks["language"] == language) & (ranks["rank"] >= RARE_FROM_RANK)]
            calibration = rare_calibration(logits, targets, own.index.tolist(), scale, bins)
            rare.append(calibration.assign(scope=_language_scope(language, setting)))
        values_all = pd.concat(values, ignore_index=True)
        rare_all = pd.concat(rare, ignore_index=True).assign(scaling=scaling)
        table, diagram = scope_table(values_all, token_info, setting, rare_all, bins)
        tables.append(table.assign(scaling=scaling, temperature=scale))
        diagrams.append(diagram.assign(scaling=scaling))
        rares.append(rare_all)
        if places is None:
            places = place_counts(values_all, token_info, setting)
    return RunMeasures(
        pd.concat(tables, ignore_index=True),
        pd.concat(diagrams, ignore_index=True),
        pd.concat(rares, ignore_index=True),
        places,
        fit,
    )


def sample_rates(
    run,
    corpus: Corpus,
    known: set[str],
    length: int,
    top_p: float = 0.9,
    temperature: float = 1.0,
    device: str = "cpu",
) -> pd.DataFrame:
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
            model,
            corpus.tokenizer,
            language,
            STREAMS,
            per_stream,
            temperature,
            top_p,
            seed=run.config.seed,
            device=device,
        )
        rate = unseen_bigram_rate(sample.texts, known)
        rows.append({"scope": language, "unseen_bigrams": rate, "in_alphabet": sample.in_alphabet})
    return pd.DataFrame(rows)


# --- every run of a setting ----------------------------------------------------------------

MASS_VALUES = tuple(
    f"{k}_{m}" for m in NUCLEUS_MASSES for k in ("hit", "matched", "coverage", "size")
)
VALUES = (
    "top1",
    "confidence",
    "nll",
    "ece",
    "ece_floor",
    "brier",
    "rare_ece",
    "rare_ece_floor",
    "temperature",
    *MASS_VALUES,
)
FIT_VALUES = ("temperature", "validation_temperature", "tuning_nll", "tuning_nll_fitted")
# The range of each value (intervals are clipped to it, and say so)
BOUNDS: dict[str, tuple[float, float]] = {
    **{
        v: UNIT
        for v in (
            "top1",
            "confidence",
            "ece",
            "ece_floor",
            "rare_ece",
            "rare_ece_floor",
            "unseen_bigrams",
            "mean_prob",
            "floor",
        )
    },
    **{f"{k}_{m}": UNIT for m in NUCLEUS_MASSES for k in ("hit", "matched", "coverage")},
    **{f"size_{m}": NON_NEGATIVE for m in NUCLEUS_MASSES},
    **{v: NON_NEGATIVE for v in ("nll", "temperature", *FIT_VALUES)},
    "brier": (0.0, 2.0),
}


@dataclass(frozen=True)
class Sampling:
    """Chapter 09's tables for one setting."""

    per_seed: pd.DataFrame  # per run, scope and scaling: P(sample = target), coverage, ...
    table: pd.DataFrame  # mean and interval over seeds per arm, scope and scaling
    matched: pd.DataFrame  # per scope, scaling and mass: CE's mean size and the matched k
    diagrams: pd.DataFrame  # reliability diagrams per run, scope and scaling
    rare: pd.DataFrame  # class-wise ECE per run, scope, scaling and rare token
    rare_table: pd.DataFrame  # the same, mean and interval over seeds
    fits: pd.DataFrame  # per run: the fitted temperature and the NLLs behind it
    fit_table: pd.DataFrame  # the same, mean and interval over seeds per arm
    samples: pd.DataFrame  # unseen-bigram rates per run, language and scaling
    samples_table: pd.DataFrame  # the same, mean and interval over seeds
    floor: float  # the validation text's own unseen-bigram rate

    @property
    def seeds(self) -> tuple[int, ...]:
        """The seeds the tables rest on."""
        return tuple(sorted(int(s) for s in self.per_seed["seed"].unique()))


def matched_sizes(per_seed: pd.DataFrame) -> pd.DataFrame:
    """Per scope, scaling and mass p: CE's mean nucleus size over its seeds and the k of
    coverage at a matched size (``matched_size``). Empty without CE runs."""
    ce = per_seed[per_seed["experiment"] == REFERENCE]
    rows = []
    for (scope, scaling), part in ce.groupby(["scope", "scaling"], sort=False):
        for mass in NUCLEUS_MASSES:
            size = float(part[f"size_{mass}"].mean())
            rows.append(
                {
                    "scope": scope,
                    "scaling": scaling,
                    "p": mass,
                    "ce_size": size,
                    "k": matched_size(size),
                }
            )
    return pd.DataFrame(rows, columns=["scope", "scaling", "p", "ce_size", "k"])


def add_matched(per_seed: pd.DataFrame, places: pd.DataFrame, sizes: pd.DataFrame) -> pd.DataFrame:
    """``per_seed`` with ``matched_p`` per mass: the share of targets among the top k
    tokens, k from ``sizes`` (``matched_sizes``) for the row's scope and scaling; NaN
    where no k is known (no CE runs)."""
    ks = {(r.scope, r.scaling, r.p): r.k for r in sizes.itertuples()}
    grouped = {key: part for key, part in places.groupby(["experiment", "seed", "scope"])}
    out = per_seed.copy()
    for mass in NUCLEUS_MASSES:
        column = []
        for r in per_seed.itertuples():
            k = ks.get((r.scope, r.scaling, mass))
            part = grouped.get((r.experiment, r.seed, r.scope))
            if k is None or part is None:
                column.append(math.nan)
                continue
            inside = part.loc[part["place"] <= k, "count"].sum()
            column.append(float(inside / part["count"].sum()))
        out[f"matched_{mass}"] = column
    return out


def measure(
    runs: Mapping,
    corpus: Corpus,
    token_info: pd.DataFrame,
    setting: str,
    length: int = 2000,
    top_p: float = 0.9,
    temperature: float = 1.0,
    device: str = "cpu",
    bins: int = N_BINS,
) -> Sampling:
    """Chapter 09's measures on ``runs`` ({(arm, seed): run}) of one setting. Text is
    sampled at ``top_p`` and ``temperature`` (raw) and at ``temperature`` times the
    run's fitted temperature (fitted)."""
    known = bigrams(corpus.tokenizer.decode(corpus.train.tolist()))
    tables, diagrams, rares, places, fits, samples = [], [], [], [], [], []
    for (arm, seed), run in runs.items():
        keys = {"experiment": arm, "seed": seed}
        got = measure_run(run, corpus, token_info, setting, bins, device)
        tables.append(got.table.assign(**keys))
        diagrams.append(got.diagrams.assign(**keys))
        rares.append(got.rare.assign(**keys))
        places.append(got.places.assign(**keys))
        fits.append({**keys, **got.fit})
        for scaling, scale in ((RAW, 1.0), (FITTED, got.fit["temperature"])):
            rates = sample_rates(run, corpus, known, length, top_p, temperature * scale, device)
            samples.append(rates.assign(scaling=scaling, temperature=temperature * scale, **keys))
    per_seed = pd.concat(tables, ignore_index=True)
    sizes = matched_sizes(per_seed)
    per_seed = add_matched(per_seed, pd.concat(places, ignore_index=True), sizes)
    rare = pd.concat(rares, ignore_index=True)
    info = token_info.set_index("token")
    rare = rare.assign(
        display=rare["token"].map(info["display"]), rank=rare["token"].map(info["rank"])
    )
    fit_frame = pd.DataFrame(fits)
    sample_frame = pd.concat(samples, ignore_index=True)
    return Sampling(
        per_seed=per_seed,
        table=aggregate_seeds(
            per_seed, ["experiment", "scope", "scaling"], list(VALUES), bounds=BOUNDS
        ),
        matched=sizes,
        diagrams=pd.concat(diagrams, ignore_index=True),
        rare=rare,
        rare_table=aggregate_seeds(
            rare,
            ["experiment", "scope", "scaling", "token", "display", "rank"],
            ["ece", "floor", "mean_prob", "occurrences"],
            bounds=BOUNDS,
        ),
        fits=fit_frame,
        fit_table=aggregate_seeds(fit_frame, ["experiment"], list(FIT_VALUES), bounds=BOUNDS),
        samples=sample_frame,
        samples_table=aggregate_seeds(
            sample_frame,
            ["experiment", "scope", "scaling"],
            ["unseen_bigrams", "in_alphabet"],
            bounds=BOUNDS,
        ),
        floor=floor_rate(corpus, known),
    )


# --- synthetic cases the chapter explains its measures with --------------------------------


def synthetic_model(
    positions: int = 20000, vocab: int = 65, spread: float = 2.0, zipf: float = 1.0, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """A perfectly calibrated synthetic model: logits (``positions``, ``vocab``), each
    token's prior -``zipf`` x log(rank) (token 0 the most frequent) plus Gaussian noise of
    standard deviation ``spread``, and targets drawn from their own softmax."""
    gen = torch.Generator().manual_seed(check_int("seed", seed, 0))
    prior = -zipf * torch.log(torch.arange(1, vocab + 1, dtype=torch.float64))
    noise = torch.randn(positions, vocab, generator=gen, dtype=torch.float64)
    logits = prior + check_float("spread", spread, 0.0) * noise
    targets = torch.multinomial(F.softmax(logits, -1), 1, generator=gen).squeeze(1)
    return logits, targets


def _example_table(rows: list[dict], logits: torch.Tensor, model: dict) -> pd.DataFrame:
    """The rows of a synthetic example, with the draw they come from in ``attrs``."""
    table = pd.DataFrame(rows)
    table.attrs.update(positions=logits.shape[0], vocab=logits.shape[1], seed=model.get("seed", 0))
    return table


def _draw(table: pd.DataFrame) -> str:
    a = table.attrs
    return (
        f"{a.get('positions', 0):,} positions over {a.get('vocab', 0)} symbols, seed "
        f"{a.get('seed', 0)}; one draw, so its numbers carry no interval"
    )


def flattening_example(
    temperatures: Sequence[float] = (1.0, 2.0), mass: float = CLAIM_MASS, **model
) -> pd.DataFrame:
    """What flattening a calibrated synthetic model (``synthetic_model``) does: per
    temperature, coverage of the top-``mass`` nucleus, its size, P(a top-p sample is the
    target), coverage at the size of the nucleus at the first temperature, top-1 and
    the top-1 ECE with its floor. The ranking is the same at every temperature."""
    logits, targets = synthetic_model(**model)
    rows, k = [], None
    for temperature in temperatures:
        v = logit_values(logits, targets, (mass,), temperature)
        k = matched_size(v[f"size_{mass}"].mean()) if k is None else k
        ece, floor = calibration_with_floor(v["confidence"], v["correct"])
        rows.append(
            {
                "temperature": temperature,
                "coverage": v[f"covered_{mass}"].mean(),
                "size": v[f"size_{mass}"].mean(),
                "P(sample = target)": v[f"hit_{mass}"].mean(),
                "matched k": k,
                "coverage at k": coverage_within(v["place"], k),
                "top1": v["correct"].mean(),
                "ece": ece,
                "ece floor": floor,
            }
        )
    return _example_table(rows, logits, model)


def label_selected_example(
    temperatures: Sequence[float] = (1.0, 1.5), rare: int = 15, **model
) -> pd.DataFrame:
    """Why calibration is not measured on positions chosen by their label: per
    temperature of a calibrated synthetic model (1 is calibrated), the top-1 ECE over
    the positions whose target is one of the ``rare`` rarest tokens (label-selected),
    and the rare tokens' pooled class-wise ECE over every position, with its floor."""
    logits, targets = synthetic_model(**model)
    vocab = logits.shape[1]
    tokens = list(range(vocab - rare, vocab))
    chosen = np.isin(targets.numpy(), tokens)
    rows = []
    for temperature in temperatures:
        v = logit_values(logits, targets, (CLAIM_MASS,), temperature)
        label_selected = expected_calibration_error(
            v["confidence"].to_numpy()[chosen], v["correct"].to_numpy()[chosen]
        )
        classwise = rare_calibration(logits, targets, tokens, temperature)
        rows.append(
            {
                "temperature": temperature,
                "label-selected ECE": label_selected,
                "class-wise ECE (rare, pooled)": classwise["ece"].mean(),
                "its floor": classwise["floor"].mean(),
            }
        )
    return _example_table(rows, logits, model)


def flattening_note(table: pd.DataFrame, mass: float = CLAIM_MASS) -> str:
    """What ``flattening_example`` shows, in one paragraph of its computed numbers."""
    first, last = table.iloc[0], table.iloc[-1]
    return (
        f"The same calibrated synthetic model ({_draw(table)}) at temperature "
        f"{first['temperature']:g} and "
        f"{last['temperature']:g} (the same ranking, top-1 {first['top1']:.3f} at both): "
        f"coverage of the top-{mass} nucleus moves from {first['coverage']:.3f} to "
        f"{last['coverage']:.3f} and the nucleus from {first['size']:.1f} to "
        f"{last['size']:.1f} symbols, while the chance that a top-p sample is the target "
        f"falls from {first['P(sample = target)']:.3f} to {last['P(sample = target)']:.3f} "
        f"and the ECE rises from {first['ece']:.3f} to {last['ece']:.3f} (floor "
        f"{first['ece floor']:.3f} and {last['ece floor']:.3f}). Coverage at a matched size "
        f"(the top {int(first['matched k'])}) is {first['coverage at k']:.3f} at both: it "
        "sees the ranking only."
    )


def label_selected_note(table: pd.DataFrame) -> str:
    """What ``label_selected_example`` shows, in one paragraph of its computed numbers."""
    calibrated, flat = table.iloc[0], table.iloc[-1]
    return (
        f"On positions chosen by their label (the target is one of the rarest tokens) the "
        f"calibrated synthetic model ({_draw(table)}) scores an ECE of "
        f"{calibrated['label-selected ECE']:.3f} "
        f"and a copy flattened to temperature {flat['temperature']:g}, underconfident, "
        f"{flat['label-selected ECE']:.3f}: that measure rewards underconfidence. The "
        "class-wise ECE of the same rare tokens over every position ranks them the right "
        f"way: {calibrated['class-wise ECE (rare, pooled)']:.5f} for the calibrated model "
        f"(its floor {calibrated['its floor']:.5f}) against "
        f"{flat['class-wise ECE (rare, pooled)']:.5f} for the flattened copy (floor "
        f"{flat['its floor']:.5f})."
    )


# --- claims ------------------------------------------------------------------------------


def _part(per_seed: pd.DataFrame, scope: str, scaling: str) -> pd.DataFrame:
    return per_seed[(per_seed["scope"] == scope) & (per_seed["scaling"] == scaling)]


def nucleus_claim(per_seed: pd.DataFrame, matched: pd.DataFrame | None = None) -> pd.DataFrame:
    """N1, "HNS's ranking gain survives nucleus sampling": P(a top-0.9 sample is the
    low-resource target), HNS not lower than CE by more than ``N1_MARGIN``
    (``not_worse``), at temperature 1; beside it, the same at the other masses and at
    the fitted temperature, coverage at CE's nucleus size (matched) and the nucleus's
    coverage. Empty without a low-resource language."""
    raw, fitted = _part(per_seed, "low", RAW), _part(per_seed, "low", FITTED)
    if raw.empty:
        return pd.DataFrame()
    statement = (
        "HNS's ranking gain survives nucleus sampling: a top-p sample from HNS is "
        "the low-resource target no less often than one from CE (HNS − CE not below "
        f"−{N1_MARGIN})"
    )
    hit = (
        "P(a top-p {p} sample is the target) at {t}: the mean over low-resource positions "
        "of 1[y in N_p] p(y) / p(N_p)"
    )
    ks = {} if matched is None else {(r.scope, r.scaling, r.p): r.k for r in matched.itertuples()}
    specs = [
        (
            raw,
            f"hit_{CLAIM_MASS}",
            "P(sample = target)",
            hit.format(p=CLAIM_MASS, t=SCALING_NAMES[RAW]),
            True,
        )
    ]
    specs += [
        (raw, f"hit_{m}", "P(sample = target)", hit.format(p=m, t=SCALING_NAMES[RAW]), False)
        for m in NUCLEUS_MASSES
        if m != CLAIM_MASS
    ]
    if not fitted.empty:
        specs.append(
            (
                fitted,
                f"hit_{CLAIM_MASS}",
                "P(sample = target)",
                hit.format(p=CLAIM_MASS, t=SCALING_NAMES[FITTED]),
                False,
            )
        )
    k = ks.get(("low", RAW, CLAIM_MASS))
    if k is not None and f"matched_{CLAIM_MASS}" in raw:
        specs.append(
            (
                raw,
                f"matched_{CLAIM_MASS}",
                "coverage at a matched size",
                f"the target among the top k = {k} tokens, k CE's mean top-p "
                f"{CLAIM_MASS} nucleus size rounded to the nearest integer, the same for "
                "both arms",
                False,
            )
        )
    specs.append(
        (
            raw,
            f"coverage_{CLAIM_MASS}",
            "nucleus coverage",
            f"coverage at top-p {CLAIM_MASS}: the target inside the nucleus, which a "
            "flatter distribution gets more of for free",
            False,
        )
    )
    rows = [
        claim_row(
            "N1",
            statement,
            SOURCE,
            metric,
            "low",
            "HNS",
            seed_series(part, value=column, experiment=TREATMENT),
            "CE",
            seed_series(part, value=column, experiment=REFERENCE),
            kind="not_worse",
            margin=N1_MARGIN,
            bounds=UNIT,
            definition=definition,
            primary=primary,
        )
        for part, column, metric, definition, primary in specs
    ]
    return pd.DataFrame(rows)


def calibration_claim(per_seed: pd.DataFrame) -> pd.DataFrame:
    """N2, "after temperature scaling HNS keeps its low-resource ranking gain with CE's
    calibration": the low-resource top-1 ECE at each run's fitted temperature, HNS not
    above CE by more than ``N2_MARGIN`` (``not_worse`` on CE − HNS); beside it the same at
    temperature 1 and the top-1 gain (HNS − CE, 'greater'), which no temperature
    changes. Empty without a low-resource language."""
    raw, fitted = _part(per_seed, "low", RAW), _part(per_seed, "low", FITTED)
    if fitted.empty:
        return pd.DataFrame()
    statement = (
        "After temperature scaling HNS keeps its low-resource ranking gain with "
        "CE's calibration: at each run's fitted temperature HNS's low-resource ECE "
        f"is at most {N2_MARGIN} above CE's"
    )
    ece = (
        "top-1 ECE over {bins} equal-mass bins of the low-resource positions at {t}; the "
        "difference is CE − HNS (positive: HNS the better calibrated), supported when "
        f"its interval lies above −{N2_MARGIN}"
    )
    rows = []
    for part, scaling, primary in ((fitted, FITTED, True), (raw, RAW, False)):
        rows.append(
            claim_row(
                "N2",
                statement,
                SOURCE,
                f"ECE at {SCALING_NAMES[scaling]}",
                "low",
                "CE",
                seed_series(part, value="ece", experiment=REFERENCE),
                "HNS",
                seed_series(part, value="ece", experiment=TREATMENT),
                kind="not_worse",
                margin=N2_MARGIN,
                bounds=UNIT,
                definition=ece.format(bins=N_BINS, t=SCALING_NAMES[scaling]),
                primary=primary,
            )
        )
    rows.append(
        claim_row(
            "N2",
            statement,
            SOURCE,
            "top-1 accuracy",
            "low",
            "HNS",
            seed_series(fitted, value="top1", experiment=TREATMENT),
            "CE",
            seed_series(fitted, value="top1", experiment=REFERENCE),
            kind="greater",
            bounds=RANGES["top1"],
            primary=False,
            definition="the ranking gain beside it: low-resource top-1 accuracy, HNS − CE above "
            "0 (a temperature never changes it)",
        )
    )
    return pd.DataFrame(rows)


def chapter_claims(results: Mapping[str, Sampling]) -> pd.DataFrame:
    """The chapter's claims, N1 and N2, on the bilingual runs (none without them)."""
    if "bilingual" not in results:
        return pd.DataFrame()
    result = results["bilingual"]
    parts = [nucleus_claim(result.per_seed, result.matched), calibration_claim(result.per_seed)]
    parts = [p for p in parts if len(p)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


# --- reading -----------------------------------------------------------------------------


def seeds_label(seeds: Sequence[int]) -> str:
    """'seed 3', 'seeds 0-4' (consecutive) or 'seeds 0, 2, 5'."""
    seeds = sorted(int(s) for s in seeds)
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    if seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"seeds {seeds[0]}-{seeds[-1]}"
    return "seeds " + ", ".join(map(str, seeds))


def _cell(row: pd.Series, column: str, digits: int = 3) -> str:
    return format_interval(row[column], row[f"{column}_lo"], row[f"{column}_hi"], digits=digits)


def _claim_lines(claims: pd.DataFrame, summary: dict) -> list[str]:
    lines = []
    for rec in claims.to_dict("records") if len(claims) else []:
        diff = format_interval(*interval_of(rec, "diff"), digits=4, sign="+")
        if rec["primary"]:
            lines.append(
                f"- **{rec['claim']}** ({rec['statement']}; {rec['definition']}): "
                f"**{rec['verdict']}**, {rec['A']} − {rec['B']} = {diff} over "
                f"{rec['n_seeds']} seeds."
            )
            summary["claims"][rec["claim"]] = {
                "verdict": rec["verdict"],
                "metric": rec["metric"],
                "diff": rec["diff"],
                "diff_lo": rec["diff_lo"],
                "diff_hi": rec["diff_hi"],
                "n_seeds": rec["n_seeds"],
            }
        else:
            lines.append(
                f"  - beside it, {rec['metric']} ({rec['definition']}): "
                f"{rec['verdict']}, {rec['A']} − {rec['B']} = {diff}."
            )
    return lines


def _scope_name(scope: str) -> str:
    return "all positions" if scope == "all" else LANGUAGE_NAMES.get(scope, scope)


def _scope_lines(setting: str, scope: str, result: Sampling) -> list[str]:
    """A line for the scope, then one per arm and scaling: its measures at top-p
    ``CLAIM_MASS``, each with its interval."""
    table = result.table.set_index(["experiment", "scope", "scaling"])
    ks = result.matched.set_index(["scope", "scaling", "p"])["k"]
    p = CLAIM_MASS
    known = [(s, ks[(scope, s, p)]) for s in SCALINGS if (scope, s, p) in ks.index]
    matched = ", ".join(f"k = {k} at {SCALING_NAMES[s]}" for s, k in known)
    lines = [
        f"- {setting}, {_scope_name(scope)} (top k: CE's mean top-{p} nucleus size, "
        f"rounded; {matched}):"
    ]
    for arm in (REFERENCE, TREATMENT):
        for scaling in SCALINGS:
            if (arm, scope, scaling) not in table.index:
                continue
            r = table.loc[(arm, scope, scaling)]
            at = (
                SCALING_NAMES[RAW]
                if scaling == RAW
                else (f"its fitted temperature, {_cell(r, 'temperature')}")
            )
            text = (
                f"  - {arm} at {at}: P(sample = target) {_cell(r, f'hit_{p}')}, coverage of "
                f"the top k {_cell(r, f'matched_{p}')}, coverage {_cell(r, f'coverage_{p}')} "
                f"with {_cell(r, f'size_{p}', 1)} symbols"
            )
            if scope in LABEL_FREE:
                text += (
                    f"; ECE {_cell(r, 'ece')} (floor {_cell(r, 'ece_floor')}), "
                    f"Brier {_cell(r, 'brier')}, NLL {_cell(r, 'nll')}"
                )
            lines.append(text + ".")
    return lines


def reading(results: Mapping[str, Sampling], claims: pd.DataFrame) -> Reading:
    """What the numbers say: N1 and N2, the fitted temperatures, what a sampler sees raw
    and at them, the rare tokens' calibration and the sampled text; every number with
    its 95% interval over the seeds it names."""
    summary: dict = {"claims": {}}
    lines = _claim_lines(claims, summary)
    for setting, result in results.items():
        seeds = seeds_label(result.seeds)
        lines.append("")
        lines.append(
            f"**{setting}** (every number: mean [95% interval] over {seeds}, "
            f"n = {len(result.seeds)} per arm):"
        )
        fits = result.fit_table.set_index("experiment")
        cells = []
        for arm in (REFERENCE, TREATMENT):
            if arm not in fits.index:
                continue
            f = fits.loc[arm]
            cells.append(
                f"{arm} {_cell(f, 'temperature')} (NLL on the tuning split "
                f"{_cell(f, 'tuning_nll')} → {_cell(f, 'tuning_nll_fitted')}; the "
                "validation split's own choice, in-sample: "
                f"{_cell(f, 'validation_temperature')})"
            )
        lines.append("- fitted temperature: " + "; ".join(cells) + ".")
        wanted = ("high", "low") if setting == "bilingual" else ("all", RARE_SCOPE)
        scopes = [s for s in wanted if s in set(result.table["scope"])]
        for scope in scopes:
            lines += _scope_lines(setting, scope, result)
        rare = result.table[result.table["rare_ece"].notna()].set_index(
            ["experiment", "scope", "scaling"]
        )
        lines.append(
            f"- the rare symbols (base ranks {RARE_FROM_RANK}+), class-wise ECE pooled as the "
            "mean over them, with its floor:"
        )
        for (arm, scope, scaling), r in rare.iterrows():
            lines.append(
                f"  - {arm}, {_scope_name(scope)}, at {SCALING_NAMES[scaling]}: "
                f"{_cell(r, 'rare_ece', 4)} (floor {_cell(r, 'rare_ece_floor', 4)})."
            )
        samples = result.samples_table.set_index(["experiment", "scope", "scaling"])
        cells = [
            f"{arm} {LANGUAGE_NAMES.get(scope, scope)} at {SCALING_NAMES[scaling]} "
            f"{_cell(r, 'unseen_bigrams', 4)}"
            for (arm, scope, scaling), r in samples.iterrows()
        ]
        lines.append(
            f"- unseen bigrams in sampled text: {'; '.join(cells)}; the validation "
            f"text's own rate, the floor (a property of the text, no seeds): {result.floor:.4f}."
        )
        summary[setting] = {
            "seeds": list(result.seeds),
            "floor": result.floor,
            "temperature": {arm: fits.loc[arm, "temperature"] for arm in fits.index},
            "samples": {
                f"{a}/{s}": r["unseen_bigrams"] for (a, s, sc), r in samples.iterrows() if sc == RAW
            },
            "samples_fitted": {
                f"{a}/{s}": r["unseen_bigrams"]
                for (a, s, sc), r in samples.iterrows()
                if sc == FITTED
            },
            "measures": sorted(set(VALUES)),
        }
    clipped = bool(claims["intervals_clipped"].any()) if len(claims) else False
    clipped = clipped or any(
        bool(r.table.filter(like="_clipped").to_numpy().any()) for r in results.values()
    )
    return Reading("\n".join(lines + clipping_note(clipped)), summary)
