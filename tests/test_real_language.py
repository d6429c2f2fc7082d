"""A real second language in the engine and in chapter 10: cipher runs keep their ids, a
real-language config records its corpus and trains end to end, the training stream
holds the language at p_low, each language is evaluated on its own text (NaN where a
character has no data, never dropped), the plan, the CLI and the notebook parameters
refuse bad values before any work, and the chapter's study functions agree with
independent formulas on small synthetic cases."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from selfish_lib.engine import languages as lang
from selfish_lib.engine.corpus import CorpusChecksumError
from selfish_lib.engine.ensemble import ensemble_groups, train_ensemble
from selfish_lib.engine.evaluation import METRICS
from selfish_lib.engine.objectives import CrossEntropy, HardNegatives
from selfish_lib.engine.profiles import get_profile
from selfish_lib.engine.runs import config_hash, get_or_train
from selfish_lib.engine.training import (
    TrainConfig,
    fresh_run,
    initial_model,
    train,
    training_corpus,
    vocab_size,
)
from selfish_lib.engine.validation import ParameterError
from selfish_lib.report import parameters
from selfish_lib.report.cli import main
from selfish_lib.report.plan import declared_runs, shape_of
from selfish_lib.study import real_language as rl
from selfish_lib.study.bilingual import experiment_configs
from selfish_lib.study.stats import mean_ci

SMOKE = get_profile("smoke")

# --- run ids ---------------------------------------------------------------------------------

# Ids of cipher configurations computed before a second language was a config field: a
# change to how a run id is derived would make every stored run train again.
PINNED_IDS = {
    ("smoke", "single", "CE"): "62284b5cd5c9fe8d",
    ("smoke", "bilingual", "CE"): "3bb3272c7b88a635",
    ("smoke", "bilingual", "HNS"): "f0682fa9ad89202e",
    ("smoke", "low_only", "HNS"): "50c5e7245e98daf1",
    ("paper", "single", "HNS"): "9d2fb06508b92e45",
    ("paper", "bilingual", "CE"): "638f5686f14460d6",
    ("paper", "bilingual", "HNS"): "cdd890b8a2ced62a",
    ("paper", "low_only", "CE"): "86686502acb7ee8c",
}


@pytest.mark.parametrize(("key", "expected"), PINNED_IDS.items(), ids=str)
def test_cipher_runs_keep_the_ids_they_had(key, expected):
    profile, setting, arm = key
    objective = CrossEntropy() if arm == "CE" else HardNegatives(2.0)
    # at the default stride (whole-split evaluations), as before the profiles sampled theirs
    config = get_profile(profile).config(setting, objective, seed=3, interim_eval_stride=1)
    assert config.language == "cipher" and config.language_sha256 == ""
    assert config_hash(config) == expected


def test_other_cipher_configs_keep_their_ids_too():
    paper = get_profile("paper")
    assert config_hash(TrainConfig()) == "0fed30c234acd78f"
    untied = paper.config("bilingual", CrossEntropy(), seed=0, tie_embeddings=False,
                          interim_eval_stride=1)  # fmt: skip
    assert config_hash(untied) == "3e4df039998fe21e"
    tuning = paper.tuning_config("bilingual", HardNegatives(2.0), seed=1)
    assert config_hash(tuning.replace(interim_eval_stride=1)) == "16e4b75d369d24c1"
    subword = paper.subword_config("bilingual", CrossEntropy(), 256, 2)
    assert config_hash(subword.replace(interim_eval_stride=1)) == "70a9893a529aee2e"


# --- the config ------------------------------------------------------------------------------


def test_a_real_language_config_records_its_corpus_and_elotl():
    config = SMOKE.language_config("nahuatl", "shared", seed=0)
    assert config.language_sha256 == lang.ELOTL_SHA256["axolotl"]
    assert config.elotl_version == lang._installed_elotl() is not None
    assert config.language_chars == SMOKE.real_language["chars"]
    saved = config.to_dict()
    assert saved["language_sha256"] == config.language_sha256
    assert saved["elotl_version"] == config.elotl_version
    assert TrainConfig.from_dict(json.loads(json.dumps(saved))) == config
    # provenance, not identity: another elotl version with the same bytes is the same run
    other = config.replace(elotl_version="9.9")
    assert other == config and config_hash(other) == config_hash(config)
    assert "elotl_version" not in config.flat_dict()
    # the language, its alphabet and its slice are part of the identity
    ids = {config_hash(SMOKE.language_config(name, alphabet, seed=0))
           for name in lang.REAL_LANGUAGES for alphabet in lang.ALPHABETS}  # fmt: skip
    assert len(ids) == 6 and config_hash(config) in ids
    assert config_hash(config.replace(language_chars=0)) != config_hash(config)
    assert "nahuatl shared" in config.label


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"bilingual": True, "p_low": 0.02, "alphabet": "shared"}, "alphabet"),
        ({"bilingual": True, "p_low": 0.02, "language_chars": 10}, "language_chars"),
        ({"bilingual": True, "p_low": 0.02, "language_sha256": "a" * 64}, "language_sha256"),
        ({"language": "nahuatl"}, "bilingual"),
        ({"bilingual": True, "language": "otomi", "tokenizer": "bpe-128"}, "tokenizer"),
        ({"bilingual": True, "language": "otomi", "split": "tuning"}, "split"),
        ({"bilingual": True, "language": "otomi", "language_sha256": "xyz"}, "language_sha256"),
        ({"bilingual": True, "language": "otomi", "language_chars": -1}, "language_chars"),
        ({"bilingual": True, "language": "klingon"}, "language"),
        ({"bilingual": True, "language": "otomi", "alphabet": "mixed"}, "alphabet"),
    ],
)
def test_inconsistent_language_fields_are_refused_by_name(fields, name):
    with pytest.raises(ParameterError) as info:
        TrainConfig(**fields)
    assert info.value.name == name


def test_a_corpus_other_than_the_recorded_one_is_refused(corpus):
    config = SMOKE.language_config("mixtec", "disjoint", seed=0, language_sha256="0" * 64)
    with pytest.raises(CorpusChecksumError, match="language_sha256=0000"):
        training_corpus(corpus, config)


def test_a_real_language_vocabulary_needs_the_runs_corpus(corpus):
    config = SMOKE.language_config("otomi", "shared", seed=0)
    run_corpus = training_corpus(corpus, config)
    assert vocab_size(config, run_corpus) == run_corpus.vocabulary.size
    assert initial_model(config, run_corpus).vocab_size == run_corpus.vocabulary.size
    with pytest.raises(ParameterError, match="training_corpus"):
        vocab_size(config, corpus.vocab_size)
    cipher = SMOKE.config("bilingual", seed=0)
    assert vocab_size(cipher, corpus.vocab_size) == vocab_size(cipher, corpus) == 130


# --- training and evaluation -------------------------------------------------------------------


def tiny(language: str = "otomi", alphabet: str = "shared", **fields) -> TrainConfig:
    """A three-step run of the smoke model on a 2000-character slice of each side, half
    of its blocks in the language (so that three steps see some)."""
    return SMOKE.language_config(
        language, alphabet, HardNegatives(2.0), seed=0, max_steps=3, eval_interval=3,
        log_interval=1, scenario_interval=1, language_chars=2000, p_low=0.5, **fields,
    )  # fmt: skip


@pytest.fixture(scope="module")
def tiny_run(corpus, tmp_path_factory):
    """A real-language run trained end to end through the store (three steps)."""
    results = tmp_path_factory.mktemp("results")
    return get_or_train(tiny(), corpus=corpus, results_dir=results, device="cpu", progress=False)


def test_a_real_language_run_trains_end_to_end_and_is_stored(tiny_run, corpus):
    run, config = tiny_run, tiny()
    assert run.config == config and run.id == config_hash(config)
    stored = json.loads((run.path / "config.json").read_text())["config"]
    assert stored["language_sha256"] == lang.ELOTL_SHA256["tsunkua"]
    assert stored["elotl_version"] == lang._installed_elotl()
    run_corpus = training_corpus(corpus, config)
    M = run_corpus.vocabulary.size
    assert run.model().vocab_size == M
    assert list(run.train_log["step"]) == [1, 2, 3]
    # every model row in the scenario log, the training loss per model id
    assert set(run.scenarios["token"]) == set(range(M))
    assert run.train_tokens["token"].max() < M
    # evaluation: English's text in rows 0..M-1, the language's in M..2M-1
    final = run.final_eval()
    assert sorted(final["token"]) == list(range(2 * M))
    high, low = final[final["token"] < M], final[final["token"] >= M]
    assert high["count"].sum() == len(corpus.val) - 1
    assert low["count"].sum() == len(run_corpus.second.val) - 1
    metrics = run.metrics(run_corpus.token_info(), by=["language"]).set_index("language")
    assert metrics.loc["low", "count"] == len(run_corpus.second.val) - 1
    assert 0 < metrics.loc["low", "loss"] < 10


@pytest.mark.parametrize("alphabet", ["shared", "disjoint"])
def test_real_language_runs_train_stacked_as_solo(corpus, alphabet):
    """Runs of one real language and alphabet stack like any others: each member's data
    stream (English and the language at p_low, from its own generator) is its solo run's
    exactly, its losses, weights and evaluations within the ensembles' tolerance, and
    both languages are scored on their own texts."""
    configs = [tiny("nahuatl", alphabet).replace(objective=objective, seed=seed, max_steps=6)
               for objective, seed in ((CrossEntropy(), 0), (HardNegatives(0.5), 1),
                                       (CrossEntropy(), 2))]  # fmt: skip
    assert ensemble_groups(configs, 8) == [tuple(configs)]
    solo = [train(c, corpus, device="cpu", progress=False) for c in configs]
    together = train_ensemble(configs, corpus, device="cpu", progress=False)
    for a, b in zip(solo, together, strict=True):
        keys = ["step", "token", "count"]
        assert a.train_tokens[keys].equals(b.train_tokens[keys])  # the same tokens
        assert (a.train_log["loss"] - b.train_log["loss"]).abs().max() <= 1e-5
        for name, p in a.model.state_dict().items():
            assert (b.model.state_dict()[name] - p).abs().max().item() <= 1e-5, name
        assert a.eval_tokens[["step", "token", "count"]].equals(
            b.eval_tokens[["step", "token", "count"]])  # fmt: skip
        assert (a.eval_tokens["loss_sum"] - b.eval_tokens["loss_sum"]).abs().max() <= 1e-3
    vocabulary = training_corpus(corpus, configs[0]).vocabulary.size
    assert together[0].eval_tokens["token"].max() == 2 * vocabulary - 1  # both languages


def test_a_shared_character_keeps_one_evaluation_row_per_language(tiny_run, corpus):
    run_corpus = training_corpus(corpus, tiny())
    info = run_corpus.token_info()
    M = run_corpus.vocabulary.size
    space = info[info["symbol"] == " "].set_index("language")
    assert space.loc["high", "model_token"] == space.loc["low", "model_token"]
    assert space.loc["low", "token"] == space.loc["high", "token"] + M
    assert space["shared_row"].all()
    final = tiny_run.final_eval().set_index("token")
    english_spaces = int((corpus.val[1:] == space.loc["high", "model_token"]).sum())
    language_spaces = int((run_corpus.second.val[1:] == space.loc["low", "model_token"]).sum())
    assert final.loc[space.loc["high", "token"], "count"] == english_spaces
    assert final.loc[space.loc["low", "token"], "count"] == language_spaces
    rows = run_corpus.row_info()
    assert len(rows) == M and rows["token"].tolist() == list(range(M))
    both = set(rows.loc[rows["language"] == "both", "symbol"])
    assert both == set(run_corpus.second.vocabulary.symbols) & set(corpus.tokenizer.symbols)


def test_a_character_unseen_in_training_gets_nan_training_metrics(tiny_run, corpus):
    infos = rl.Infos(corpus)
    table = rl.token_metrics(tiny_run, infos)
    vocab = training_corpus(corpus, tiny()).vocabulary
    assert len(table) == len(vocab.symbols)  # every character listed
    unseen = table[table["train_count"] == 0]
    assert len(unseen) and (unseen["val_count"] > 0).all()
    assert (unseen["count_val"] == unseen["val_count"]).all()
    assert unseen[list(METRICS)].notna().all().all()  # its validation positions count
    # a row of its own is never a training target: no training loss (a shared row's
    # training loss is English's, and the table says the row is shared)
    own = unseen[~unseen["shared_row"]]
    assert len(own) and own["train_loss"].isna().all()
    absent = table[table["val_count"] == 0]
    assert len(absent) and absent[list(METRICS)].isna().all().all()  # NaN, never 0
    targets = set(tiny_run.train_tokens.loc[tiny_run.train_tokens["count"] > 0, "token"])
    assert table["train_loss"].notna().tolist() == [t in targets for t in table["model_token"]]


def test_the_training_stream_holds_the_language_at_p_low(corpus):
    config = SMOKE.language_config("otomi", "disjoint", seed=5, batch_size=64)
    run_corpus = training_corpus(corpus, config)
    _, _, sampler = fresh_run(config, run_corpus, torch.device("cpu"))
    V, batches = corpus.vocab_size, 300
    n_low = 0
    for _ in range(batches):
        x, y, low = sampler.sample_with_language()
        n_low += int(low.sum())
        # disjoint ids: a block says its language
        assert bool((x[low] >= V).all()) and bool((x[~low] < V).all())
    n = batches * config.batch_size
    lo, hi = stats.binom.interval(0.9999, n, config.p_low)
    assert config.p_low == 0.02 and lo <= n_low <= hi


def test_the_log_prior_mixes_the_two_texts_at_p_low(corpus):
    config = SMOKE.language_config("mixtec", "shared", seed=0)
    run_corpus = training_corpus(corpus, config)
    M, p = run_corpus.vocabulary.size, config.p_low
    english = np.bincount(corpus.train.numpy(), minlength=M).astype(float)
    language = np.bincount(run_corpus.second.train.numpy(), minlength=M).astype(float)
    expected = (1 - p) * english + p * language * english.sum() / language.sum() + 1
    prior = run_corpus.log_prior(True, p).double().numpy()
    assert prior.shape == (M,)
    np.testing.assert_allclose(prior, np.log(expected / expected.sum()), rtol=1e-5)


# --- plan, CLI and notebook parameters ---------------------------------------------------------


def chapter_parameters(**values):
    defaults = {"language": "nahuatl", "alphabet": "shared", "layout": 2.0}
    return parameters.validate("10_real_language", {"profile": "paper", "device": "cpu",
                                                    **defaults, **values})  # fmt: skip


def test_the_plan_declares_the_cells_and_the_ciphers_runs():
    params = chapter_parameters()
    grids = declared_runs("10_real_language", params)
    paper = get_profile("paper")
    runs = grids["runs"]
    count = {}
    for (cell, arm, _), config in runs.items():
        count[(cell, arm)] = count.get((cell, arm), 0) + 1
        assert config.language != "cipher" and config.language_chars == 0
        assert rl.arm_of(config) == arm
    assert count[("Nahuatl shared", "CE")] == count[("Nahuatl shared", "HNS")] == 6
    for key in [("Nahuatl shared", "CE untied"), ("Nahuatl disjoint", "HNS"),
                ("Otomí disjoint", "CE"), ("Otomí disjoint", "CE untied")]:  # fmt: skip
        assert count[key] == 3
    assert len(runs) == 6 * 2 + 3 * 7
    # the cipher's runs are chapter 04's baseline and HNS runs: trained once
    chapter_04 = experiment_configs(paper, 2.0)
    cipher = {config_hash(c) for c in grids["cipher"].values()}
    assert cipher == {
        config_hash(c) for (e, _), c in chapter_04.items() if e in ("baseline", "HNS")
    }
    # each language's vocabulary is its own shape in the time estimate
    shapes = {shape_of(c) for c in runs.values() if rl.arm_of(c) == "CE"}
    assert len(shapes) == 3


def test_the_chapter_parameters_are_validated_with_the_allowed_values_named():
    assert chapter_parameters(language="otomi")["language"] == "otomi"
    for name, value, allowed in (("language", "klingon", "'nahuatl'"),
                                 ("language", "cipher", "a real language"),
                                 ("alphabet", "mixed", "'shared'")):  # fmt: skip
        with pytest.raises(ParameterError) as info:
            chapter_parameters(**{name: value})
        assert info.value.name == name and allowed in str(info.value)


def test_a_missing_elotl_is_refused_before_any_work_saying_how_to_install(monkeypatch, tmp_path,
                                                                          capsys):  # fmt: skip
    monkeypatch.setitem(sys.modules, "elotl", None)  # import elotl now fails
    with pytest.raises(ParameterError, match="pip install elotl"):
        chapter_parameters()
    results = tmp_path / "results"
    argv = ["train", "--setting", "bilingual", "--language", "nahuatl", "--results-dir",
            str(results)]  # fmt: skip
    assert main(argv) == 2
    assert "pip install elotl" in capsys.readouterr().err
    assert not results.exists()


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["--language", "klingon"], ["language='klingon'", "'nahuatl'", "'cipher'"]),
        (["--setting", "bilingual", "--language", "otomi", "--alphabet", "mixed"],
         ["alphabet='mixed'", "'disjoint'", "'shared'"]),
        (["--language", "otomi"], ["setting='single'", "'bilingual'"]),
        (["--setting", "bilingual", "--alphabet", "shared"], ["alphabet='shared'", "cipher"]),
        (["--setting", "bilingual", "--language", "otomi", "--tokenizer", "bpe-128"],
         ["tokenizer='bpe-128'", "'char'"]),
    ],
)  # fmt: skip
def test_selfish_train_refuses_bad_language_options_in_one_line(argv, names, tmp_path, capsys):
    results = tmp_path / "results"
    assert main(["train", *argv, "--results-dir", str(results)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = [row for row in err.splitlines() if row.strip()][-1]
    assert line.startswith("selfish train: invalid ")
    assert all(name in line for name in names), line
    assert not results.exists()


# --- the chapter's study functions on synthetic numbers ---------------------------------------


def synthetic_metrics(effects: dict[str, list[float]]) -> pd.DataFrame:
    """Per cell, arm, seed and side: metrics whose HNS − CE on the low side is
    ``effects[cell]`` (one value per seed)."""
    rows = []
    for cell, per_seed in effects.items():
        for seed, effect in enumerate(per_seed):
            base = 0.2 + 0.01 * seed
            for arm, value in (("CE", base), ("HNS", base + effect), ("CE untied", base - 0.01)):
                for side in ("high", "low"):
                    shown = value if side == "low" else 0.5
                    rows.append({"cell": cell, "arm": arm, "seed": seed, "side": side,
                                 "count": 100, "loss": 3.0 - shown, "top1": shown,
                                 "recall5": shown + 0.1, "mrr": shown + 0.05})  # fmt: skip
    return pd.DataFrame(rows)


EFFECTS = {
    "Nahuatl shared": [0.02, 0.03, 0.025, 0.035],
    "Nahuatl disjoint": [0.01, -0.01, 0.0],
    "Otomí disjoint": [0.05, 0.04, 0.06],
    "cipher": [0.021, 0.028, 0.03, 0.031],
}


def test_the_final_table_and_differences_agree_with_a_direct_computation():
    per_seed = synthetic_metrics(EFFECTS)
    table, diffs = rl.final_table(per_seed)
    for cell, values in EFFECTS.items():
        row = diffs[(diffs["cell"] == cell) & (diffs["side"] == "low") & (diffs["metric"] == "top1")
                    & (diffs["comparison"] == "HNS − CE")].iloc[0]  # fmt: skip
        x = np.asarray(values)
        half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
        assert row["diff"] == pytest.approx(x.mean())
        assert row["diff_lo"] == pytest.approx(x.mean() - half)
        assert row["diff_hi"] == pytest.approx(x.mean() + half)
        untied = diffs[
            (diffs["cell"] == cell)
            & (diffs["side"] == "low")
            & (diffs["metric"] == "top1")
            & (diffs["comparison"] == "CE untied − CE")
        ]
        assert untied["diff"].tolist() == pytest.approx([-0.01])  # fmt: skip
    shared = table[(table["cell"] == "Nahuatl shared") & (table["arm"] == "CE")]
    assert shared.set_index("side").loc["low", "top1"] == pytest.approx(0.2 + 0.015)
    low_top1 = (diffs["side"] == "low") & (diffs["metric"] == "top1")
    verdicts = diffs[low_top1 & (diffs["comparison"] == "HNS − CE")].set_index("cell")["verdict"]
    assert verdicts["Otomí disjoint"] == "better"
    assert verdicts["Nahuatl disjoint"] == "indistinguishable"


def test_the_ciphers_prediction_compares_means_and_intervals():
    prediction = rl.cipher_prediction(synthetic_metrics(EFFECTS)).set_index("cell")
    c_mean, c_lo, c_hi, _ = mean_ci(np.asarray(EFFECTS["cipher"]))
    for cell in ("Nahuatl shared", "Nahuatl disjoint", "Otomí disjoint"):
        real = np.mean(EFFECTS[cell])
        assert prediction.loc[cell, "real"] == pytest.approx(real)
        assert prediction.loc[cell, "cipher"] == pytest.approx(c_mean)
        assert prediction.loc[cell, "inside_cipher_interval"] == (c_lo <= real <= c_hi)
    assert bool(prediction.loc["Nahuatl shared", "inside_cipher_interval"])
    assert not prediction.loc["Otomí disjoint", "inside_cipher_interval"]


def test_the_claims_are_primary_for_the_registered_parameters_only():
    per_seed = synthetic_metrics(EFFECTS)
    table = rl.chapter_claims(per_seed, "nahuatl", "shared")
    rows = {(r["claim"], r["metric"]): r for r in table.to_dict("records")}
    r1 = rows[("R1", "top-1 accuracy")]
    assert r1["family"] == "primary" and r1["verdict"] == "supported"
    assert r1["diff"] == pytest.approx(np.mean(EFFECTS["Nahuatl shared"]))
    assert r1["seeds"] == [0, 1, 2, 3]
    assert rows[("R1", "recall@5")]["family"] == "exploratory"
    r3 = rows[("R3", "top-1 accuracy")]
    assert r3["family"] == "primary" and r3["scope"] == "Otomí disjoint alphabet"
    assert r3["verdict"] == "supported"
    r2 = rows[("R2", "top-1 accuracy gain over CE")]
    assert r2["family"] == "exploratory" and r2["test"] == "similar"
    paired = np.asarray(EFFECTS["Nahuatl shared"]) - np.asarray(EFFECTS["cipher"])
    assert r2["diff"] == pytest.approx(paired.mean())
    mean, lo, hi, _ = mean_ci(paired)
    inside = lo >= -rl.PREDICTION_MARGIN and hi <= rl.PREDICTION_MARGIN
    assert (r2["verdict"] == "supported") == inside
    other = rl.chapter_claims(synthetic_metrics({**EFFECTS, "Nahuatl disjoint": [0.1] * 3}),
                              "nahuatl", "disjoint")  # fmt: skip
    assert set(other["family"]) == {"exploratory"}
    assert "Nahuatl disjoint alphabet" in set(other["scope"])


def test_the_cells_follow_the_chapters_language_and_alphabet():
    assert [c.title for c in rl.chapter_cells("nahuatl", "shared")] == [
        "Nahuatl shared", "Nahuatl disjoint", "Otomí disjoint"]  # fmt: skip
    assert [c.title for c in rl.chapter_cells("otomi", "disjoint")] == [
        "Otomí disjoint", "Otomí shared", "Nahuatl disjoint"]  # fmt: skip
    with pytest.raises(ParameterError, match="a real language"):
        rl.chapter_cells("cipher", "shared")


class FakeRun:
    """What the study functions read of a run: its config and its tables."""

    def __init__(self, config, eval_tokens=None, scenarios=None):
        self.config, self.eval_tokens = config, eval_tokens
        self.scenarios = scenarios if scenarios is not None else pd.DataFrame()


def test_group_metrics_are_ratios_of_sums_within_the_languages_own_groups(corpus):
    config = tiny(alphabet="disjoint")
    infos = rl.Infos(corpus)
    info = infos.token(config)
    rng = np.random.default_rng(0)
    slots = info["token"].to_numpy()
    counts = rng.integers(0, 20, len(slots))
    sums = pd.DataFrame({"step": 3, "token": slots, "count": counts,
                         "loss_sum": counts * rng.uniform(1, 4, len(slots)),
                         "top1_sum": np.floor(counts * rng.uniform(0, 1, len(slots))),
                         "top5_sum": counts * 1.0, "rr_sum": counts * 0.5})  # fmt: skip
    per_group = rl.group_metrics({("Otomí disjoint", "HNS", 0): FakeRun(config, sums)}, infos)
    low = info[info["language"] == "low"].merge(sums, on="token")
    for group, part in low.groupby("group"):
        row = per_group[per_group["group"] == group].iloc[0]
        assert row["count"] == part["count"].sum()
        assert row["top1"] == pytest.approx(part["top1_sum"].sum() / part["count"].sum())
        assert row["characters"] == len(part)
    # groups ordered by rank, the language's own: a tenth of its characters each (or 10)
    assert [g.split("-")[0] for g in per_group["group"]][:2] == ["1", "11"]
    assert per_group["characters"].sum() == len(training_corpus(corpus, config).vocabulary.symbols)


def test_scenario_22s_share_is_computed_per_rows_language(corpus):
    config = tiny(alphabet="shared")
    infos = rl.Infos(corpus)
    rows = infos.rows(config)
    tokens = rows["token"].to_numpy()
    wide = pd.DataFrame({"step": 1, "token": tokens, "input": 1.0, "target": 1.0,
                         "nontarget": np.where(rows["language"] == "low", 6.0, 2.0)})  # fmt: skip
    per_seed, agg = rl.nontarget_shares({("Otomí shared", "CE", 0): FakeRun(config, None, wide)},
                                        infos)  # fmt: skip
    share = per_seed.set_index("rows")["share_nontarget"]
    assert share["low"] == pytest.approx(6 / 8)  # every row 6 / (1 + 1 + 6), summed alike
    assert share["both"] == pytest.approx(2 / 4) and share["high"] == pytest.approx(2 / 4)
    assert set(agg["rows"]) == {"low", "both", "high"}


def test_the_reading_states_every_claim_and_the_ciphers_prediction():
    per_seed = synthetic_metrics(EFFECTS)
    _, diffs = rl.final_table(per_seed)
    prediction = rl.cipher_prediction(per_seed)
    claims = rl.chapter_claims(per_seed, "nahuatl", "shared")
    reading = rl.reading(diffs, prediction, pd.DataFrame(), claims,
                         rl.chapter_cells("nahuatl", "shared"))  # fmt: skip
    for claim in ("R1", "R2", "R3"):
        assert f"- {claim} (" in reading.text
    assert "**cipher**" in reading.text and "lies inside the cipher's interval" in reading.text
    assert reading.summary["cells"]["Otomí disjoint"]["HNS − CE"]["top1"]["verdict"] == "better"


def encodings(spec) -> list[dict]:
    """Every ``encoding`` of a Vega-Lite spec, its layers' included."""
    if isinstance(spec, dict):
        own = [spec["encoding"]] if "encoding" in spec else []
        return own + [e for value in spec.values() for e in encodings(value)]
    if isinstance(spec, list):
        return [e for value in spec for e in encodings(value)]
    return []


