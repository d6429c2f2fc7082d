"""The plan: every run the notebooks need, declared once, listed before any training.

Each notebook's runs are declared here, as a function of its validated parameters.
The notebook asks its study object for them (``study.planned_runs()``), and
``selfish plan`` and ``selfish reproduce`` call the same functions without executing
the notebook, so the list that is trained first is the list that is read later:
there is no second list to keep in sync.

A plan row says, per distinct run: its id, the notebooks that read it, setting,
objective, seed, steps, status in the store (done, partial at step k, or missing)
and an estimate of its training time on this device, from a short calibration
(a few timed steps and one timed evaluation per model shape).
"""

from __future__ import annotations

import builtins
import math
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..engine.corpus import Corpus
from ..engine.languages import CIPHER
from ..engine.objectives import CrossEntropy, HardNegatives
from ..engine.profiles import Profile, get_profile
from ..engine.runs import MARKER, config_hash, existing_store, trained_elsewhere
from ..engine.training import (
    CHECKPOINT,
    TrainConfig,
    cpu_training_threads,
    evaluate_run,
    fresh_run,
    learning_rate,
    resolve_device,
    training_corpus,
    training_step,
    whole_split_evaluations,
)
from ..study import bilingual, field, real_language, subword
from ..study import layout as sweep
from .parameters import Parameters, validate

Grids = dict[str, dict[Any, TrainConfig]]


def profile_of(params: Mapping[str, Any]) -> Profile:
    """The profile a notebook's validated parameters describe (with their seeds)."""
    return get_profile(params["profile"], params.get("seeds"))


def comparison(params: Mapping[str, Any], setting: str) -> dict[Any, TrainConfig]:
    """CE against HNS at the notebook's ``layout``, every seed of the profile."""
    objectives = [CrossEntropy(), HardNegatives(params["layout"])]
    return profile_of(params).grid(setting, objectives)


def _bilingual_runs(params: Mapping[str, Any]) -> Grids:
    profile = profile_of(params)
    return {
        "runs": bilingual.experiment_configs(profile, params["layout"]),
        "single": comparison(params, "single"),
    }


def _sweep_runs(params: Mapping[str, Any]) -> Grids:
    profile = profile_of(params)
    seeds = sweep.sweep_seeds(profile, params.get("seeds"))
    return {"runs": sweep.sweep_configs(profile, params["layouts"], params["schedule"], seeds)}


def _field_runs(params: Mapping[str, Any]) -> Grids:
    settings = params.get("settings", field.FIELD_SETTINGS)
    infos = {s: params.token_info(bilingual=s == "bilingual") for s in settings}
    return field.field_plan(
        profile_of(params), settings, infos, params["layout"], params["results_dir"],
        params.get("device"),
    )  # fmt: skip


def _real_language_runs(params: Mapping[str, Any]) -> Grids:
    profile = profile_of(params)
    language, alphabet, layout = params["language"], params["alphabet"], params["layout"]
    return {
        "runs": real_language.chapter_configs(profile, language, alphabet, layout),
        "cipher": real_language.cipher_configs(profile, layout),
    }


def _subword_runs(params: Mapping[str, Any]) -> Grids:
    settings = params.get("settings", subword.SUBWORD_SETTINGS)
    profile = profile_of(params)
    return {s: subword.subword_configs(profile, s, params.get("sizes"), params["layout"])
            for s in settings}  # fmt: skip


# notebook -> its validated parameters -> {part: {key: TrainConfig}}. A part named
# ``PENDING`` lists runs that cannot be configured yet (chapter 07's tuned arms before
# their tuning runs exist): plan counts them, nothing trains them, and the pipeline
# declares again after training until no part is pending.
DECLARED: dict[str, Callable[[Mapping[str, Any]], Grids]] = {
    "01_hypothesis": lambda params: {},
    "02_gradient_scenarios": lambda params: {"runs": comparison(params, "single")},
    "03_hns_training": lambda params: {"runs": comparison(params, "single")},
    "04_bilingual_simulation": _bilingual_runs,
    "05_embedding_geometry": lambda params: {"runs": comparison(params, "bilingual")},
    "06_layout_explorer": _sweep_runs,
    "07_hns_against_the_field": _field_runs,
    "08_subword_scale": _subword_runs,
    "09_sampling": lambda params: {
        s: comparison(params, s) for s in params.get("settings", field.FIELD_SETTINGS)
    },
    "10_real_language": _real_language_runs,
}
PENDING = field.PENDING
PENDING_STATUS = "after tuning"


def declared_runs(notebook: str | None, params: Mapping[str, Any]) -> Grids:
    """The runs ``notebook`` reads, by part ('runs' and, for some, more): {} if it
    declares none (or is not one of the repository's notebooks)."""
    declare = DECLARED.get(notebook or "")
    return declare(params) if declare is not None else {}


def parameter_defaults(source: str) -> dict[str, Any]:
    """The values a notebook's parameters cell assigns (its source is executed alone)."""
    namespace: dict[str, Any] = {"__builtins__": builtins}
    exec(compile(source, "<parameters cell>", "exec"), namespace)  # noqa: S102 (our own cell)
    return {k: v for k, v in namespace.items() if k != "__builtins__"}


def notebook_parameters_for_plan(
    source: str, notebook: str, values: Mapping[str, Any]
) -> Parameters:
    """A notebook's parameters as its kernel would see them: the parameters cell's
    defaults, then ``values`` (the pipeline's injections and overrides), validated."""
    return validate(notebook, {**parameter_defaults(source), **values})


