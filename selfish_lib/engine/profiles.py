"""Profiles: the one place where sizes, steps and seeds live.

- ``smoke``: a tiny model and a few dozen steps; seconds per notebook on a CPU
  (tests and CI).
- ``paper``: the original study's scale (4 layers, 4 heads, 128 dims, context
  64, batch 12, AdamW 1e-3 -> 1e-4, 2000 steps on one language, 8000
  bilingual, 160 for the low-resource-only run); a real second language in full,
  its primary contrast at every seed and its other runs at three.
- ``large``: nanoGPT's GPU Shakespeare configuration, for a GPU.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from .model import ModelConfig
from .objectives import CrossEntropy, Objective, check_objective
from .training import LEGACY_OBJECTIVE_FIELDS, TrainConfig
from .validation import ParameterError, check_choice, check_seeds

SETTINGS = ("single", "bilingual", "low_only")
CROSS_ENTROPY = CrossEntropy()


@dataclass(frozen=True)
class Profile:
    """Sizes, schedules and seeds of one scale of the study."""

    name: str
    model: ModelConfig
    optim: dict  # batch_size, learning_rate, min_lr, warmup_steps, beta2, weight_decay, grad_clip
    steps: dict  # per setting: single, bilingual, low_only
    seeds: tuple[int, ...]
    eval_every: dict  # per setting
    log_interval: int
    checkpoint_interval: int
    scenario_every: dict  # per setting: steps between scenario records (0 = off)
    sweep: dict  # the layout sweep (notebook 06): steps, seeds, eval_interval of its runs
    p_low: float = 0.02
    # evaluations before a run's last score every k-th window of the validation text
    # (``TrainConfig.interim_eval_stride``): they draw the learning curves, which a
    # systematic sample of the text draws as well at a k-th of the cost; every table
    # reads the last evaluation, which scores the whole split
    interim_eval_stride: int = 1
    # steps of a tuning run per setting (a quarter of the reported runs' steps): where
    # hyperparameters are chosen, on the tuning split (``Corpus.for_tuning``)
    tuning_steps: dict = dataclasses.field(default_factory=dict)
    # the seeds every tuning candidate trains on: a choice made on one seed is a choice made
    # on that seed's noise, so each candidate's score is its mean over these
    tuning_seeds: tuple[int, ...] = (0, 1)
    # the subword scale (notebook 08): BPE vocabulary sizes, and the sparser logging a
    # large vocabulary needs (the per-token tables grow with V, and so does the cost of
    # evaluating the whole validation split): steps between training loss records and,
    # per setting, between scenario records and between evaluations
    subword: dict = dataclasses.field(default_factory=dict)
    # a real second language (notebook 10): the characters of each side of its text a
    # run reads (``TrainConfig.language_chars``; 0: all of it), and the seeds of every
    # run but the primary contrast's (the first ``seeds`` of the profile's seeds)
    real_language: dict = dataclasses.field(default_factory=lambda: {"chars": 0, "seeds": 3})

    def config(
        self,
        setting: str = "single",
        objective: Objective = CROSS_ENTROPY,
        seed: int | None = None,
        **overrides,
    ) -> TrainConfig:
        """The TrainConfig of one run of this profile.

        ``setting`` is 'single' (one language), 'bilingual' (p_low of the blocks
        in the second alphabet) or 'low_only' (only the second alphabet, for
        ``steps['bilingual'] / 50`` steps). ``overrides`` replace any field, by the
        names ``TrainConfig.flat`` takes (model sizes included).
        """
        check_choice("setting", setting, SETTINGS)
        p_low = {"single": 0.0, "bilingual": self.p_low, "low_only": 1.0}[setting]
        fields = dict(
            model=self.model,
            objective=objective,
            **self.optim,
            bilingual=setting != "single",
            p_low=p_low,
            max_steps=self.steps[setting],
            seed=self.seeds[0] if seed is None else seed,
            eval_interval=self.eval_every[setting],
            interim_eval_stride=self.interim_eval_stride,
            log_interval=self.log_interval,
            checkpoint_interval=self.checkpoint_interval,
            scenario_interval=self.scenario_every[setting],
        )
        if set(overrides) & set(LEGACY_OBJECTIVE_FIELDS):
            fields.pop("objective")
        fields.update(overrides)
        return TrainConfig.flat(**fields)

    def grid(
        self,
        setting: str,
        objectives: Sequence[Objective],
        seeds: Sequence[int] | None = None,
        **overrides,
    ) -> dict[tuple[str, int], TrainConfig]:
        """(arm, seed) -> TrainConfig for every objective and seed (the profile's unless
        ``seeds``): the comparison a chapter makes. Configs differ only in the objective
        and the seed, so the run store trains each run once for every chapter."""
        arms = [check_objective(o).arm for o in objectives]
        if len(set(arms)) != len(arms):
            raise ParameterError("objectives", [o.label for o in objectives], "one per arm")
        chosen = self.seeds if seeds is None else check_seeds("seeds", seeds)
        return {
            (objective.arm, seed): self.config(setting, objective, seed, **overrides)
            for objective in objectives
            for seed in chosen
        }

    def tuning_config(
        self, setting: str, objective: Objective, seed: int | None = None
    ) -> TrainConfig:
        """A tuning run: the setting's config trained on the training split without its
        tail and scored on that tail (``split='tuning'``), for ``tuning_steps[setting]``
        steps (the profile's reduced budget), evaluated at the end only, without a
        scenario log (tuning reads its score and nothing else)."""
        check_choice("setting", setting, SETTINGS)
        steps = self.tuning_steps.get(setting, max(1, self.steps[setting] // 4))
        return self.config(setting, objective, seed, split="tuning", max_steps=steps,
                           eval_interval=steps, scenario_interval=0)  # fmt: skip

    def subword_config(
        self, setting: str, objective: Objective, size: int, seed: int | None = None
    ) -> TrainConfig:
        """A run of the subword scale: the setting's config with ``size`` BPE subwords
        (``tokenizer='bpe-<size>'``) and the subword logging intervals."""
        check_choice("setting", setting, ("single", "bilingual"))
        return self.config(
            setting, objective, seed, tokenizer=f"bpe-{size}",
            log_interval=self.subword["log_interval"],
            scenario_interval=self.subword["scenario_every"][setting],
            eval_interval=self.subword["eval_every"][setting],
        )  # fmt: skip

    def language_config(
        self,
        language: str,
        alphabet: str,
        objective: Objective = CROSS_ENTROPY,
        seed: int | None = None,
        **overrides,
    ) -> TrainConfig:
        """A bilingual run whose second language is real text (``language``: 'nahuatl',
        'otomi' or 'mixtec'; ``alphabet``: 'disjoint' or 'shared'), at the profile's share
        ``p_low`` and on the profile's slice of that text (``real_language['chars']``);
        ``overrides`` replace any field, as for ``config``."""
        fields = {"language_chars": self.real_language["chars"], **overrides}
        return self.config("bilingual", objective, seed, language=language, alphabet=alphabet,
                           **fields)  # fmt: skip

    def language_seeds(self) -> tuple[int, ...]:
        """The seeds of a real language's runs beyond the primary contrast: the first
        ``real_language['seeds']`` of the profile's seeds."""
        return self.seeds[: self.real_language["seeds"]]

    def sweep_config(self, objective: Objective, seed: int) -> TrainConfig:
        """A bilingual run of the layout sweep: the sweep's steps and evaluation interval."""
        return self.config(
            "bilingual",
            objective,
            seed=seed,
            max_steps=self.sweep["steps"],
            eval_interval=self.sweep["eval_interval"],
        )

    def with_seeds(self, seeds) -> Profile:
        """A copy that runs over other seeds (validated)."""
        return dataclasses.replace(self, seeds=check_seeds("seeds", seeds))


_PAPER_OPTIM = dict(
    batch_size=12,
    learning_rate=1e-3,
    min_lr=1e-4,
    warmup_steps=100,
    beta2=0.99,
    weight_decay=0.1,
    grad_clip=1.0,
)

PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        model=ModelConfig(n_layer=1, n_head=2, n_embd=32, block_size=32, dropout=0.0, bias=True),
        optim={**_PAPER_OPTIM, "batch_size": 8, "warmup_steps": 5},
        steps={"single": 30, "bilingual": 100, "low_only": 2},
        tuning_steps={"single": 10, "bilingual": 25, "low_only": 1},
        tuning_seeds=(0,),  # a pipeline check: one seed keeps chapter 07's rounds quick
        seeds=(0, 1),
        eval_every={"single": 10, "bilingual": 50, "low_only": 1},
        interim_eval_stride=4,
        log_interval=5,
        checkpoint_interval=10,
        scenario_every={"single": 5, "bilingual": 10, "low_only": 1},
        sweep={"steps": 40, "seeds": (0, 1), "eval_interval": 40},
        subword={
            "sizes": (128, 256),
            "log_interval": 5,
            "scenario_every": {"single": 10, "bilingual": 25},
            "eval_every": {"single": 10, "bilingual": 50},
        },  # fmt: skip
        # a slice of each language's text: its runs take seconds on a CPU
        real_language={"chars": 20_000, "seeds": 3},
    ),
    "paper": Profile(
        name="paper",
        model=ModelConfig(n_layer=4, n_head=4, n_embd=128, block_size=64, dropout=0.0, bias=True),
        optim=_PAPER_OPTIM,
        steps={"single": 2000, "bilingual": 8000, "low_only": 160},
        tuning_steps={"single": 500, "bilingual": 2000, "low_only": 40},
        # six paired seeds: the exact sign-flip test's smallest two-sided p is 2 / 2^n, so
        # five seeds (0.0625) could never reject at 0.05 and six (0.031) can
        seeds=(0, 1, 2, 3, 4, 5),
        eval_every={"single": 250, "bilingual": 500, "low_only": 20},
        # a whole-split evaluation at every point took a fifth of a run on a CPU
        # (bench/throughput.py --part io); an eighth of the windows, a twentieth
        interim_eval_stride=8,
        log_interval=10,
        checkpoint_interval=500,
        scenario_every={"single": 10, "bilingual": 50, "low_only": 10},
        sweep={"steps": 3000, "seeds": (0, 1, 2), "eval_interval": 500},
        subword={
            "sizes": (256, 1024, 4096),
            "log_interval": 100,
            "scenario_every": {"single": 100, "bilingual": 500},
            "eval_every": {"single": 250, "bilingual": 2000},
        },  # fmt: skip
    ),
    "large": Profile(
        name="large",
        model=ModelConfig(n_layer=6, n_head=6, n_embd=384, block_size=256, dropout=0.2, bias=False),
        optim={**_PAPER_OPTIM, "batch_size": 64},
        steps={"single": 5000, "bilingual": 20000, "low_only": 400},
        tuning_steps={"single": 1250, "bilingual": 5000, "low_only": 100},
        seeds=(0, 1, 2),
        eval_every={"single": 500, "bilingual": 1000, "low_only": 50},
        interim_eval_stride=8,
        log_interval=10,
        checkpoint_interval=1000,
        scenario_every={"single": 50, "bilingual": 200, "low_only": 10},
        sweep={"steps": 10000, "seeds": (0, 1, 2), "eval_interval": 1000},
        subword={
            "sizes": (1024, 4096, 8192),
            "log_interval": 100,
            "scenario_every": {"single": 250, "bilingual": 1000},
            "eval_every": {"single": 500, "bilingual": 5000},
        },  # fmt: skip
    ),
}
PROFILE_NAMES = tuple(PROFILES)


def get_profile(name: str, seeds=None) -> Profile:
    """The profile called ``name`` (smoke, paper or large), optionally with other seeds."""
    profile = PROFILES[check_choice("profile", name, PROFILE_NAMES)]
    return profile if seeds is None else profile.with_seeds(seeds)