def test_the_chapters_figures_are_built_from_its_tables():
    from selfish_lib.report.charts import real_language as figures

    per_seed = synthetic_metrics(EFFECTS)
    table, diffs = rl.final_table(per_seed)
    order = list(EFFECTS)
    metrics = encodings(figures.language_metrics(table, order, [0, 1, 2, 3]).to_dict())
    colours = [e["color"]["scale"] for e in metrics if "scale" in e.get("color", {})]
    assert colours and all(c["domain"] == list(rl.ARMS) for c in colours)
    assert all(e["x"]["sort"] == order for e in metrics if "x" in e)
    effects = json.dumps(figures.language_effects(diffs, order).to_dict(), ensure_ascii=False)
    assert "HNS − CE" in effects and "CE untied − CE" in effects
    groups = pd.DataFrame({
        "cell": "Otomí disjoint", "group": ["11-20", "1-10"], "metric": "top1",
        "diff": [0.1, -0.1], "diff_lo": [0.0, -0.2], "diff_hi": [0.2, 0.0], "n_pairs": 3,
        "verdict": "indistinguishable", "order": [11, 1],
    })  # fmt: skip
    spec = encodings(figures.group_effects(groups, order).to_dict())
    assert {tuple(e["x"]["sort"]) for e in spec if "x" in e} == {("1-10", "11-20")}
    shares = pd.DataFrame({"cell": "Otomí disjoint", "arm": "CE", "rows": ["high", "low"],
                           "share_nontarget": [0.4, 0.9], "share_nontarget_lo": [0.3, 0.8],
                           "share_nontarget_hi": [0.5, 1.0], "n_seeds": 3})  # fmt: skip
    assert "the language only" in json.dumps(figures.row_shares(shares, order).to_dict())
