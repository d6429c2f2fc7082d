"""Chapter 07's harness: the arms come from the registry (a new objective is one class),
tuning chooses on the tuning split and waits for its runs, the claims compute on known
cases, and chapter 07's claims join chapter 04's in claims.json."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import ClassVar

import pandas as pd
import pytest

from selfish_lib.engine.objectives import REGISTRY, Objective, hns_cross_entropy, register
from selfish_lib.engine.profiles import get_profile
from selfish_lib.engine.runs import config_hash, get_or_train_grid
from selfish_lib.report.plan import PENDING_STATUS, plan_table
from selfish_lib.study import claims, field


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
        tuning: ClassVar = ("eps", (0.05, 0.1, 0.2))

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
    assert set(tuned["arm"]) == {"HNS tuned", "AGG", "LA", "CosReg", "Focal"}
    assert all(len(c.split(", ")) == 3 for c in tuned["candidates"])
    # the ablations sit at the compared layout
    by_name = {a.name: a for a in field.arms(1.5)}
    assert by_name["HNS-rows"].objective.layout == 1.5
    assert by_name["HNS untied"].objective.layout == 1.5 and not by_name["HNS untied"].tied


def test_a_new_objective_is_one_class_and_reaches_the_chapters_tables(label_smoothing, corpus,
                                                                     tmp_path):  # fmt: skip
    """Registered, it is an arm, it is tuned over its three values, and its runs land in
    the metrics, the differences to CE and the ranking."""
    smoke = get_profile("smoke", seeds=(0, 1))
    assert "LS" in list(field.arm_table()["arm"])
    tuning = field.tuning_configs(smoke, "single")
    assert [v for (name, v) in tuning if name == "LS"] == [0.05, 0.1, 0.2]
    assert all(c.split == "tuning" for c in tuning.values())
    infos = {"single": corpus.token_info()}
    # before tuning, LS waits (at its published value) and is not among the runs
    grids = field.field_plan(smoke, ["single"], infos, results_dir=tmp_path)
    assert ("single", "LS", 0) in grids[field.PENDING]
    assert ("LS", 0) not in grids["single"]
    ls_tuning = {k: c for k, c in tuning.items() if k[0] == "LS"}
    get_or_train_grid(ls_tuning, corpus=corpus, results_dir=tmp_path, progress=False)
    grids = field.field_plan(smoke, ["single"], infos, results_dir=tmp_path)
    assert ("single", "LS", 0) not in grids.get(field.PENDING, {})
    chosen = grids["single"][("LS", 0)].objective.eps
    table = field.tuning_table(smoke, "single", infos["single"], results_dir=tmp_path)
    ls = table[table["arm"] == "LS"]
    assert ls["chosen"].sum() == 1 and ls.loc[ls["chosen"], "value"].item() == chosen
    assert ls.loc[ls["chosen"], "score"].item() == ls["score"].max()
    runs = {k: c for k, c in grids["single"].items() if k[0] in ("CE", "LS")}
    trained = get_or_train_grid(runs, corpus=corpus, results_dir=tmp_path, progress=False)
    result = field.compare(trained, infos["single"], "single")
    assert "LS" in set(result.table["experiment"]) and "LS" in set(result.diffs["experiment"])
    assert "LS" in list(result.ranking["arm"]) and result.roles["LS"] == "peer"


def test_tuning_picks_the_best_score_and_the_published_value_on_ties(monkeypatch):
    """The choice rule on hand-made scores (no run needed)."""
    smoke = get_profile("smoke")
    info = pd.DataFrame()
    values = {}

    def fake(config, results_dir=None):
        return values.get(config_hash(config))

    monkeypatch.setattr(field, "stored_run", fake)
    monkeypatch.setattr(field, "tuning_score", lambda run, info, setting: run)
    configs = field.tuning_configs(smoke, "single")
    agg = [(k, c) for k, c in configs.items() if k[0] == "AGG"]
    for (_, value), config in agg:
        values[config_hash(config)] = {0.01: 0.5, 0.03: 0.5, 0.1: 0.4}[value]
    table = field.tuning_table(smoke, "single", info)
    rows = table[table["arm"] == "AGG"]
    assert rows.loc[rows["chosen"], "value"].tolist() == [0.03]  # tie: the published one
    assert not rows["at_edge"].any()
    values[config_hash(agg[2][1])] = 0.9
    table = field.tuning_table(smoke, "single", info)
    rows = table[table["arm"] == "AGG"]
    assert rows.loc[rows["chosen"], "value"].tolist() == [0.1]
    assert rows.loc[rows["at_edge"], "value"].tolist() == [0.1]  # the largest value tried
    # an arm with a missing tuning run chooses nothing
    assert not table[table["arm"] == "LA"]["chosen"].any()


def test_plan_lists_pending_runs_after_tuning(corpus, tmp_path):
    smoke = get_profile("smoke", seeds=(0,))
    infos = {"bilingual": corpus.token_info(True)}
    grids = field.field_plan(smoke, ["bilingual"], infos, results_dir=tmp_path)
    table = plan_table({"07_hns_against_the_field": grids}, tmp_path)
    pending = table[table["status"] == PENDING_STATUS]
    # Focal, CosReg, LA and AGG at one seed; HNS tuned waits at layout 2, which is the
    # HNS arm's own run (one id, listed once)
    assert sorted(o.split("(")[0] for o in pending["objective"]) == ["AGG", "CosReg", "Focal",
                                                                     "LA"]  # fmt: skip
    assert set(table["status"]) == {"missing", PENDING_STATUS}


def per_seed_frame(values: dict[str, list[float]]) -> pd.DataFrame:
    rows = []
    for arm, seeds in values.items():
        for seed, v in enumerate(seeds):
            rows.append({"experiment": arm, "objective": arm, "seed": seed, "scope": "low",
                         "top1": v, "loss": 1.0, "recall5": v, "mrr": v})  # fmt: skip
    return pd.DataFrame(rows)


def test_field_claims_on_a_known_case():
    """HNS tuned beats a weak peer and not a strong one; HNS-rows keeps 80% of HNS's gain
    (supported), a second ablation frame keeps 20% (contradicted)."""
    frame = per_seed_frame({
        "CE": [0.10, 0.12, 0.11], "HNS": [0.20, 0.21, 0.22], "HNS tuned": [0.20, 0.21, 0.22],
        "Weak": [0.10, 0.11, 0.10], "Strong": [0.30, 0.33, 0.31],
        "HNS-rows": [0.18, 0.19, 0.20],
    })  # fmt: skip
    roles = {"Weak": "peer", "Strong": "peer", "HNS-rows": "ablation"}
    table = field.field_claims(frame, "bilingual", roles)
    f1 = table[(table["claim"] == "F1") & table["primary"]].set_index("B")
    assert f1.loc["Weak", "verdict"] == "supported"
    assert f1.loc["Strong", "verdict"] == "contradicted"
    f2 = table[(table["claim"] == "F2") & table["primary"]].iloc[0]
    # per seed: (rows - ce) - 0.5 (hns - ce) = 0.08-0.05, 0.07-0.045, 0.09-0.055
    assert f2["diff"] == pytest.approx((0.03 + 0.025 + 0.035) / 3)
    assert f2["verdict"] == "supported"
    frame.loc[frame["experiment"] == "HNS-rows", "top1"] = [0.12, 0.14, 0.13]
    f2 = field.field_claims(frame, "bilingual", roles)
    assert f2[(f2["claim"] == "F2") & f2["primary"]]["verdict"].item() == "contradicted"


def test_ranking_orders_by_the_settings_metric_and_flags_entmax_loss():
    frame = per_seed_frame({"CE": [0.1, 0.2], "HNS": [0.3, 0.4], "Entmax": [0.2, 0.3]})
    frame.loc[frame["experiment"] == "Entmax", "objective"] = "Entmax"
    table = field.summary(frame)
    diffs = field.differences(frame)
    ranked = field.ranking(table, diffs, "bilingual", {"CE": "reference", "HNS": "hns"})
    assert list(ranked["arm"]) == ["HNS", "Entmax", "CE"]
    assert list(ranked["rank"]) == [1, 2, 3]
    assert ranked.set_index("arm").loc["Entmax", "loss"].endswith("(not comparable)")
    loss = diffs[(diffs["experiment"] == "Entmax") & (diffs["metric"] == "loss")]
    assert not loss["loss_comparable"].any()
    top1 = field.difference_table(diffs, "top1").set_index("top-1 accuracy, arm − CE")
    assert top1.loc["HNS", "low-resource"] == "+0.2000 [+0.2000, +0.2000] (+)"
    assert list(field.difference_table(diffs, "loss").iloc[:, 0]) == ["HNS"]  # no Entmax


def test_claims_of_two_chapters_share_claims_json(tmp_path):
    row = {"claim": "C6", "source": "04_bilingual_simulation", "verdict": "supported"}
    claims.save_claims(pd.DataFrame([row]), tmp_path)
    new = {"claim": "F1", "source": "07_hns_against_the_field", "verdict": "inconclusive"}
    claims.save_claims(pd.DataFrame([new]), tmp_path)
    claims.save_claims(pd.DataFrame([{**new, "verdict": "supported"}]), tmp_path)
    saved = json.loads((tmp_path / "claims.json").read_text())
    assert [(r["claim"], r["verdict"]) for r in saved] == [("C6", "supported"),
                                                          ("F1", "supported")]  # fmt: skip