def run_status(
    config: TrainConfig, results_dir: str | Path | None = None, device: str | None = None
) -> str:
    """'done', 'partial at step k' or 'missing' (a store folder that is not complete
    counts as missing: it is set aside and trained again when asked for; so does, with
    ``device``, a run trained on a device of another kind or precision)."""
    runs = existing_store(results_dir, required=False) / "runs"  # read: no write needed
    key = config_hash(config)
    if (runs / key / MARKER).exists():
        if device is not None and trained_elsewhere(runs / key, device):
            return "missing"
        return "done"
    checkpoint = runs / f".{key}.partial" / CHECKPOINT
    if checkpoint.exists():
        try:
            step = torch.load(checkpoint, map_location="cpu", weights_only=False)["step"]
        except Exception:  # an unreadable checkpoint is discarded when training resumes
            return "missing"
        return f"partial at step {step}"
    return "missing"


def shape_of(config: TrainConfig) -> tuple:
    """What the time of a step depends on (the objective and seed aside)."""
    language = (config.language, config.alphabet, config.language_chars)  # its vocabulary
    return (config.model, config.batch_size, config.bilingual, config.tokenizer, language)


def calibrate(
    configs: Iterable[TrainConfig], corpus: Corpus, device: str = "auto", steps: int = 5
) -> dict[tuple, tuple[float, float]]:
    """Per model shape: (seconds per training step, seconds per whole-split evaluation),
    measured on this device with ``steps`` timed steps after one untimed step."""
    dev = resolve_device(device)
    out: dict[tuple, tuple[float, float]] = {}
    with cpu_training_threads(dev):  # the threads training will use
        for config in configs:
            _calibrate_one(config, corpus, dev, steps, out)
    return out


def _calibrate_one(
    config: TrainConfig,
    corpus: Corpus,
    dev: torch.device,
    steps: int,
    out: dict[tuple, tuple[float, float]],
) -> None:
    """Time ``steps`` steps (after one untimed) and one evaluation of ``config``'s shape."""
    shape = shape_of(config)
    if shape in out:
        return
    corpus = corpus.with_tokenizer(config.tokenizer)  # the vocabulary sets the step's cost
    if config.language != CIPHER:  # English beside a real language: its own vocabulary
        corpus = training_corpus(corpus, config)
    model, optimizer, sampler = fresh_run(config, corpus, dev)
    # what an objective may read besides the logits (logit adjustment: the prior; AGG: its
    # counts), as training hands them over
    prior = corpus.log_prior(config.bilingual, config.p_low).to(dev)
    state = config.objective.initial_state(model.vocab_size, dev)
    timings = []
    for step in range(steps + 1):
        x, y = (t.to(dev) for t in sampler.sample())
        began = time.perf_counter()
        training_step(model, optimizer, x, y, config, learning_rate(step, config), step=step,
                      log_prior=prior, objective_state=state)  # fmt: skip
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        timings.append(time.perf_counter() - began)
    began = time.perf_counter()
    evaluate_run(model, corpus, config, dev)
    timed = sorted(timings[1:])
    out[shape] = (timed[len(timed) // 2], time.perf_counter() - began)


def estimate_seconds(
    config: TrainConfig, timing: tuple[float, float], done_steps: int = 0
) -> float:
    """Training time left for ``config``: its remaining steps and evaluations (``timing``
    from ``calibrate``). The evaluations before the last (at step 0 and every
    ``eval_interval``) score every ``interim_eval_stride``-th window, so each costs about
    that fraction of a whole-split one; the last scores the whole split."""
    per_step, per_eval = timing
    left = config.max_steps - done_steps
    evals_left = whole_split_evaluations(config) * left / config.max_steps
    return left * per_step + evals_left * per_eval


def plan_table(
    notebook_grids: Mapping[str, Grids],
    results_dir: str | Path | None,
    timings: Mapping[tuple, tuple[float, float]] | None = None,
    device: str | None = None,
) -> pd.DataFrame:
    """One row per distinct run of the notebooks' grids, in first-seen order (with
    ``device``, a run trained on another device kind is missing: ``run_status``)."""
    rows: dict[str, dict] = {}
    for notebook, grids in notebook_grids.items():
        for part, configs in grids.items():
            for config in configs.values():
                key = config_hash(config)
                if key in rows:
                    if notebook not in rows[key]["notebooks"]:
                        rows[key]["notebooks"].append(notebook)
                    continue
                status = run_status(config, results_dir, device)
                if part == PENDING and status != "done":
                    # its value is chosen by tuning: the row stands for its cost
                    status = PENDING_STATUS
                done = 0
                if status.startswith("partial"):
                    done = int(status.rsplit(" ", 1)[1])
                elif status == "done":
                    done = config.max_steps
                estimate = None
                if timings is not None and status != "done":
                    estimate = estimate_seconds(config, timings[shape_of(config)], done)
                rows[key] = {
                    "id": key,
                    "notebooks": [notebook],
                    "setting": config.setting,
                    "objective": config.label,
                    "seed": config.seed,
                    "steps": config.max_steps,
                    "status": status,
                    "estimate_s": 0.0 if status == "done" else estimate,
                    "config": config,
                }
    table = pd.DataFrame(list(rows.values()))
    if not table.empty:
        table["notebooks"] = [", ".join(n[:2] for n in names) for names in table["notebooks"]]
    return table


def format_duration(seconds: float | None) -> str:
    """'45 s', '12 min', '2.3 h' ('?' when unknown)."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
