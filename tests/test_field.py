"""Chapter 07's harness: the arms come from the registry (a new objective is one class),
tuning scores every candidate on every tuning seed on the tuning split, grows a grid
whose choice lands on its edge and waits for its runs, the new measures (balanced
recall, the Spearman check of the tuning score) match independent formulas, the claims
compute on known cases, and chapter 07's claims join chapter 04's in claims.json."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from types import SimpleNamespace
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest

from selfish_lib.engine.objectives import (
    REGISTRY,
    LogitAdjusted,
    Objective,
    Tuning,
    hns_cross_entropy,
    register,
)
from selfish_lib.engine.profiles import get_profile
from selfish_lib.engine.runs import config_hash, get_or_train_grid
from selfish_lib.report.plan import PENDING_STATUS, plan_table
from selfish_lib.study import claims, field
from selfish_lib.study.readings import MIXTURE, POOLED


@pytest.fixture
def label_smoothing():
    """A peer registered for one test: label smoothing, a tuned hyperparameter."""

    @register
    @dataclass(frozen=True)
    class LabelSmoothing(Objective):
        """CE against (1 - eps) onehot + eps / V."""

        eps: float = 0.1

        name: ClassVar[str] = "label-smoothing-test"
        arm: ClassVar[str] = "LS"
        tuning: ClassVar = Tuning("eps", (0.05, 0.1, 0.2), published=0.1)

        def loss(self, logits, targets, context):
            ce = hns_cross_entropy(logits, targets, math.inf, reduction="none")
            smooth = -logits.log_softmax(-1).mean(-1)
            return (1 - self.eps) * ce + self.eps * smooth

    yield LabelSmoothing
    REGISTRY.pop(LabelSmoothing.name)


def test_every_registered_objective_is_an_arm_with_its_role():
    table = field.arm_table(2.0)
    names = list(table["arm"])
    assert names[:3] == ["CE", "HNS", "HNS tuned"]
    for cls in REGISTRY.values():
        if cls.role == "peer":
            assert cls.arm in names
    assert {"HNS-rows", "CE untied", "HNS untied"} <= set(names)
    assert len(set(names)) == len(names)
    tuned = table[table["tuned"] != ""]
    assert set(tuned["arm"]) == {"HNS tuned", "AGG", "LA", "LA (balanced recall)", "Entmax",
                                 "CosReg", "Focal"}  # fmt: skip
    for arm in field.tuned_arms():
        assert arm.published in arm.candidates
        assert arm.candidates == type(arm.objective).tuning.values
    # LA is also tuned on its own target, balanced recall over the whole vocabulary
    own = {a.name: a for a in field.arms()}["LA (balanced recall)"]
    assert own.role == field.OWN_TARGET and own.objective == LogitAdjusted()
    assert field.criterion(own, "bilingual") == (POOLED, "balanced_recall")
    assert field.criterion(own, "single") == (field.ALL, "balanced_recall")
    # one language is tuned on the metric it is ranked by, the rare tokens' top-1
    hns = {a.name: a for a in field.arms()}["HNS tuned"]
    assert field.criterion(hns, "single") == field.RANKED_BY["single"] == (field.RARE, "top1")
    # the ablations sit at the compared layout
    by_name = {a.name: a for a in field.arms(1.5)}
    assert by_name["HNS-rows"].objective.layout == 1.5
    assert by_name["HNS untied"].objective.layout == 1.5 and not by_name["HNS untied"].tied


def train_until_nothing_is_pending(profile, settings, infos, results_dir, corpus, only=None):
    """What ``selfish reproduce`` does: declare, train what is new, declare again, until no
    part is pending; returns the last declaration and the number of rounds."""
    rounds = 0
    while True:
        grids = field.field_plan(profile, settings, infos, results_dir=results_dir)
        tuning = {k: c for k, c in grids["tuning"].items() if only is None or k[1] in only}
        waiting = {k for k in grids.get(field.PENDING, {}) if only is None or k[1] in only}
        missing = {k: c for k, c in tuning.items()
                   if not (results_dir / "runs" / config_hash(c) / "DONE").exists()}  # fmt: skip
        if not waiting:
            return grids, rounds
        assert missing, "a pending arm must have a tuning run left to train"
        get_or_train_grid(missing, corpus=corpus, results_dir=results_dir, progress=False)
        rounds += 1


def test_a_new_objective_is_one_class_and_reaches_the_chapters_tables(label_smoothing, corpus,
                                                                     tmp_path):  # fmt: skip
    """Registered, it is an arm, tuned over its values on every tuning seed, and its runs
    land in the metrics, the differences to CE and the ranking."""
    smoke = get_profile("smoke", seeds=(0, 1))
    assert "LS" in list(field.arm_table()["arm"])
    tuning = field.tuning_configs(smoke, "single")
    ls = sorted((v, s) for (name, v, s) in tuning if name == "LS")
    assert ls == [(v, s) for v in (0.05, 0.1, 0.2) for s in smoke.tuning_seeds]
    assert all(c.split == "tuning" for c in tuning.values())
    infos = {"single": corpus.token_info()}
    # before tuning, LS waits (at its published value) and is not among the runs
    grids = field.field_plan(smoke, ["single"], infos, results_dir=tmp_path)
    assert ("single", "LS", 0) in grids[field.PENDING]
    assert ("LS", 0) not in grids["single"]
    grids, rounds = train_until_nothing_is_pending(smoke, ["single"], infos, tmp_path, corpus,
                                                   only={"LS"})  # fmt: skip
    assert 1 <= rounds <= 1 + field.EXTENSION_LIMIT
    chosen = grids["single"][("LS", 0)].objective.eps
    table = field.tuning_table(smoke, "single", infos["single"], results_dir=tmp_path)
    rows = table[table["arm"] == "LS"]
    assert rows["chosen"].sum() == 1 and rows.loc[rows["chosen"], "value"].item() == chosen
    assert rows.loc[rows["chosen"], "score"].item() == rows["score"].max()
    # each score is the mean of its tuning seeds' (two runs per candidate)
    for rec in rows.to_dict("records"):
        assert len(rec["seed_scores"]) == len(smoke.tuning_seeds)
        assert rec["score"] == pytest.approx(np.mean(rec["seed_scores"]))
    runs = {k: c for k, c in grids["single"].items() if k[0] in ("CE", "LS")}
    trained = get_or_train_grid(runs, corpus=corpus, results_dir=tmp_path, progress=False)
    result = field.compare(trained, infos["single"], "single")
    assert "LS" in set(result.table["experiment"]) and "LS" in set(result.diffs["experiment"])
    assert "LS" in list(result.ranking["arm"]) and result.roles["LS"] == "peer"
    assert {"balanced_recall"} <= set(result.table.columns)


def synthetic(peaks: dict[str, float]):
    """A tuning score per config: highest at ``peaks[arm]`` (in log offset from the grid's
    origin), a hill with no flat part, a bit different per seed."""

    def score(config) -> float:
        objective = config.objective
        tuning = type(objective).tuning
        value = getattr(objective, tuning.hyperparameter)
        peak = peaks.get(objective.arm, tuning.published)
        height = -abs(math.log(value - tuning.origin) - math.log(peak - tuning.origin))
        return height + 0.001 * config.seed

    return score


def test_a_grid_grows_past_its_edge_until_the_choice_is_inside(monkeypatch):
    """A synthetic score that peaks outside the first grid: LA's tau at 1.8 (the grid
    ends at 1) and CosReg's gamma at 0.05 (it starts at 1). Each declaration adds one
    value where the choice is on the edge: LA chooses 1, then 2 (still the edge), then,
    with 4 tried, 2 inside the grid; CosReg walks down to 0.333, then 0.111, and stops
    there, its choice still on the edge after two more values."""
    smoke = get_profile("smoke")
    trained: set[str] = set()
    score = synthetic({"LA": 1.8, "CosReg": 0.05})
    monkeypatch.setattr(field, "stored_run",
                        lambda config, results_dir=None, device=None:
                        config if config_hash(config) in trained else None)  # fmt: skip
    monkeypatch.setattr(field, "tuning_score",
                        lambda run, info, setting, scope_metric=None: score(run))  # fmt: skip
    infos = {"single": pd.DataFrame()}
    rounds = 0
    while True:
        grids = field.field_plan(smoke, ["single"], infos)
        new = {config_hash(c) for c in grids["tuning"].values()} - trained
        if field.PENDING not in grids:
            break
        assert new, "still pending, yet nothing new to train"
        trained |= new
        rounds += 1
    assert rounds == 3  # the first grids, then one value more, then another
    table = field.tuning_table(smoke, "single", pd.DataFrame())
    la = table[table["arm"] == "LA"].set_index("value")
    assert list(la.index) == [0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0]
    assert la.loc[2.0, "chosen"] and not la["at_edge"].any()
    assert la["round"].to_dict()[4.0] == 2 and la["extended"].iloc[0] == 2
    assert la["edge"].iloc[0] == field.EDGE_NOTES["interior"]
    cos = table[table["arm"] == "CosReg"].set_index("value")
    assert list(cos.index) == [0.111, 0.333, 1.0, 3.0, 10.0, 30.0, 100.0]
    assert cos.loc[0.111, "chosen"] and cos.loc[0.111, "at_edge"]
    assert cos["edge"].iloc[0] == field.EDGE_NOTES["limit"]
    # an arm whose peak is inside its first grid is not extended
    focal = table[table["arm"] == "Focal"]
    assert focal["extended"].iloc[0] == 0 and focal.loc[focal["chosen"], "value"].item() == 2.0
    summary = field.tuning_summary(table).set_index("arm")
    assert summary.loc["CosReg", "still on the edge"] and summary.loc["CosReg", "extended by"] == 2
    assert summary.loc["LA", "chosen"] == "2"


def test_a_grid_stops_where_the_hyperparameter_ends():
    """Focal's gamma peaks far above its grid: 12.5 is added, 31.2 would leave the range
    (at most 20), so the choice stays on the edge and the table says why."""
    smoke = get_profile("smoke")
    focal = next(a for a in field.tuned_arms() if a.name == "Focal")
    result = field.tune_arm(smoke, "single", focal, score=synthetic({"Focal": 100.0}))
    assert list(result.rows["value"]) == [0.5, 1.0, 2.0, 5.0, 12.5]
    assert result.chosen == 12.5 and result.rows["at_edge"].any()
    assert result.rows["edge"].iloc[0] == field.EDGE_NOTES["range"]


def test_choose_takes_the_best_mean_then_the_published_value_then_the_smaller():
    assert field.choose([1.0, 2.0, 4.0], [0.5, 0.5, 0.4], published=2.0) == 2.0
    assert field.choose([1.0, 2.0, 4.0], [0.5, 0.4, 0.5], published=2.0) == 1.0
    assert field.choose([1.0, 2.0, 4.0], [0.1, 0.4, 0.5], published=2.0) == 4.0
    assert field.choose([1.0, 2.0], [math.nan, 0.4], published=2.0) is None


def test_plan_lists_pending_runs_after_tuning(corpus, tmp_path):
    smoke = get_profile("smoke", seeds=(0,))
    infos = {"bilingual": corpus.token_info(True)}
    grids = field.field_plan(smoke, ["bilingual"], infos, results_dir=tmp_path)
    table = plan_table({"07_hns_against_the_field": grids}, tmp_path)
    pending = table[table["status"] == PENDING_STATUS]
    # Focal, CosReg, LA (and LA on its own target: one id), Entmax and AGG at one seed;
    # HNS tuned waits at layout 2, which is the HNS arm's own run (one id, listed once)
    assert sorted(o.split("(")[0] for o in pending["objective"]) == ["AGG", "CosReg", "Entmax",
                                                                     "Focal", "LA"]  # fmt: skip
    assert set(table["status"]) == {"missing", PENDING_STATUS}
    # every candidate trains on every tuning seed, and HNS at full length at each layout
    tuning = grids["tuning"]
    assert {k[3] for k in tuning} == set(smoke.tuning_seeds)
    carry = grids[field.CARRY_OVER]
    assert sorted({k[1] for k in carry}) == [1.0, 2.0, 4.0]
    assert all(c.max_steps == smoke.steps["bilingual"] and c.split != "tuning"
               for c in carry.values())  # fmt: skip


# --- the measures ----------------------------------------------------------------------------


def test_balanced_recall_is_the_mean_of_per_token_top1_over_the_tokens_seen():
    """Three tokens of group a (top-1 1/2, 3/4, and one never seen), two of group b (0 and
    1): a = (1/2 + 3/4) / 2, b = 1/2, all = (1/2 + 3/4 + 0 + 1) / 4."""
    sums = pd.DataFrame({"token": [0, 1, 2, 3, 4], "count": [2, 4, 0, 5, 1],
                         "top1_sum": [1.0, 3.0, 0.0, 0.0, 1.0]})  # fmt: skip
    info = pd.DataFrame({"token": [0, 1, 2, 3, 4], "group": ["a", "a", "a", "b", "b"]})
    by_group = field.balanced_recall(sums, info, ["group"]).set_index("group")["balanced_recall"]
    assert by_group["a"] == pytest.approx((0.5 + 0.75) / 2)
    assert by_group["b"] == pytest.approx(0.5)
    overall = field.balanced_recall(sums, info)["balanced_recall"].item()
    assert overall == pytest.approx((0.5 + 0.75 + 0.0 + 1.0) / 4)


def fake_run(sums: pd.DataFrame, seed: int = 0):
    """What ``scope_metrics`` reads of a run: its evaluation sums at its last step."""
    ev = sums.assign(step=10)
    config = SimpleNamespace(seed=seed, objective=SimpleNamespace(arm="CE"))
    return SimpleNamespace(eval_tokens=ev, final_eval=lambda: sums, config=config)


def test_scope_metrics_add_balanced_recall_per_language_pooled_and_mixture(corpus):
    info = corpus.token_info(True)
    rng = np.random.default_rng(0)
    n = len(info)
    count = rng.integers(0, 6, n)
    top1 = np.minimum(count, rng.integers(0, 6, n)).astype(float)
    sums = pd.DataFrame({"token": info["token"], "count": count, "loss_sum": count * 2.0,
                         "top1_sum": top1, "top5_sum": top1, "rr_sum": top1})  # fmt: skip
    table = field.scope_metrics(fake_run(sums), info, "bilingual", p_low=0.1).set_index("scope")

    def independent(mask) -> float:
        seen = (count > 0) & mask
        return float(np.mean(top1[seen] / count[seen]))

    high = independent(info["language"].to_numpy() == "high")
    low = independent(info["language"].to_numpy() == "low")
    assert table.loc["high", "balanced_recall"] == pytest.approx(high)
    assert table.loc["low", "balanced_recall"] == pytest.approx(low)
    assert table.loc[POOLED, "balanced_recall"] == pytest.approx(independent(np.ones(n, bool)))
    assert table.loc[MIXTURE, "balanced_recall"] == pytest.approx(0.9 * high + 0.1 * low)
    single = field.scope_metrics(fake_run(sums[sums["token"] < corpus.vocab_size]),
                                 corpus.token_info(), "single").set_index("scope")  # fmt: skip
    base = corpus.token_info()
    rare = base["rank"].to_numpy() >= 51
    part = count[: corpus.vocab_size], top1[: corpus.vocab_size]
    seen = part[0] > 0
    assert single.loc[field.RARE, "balanced_recall"] == pytest.approx(
        float(np.mean(part[1][seen & rare] / part[0][seen & rare])))  # fmt: skip
    assert single.loc[field.ALL, "balanced_recall"] == pytest.approx(
        float(np.mean(part[1][seen] / part[0][seen])))  # fmt: skip
    assert single.loc[field.ALL, "top1"] == pytest.approx(part[1].sum() / part[0].sum())
    # the tuning criterion reads one entry without the table, and finds the same number
    for setting, frame, token_info in (("bilingual", table, info), ("single", single, base)):
        run_sums = sums if setting == "bilingual" else sums[sums["token"] < corpus.vocab_size]
        for scope in frame.index:
            for metric in field.FIELD_METRICS:
                value = field.scope_value(run_sums, token_info, setting, scope, metric, 0.1)
                expected = frame.loc[scope, metric]
                assert value == pytest.approx(expected, nan_ok=True), (scope, metric)


def test_spearman_against_the_formula_and_its_nan_cases():
    """No ties: rho = 1 - 6 sum d^2 / (n (n^2 - 1)); (1, 2, 3, 4) against (1, 3, 2, 4):
    d^2 sums to 2, rho = 1 - 12 / 60 = 0.8."""
    rho, note = field.spearman([0.1, 0.2, 0.3, 0.4], [10, 30, 20, 40])
    assert rho == pytest.approx(0.8) and "4 candidates" in note
    rho, note = field.spearman([0.1, 0.2], [1, 2])
    assert math.isnan(rho) and "needs 3" in note
    rho, note = field.spearman([0.1, 0.2, 0.3], [1, 1, 1])
    assert math.isnan(rho) and "same for every candidate" in note


# --- the claims ------------------------------------------------------------------------------


def per_seed_frame(values: dict[str, list[float]]) -> pd.DataFrame:
    rows = []
    for arm, seeds in values.items():
        for seed, v in enumerate(seeds):
            rows.append({"experiment": arm, "objective": arm, "seed": seed, "scope": "low",
                         "top1": v, "loss": 1.0, "recall5": v, "mrr": v,
                         "balanced_recall": v})  # fmt: skip
    return pd.DataFrame(rows)


def test_field_claims_on_a_known_case():
    """HNS tuned beats a weak peer and not a strong one; HNS-rows keeps 80% of HNS's gain
    (supported), a second ablation frame keeps 20% (contradicted); untying gives more
    than HNS in one frame (F3 supported) and far less in another (contradicted)."""
    frame = per_seed_frame({
        "CE": [0.10, 0.12, 0.11], "HNS": [0.20, 0.21, 0.22], "HNS tuned": [0.20, 0.21, 0.22],
        "Weak": [0.10, 0.11, 0.10], "Strong": [0.30, 0.33, 0.31],
        "LA (balanced recall)": [0.05, 0.06, 0.04],
        "HNS-rows": [0.18, 0.19, 0.20], "CE untied": [0.22, 0.235, 0.24],
        "HNS untied": [0.25, 0.27, 0.29],
    })  # fmt: skip
    roles = {"Weak": "peer", "Strong": "peer", "HNS-rows": "ablation",
             "LA (balanced recall)": field.OWN_TARGET}  # fmt: skip
    table = field.field_claims(frame, "bilingual", roles)
    assert (table["definition"].str.len() > 0).all()
    f1 = table[(table["claim"] == "F1") & table["primary"]].set_index("B")
    assert f1.loc["Weak", "verdict"] == "supported"
    assert f1.loc["Strong", "verdict"] == "contradicted"
    assert "LA (balanced recall)" not in f1.index  # its row stands beside
    beside = table[(table["claim"] == "F1") & ~table["primary"]]
    assert "LA (balanced recall)" in set(beside["B"])
    f2 = table[(table["claim"] == "F2") & table["primary"]].iloc[0]
    # per seed: (rows - ce) - 0.5 (hns - ce) = 0.08-0.05, 0.07-0.045, 0.09-0.055
    assert f2["diff"] == pytest.approx((0.03 + 0.025 + 0.035) / 3)
    assert f2["verdict"] == "supported"
    f3 = table[(table["claim"] == "F3") & table["primary"]].iloc[0]
    # per seed: (untied - ce) - (hns - ce) = untied - hns = 0.02, 0.025, 0.02
    assert f3["diff"] == pytest.approx((0.02 + 0.025 + 0.02) / 3)
    assert f3["test"] == "not_worse" and f3["margin"] == field.UNTYING_MARGIN
    assert f3["verdict"] == "supported"
    frame.loc[frame["experiment"] == "HNS-rows", "top1"] = [0.12, 0.14, 0.13]
    frame.loc[frame["experiment"] == "CE untied", "top1"] = [0.10, 0.13, 0.11]
    again = field.field_claims(frame, "bilingual", roles)
    primary = again[again["primary"]].set_index("claim")
    assert primary.loc["F2", "verdict"] == "contradicted"
    assert primary.loc["F3", "verdict"] == "contradicted"  # untying gives almost nothing


def test_ranking_orders_by_the_settings_metric_and_flags_entmax_loss():
    frame = per_seed_frame({"CE": [0.1, 0.2], "HNS": [0.3, 0.4], "Entmax": [0.2, 0.3]})
    frame.loc[frame["experiment"] == "Entmax", "objective"] = "Entmax"
    frame = pd.concat([frame, frame.assign(scope=POOLED)], ignore_index=True)
    table = field.summary(frame)
    diffs = field.differences(frame)
    ranked = field.ranking(table, diffs, "bilingual", {"CE": "reference", "HNS": "hns"})
    assert list(ranked["arm"]) == ["HNS", "Entmax", "CE"]
    assert list(ranked["rank"]) == [1, 2, 3]
    assert ranked.set_index("arm").loc["Entmax", "loss (low-resource)"].endswith(
        "(not comparable)")  # fmt: skip
    assert {"balanced recall (low-resource)", "balanced recall (both languages)"} <= set(ranked)
    loss = diffs[(diffs["experiment"] == "Entmax") & (diffs["metric"] == "loss")]
    assert not loss["loss_comparable"].any()
    top1 = field.difference_table(diffs, "top1").set_index("top-1 accuracy, arm − CE")
    assert top1.loc["HNS", "low-resource"] == "+0.2000 [+0.2000, +0.2000] (+)"
    assert list(field.difference_table(diffs, "loss").iloc[:, 0]) == ["HNS"]  # no Entmax
    balanced = diffs[(diffs["metric"] == "balanced_recall") & (diffs["experiment"] == "HNS")]
    assert set(balanced["verdict"]) == {"better"}


def test_claims_of_two_chapters_share_claims_json(tmp_path):
    row = {"claim": "C6", "source": "04_bilingual_simulation", "verdict": "supported"}
    claims.save_claims(pd.DataFrame([row]), tmp_path)
    new = {"claim": "F1", "source": "07_hns_against_the_field", "verdict": "inconclusive"}
    claims.save_claims(pd.DataFrame([new]), tmp_path)
    claims.save_claims(pd.DataFrame([{**new, "verdict": "supported"}]), tmp_path)
    saved = json.loads((tmp_path / "claims.json").read_text())
    assert [(r["claim"], r["verdict"]) for r in saved] == [("C6", "supported"),
                                                          ("F1", "supported")]  # fmt: skip


def test_agg_scale_translates_the_per_step_alpha_of_the_paper_profile():
    """At the paper's 12 x 64 = 768 tokens per step, a per-step alpha a is a * 32768 / 768
    = 42.7 a on the reference's scale: 0.01 is 0.43, and 0.03 is 0.0007 per step."""
    text = field.agg_scale(get_profile("paper"))
    assert "12 × 64 = 768 tokens" in text and "42.7 a" in text
    assert "0.01 is 0.43" in text and "0.03 is 0.00070 per step" in text


def test_a_stored_run_without_a_score_is_never_chosen_nor_waited_for(monkeypatch, tmp_path):
    """A tuning run whose criterion has no token in the tuning split (NaN) scores -inf:
    the arm chooses among the others and does not wait for it."""
    smoke = get_profile("smoke")
    focal = next(a for a in field.tuned_arms() if a.name == "Focal")
    monkeypatch.setattr(field, "_SCORES", {})
    monkeypatch.setattr(field, "stored_run", lambda config, results_dir=None, device=None:
                        SimpleNamespace(path=tmp_path / config_hash(config),
                                        gamma=config.objective.gamma))  # fmt: skip
    monkeypatch.setattr(field, "tuning_score", lambda run, info, setting, scope_metric=None:
                        math.nan if run.gamma == 1.0 else -abs(run.gamma - 2.0))  # fmt: skip
    result = field.tune_arm(smoke, "single", focal, pd.DataFrame(), tmp_path)
    scores = result.rows.set_index("value")["score"]
    assert scores[1.0] == -math.inf and result.chosen == 2.0
    assert result.rows["edge"].iloc[0] == field.EDGE_NOTES["interior"]


def test_tuning_reads_only_runs_of_the_sessions_device(monkeypatch, tmp_path):
    """A stored tuning run trained on another kind of device is not scored: the device
    reaches ``runs.stored_run``, which serves no run of another device."""
    focal = next(a for a in field.tuned_arms() if a.name == "Focal")
    monkeypatch.setattr(field, "_SCORES", {})
    asked = []

    def stored(config, results_dir=None, device=None):
        asked.append(device)
        return None  # as stored_run answers for a run of another device

    monkeypatch.setattr(field, "stored_run", stored)
    result = field.tune_arm(get_profile("smoke"), "single", focal, pd.DataFrame(), tmp_path,
                            device="cpu")  # fmt: skip
    assert asked and set(asked) == {"cpu"}
    assert result.chosen is None and result.rows["score"].isna().all()
