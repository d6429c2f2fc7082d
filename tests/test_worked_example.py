"""The worked example of notebook 01: the scenario split is exact, HNS zeroes the
excluded rows, and a case small enough to derive by hand matches."""

from __future__ import annotations

import math

import pytest
import torch

from selfish_lib.engine.scenarios import SCENARIOS
from selfish_lib.engine.validation import ParameterError
from selfish_lib.study import hypothesis as we

INPUT, TARGET, NONTARGET = SCENARIOS
LAYOUTS = (math.inf, 3.0, 2.0, 1.0, 0.5, 0.0)


def random_example(seed: int, vocab: int = 7, dim: int = 4) -> we.WorkedExample:
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(vocab, dim, generator=g, dtype=torch.float64) * 1.5
    return we.WorkedExample(
        W, context=seed % vocab, target=(seed + 3) % vocab, labels=tuple("abcdefg"[:vocab])
    )


EXAMPLES = [we.default_example(), random_example(0), random_example(1), random_example(5)]


@pytest.mark.parametrize("example", EXAMPLES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_scenarios_sum_to_the_tied_gradient(example, layout):
    parts = we.scenario_gradients(example, layout)
    assert set(parts) == set(SCENARIOS)
    total = sum(parts.values())
    tied = we.tied_gradient(example, layout)
    if we.excluded_rows(example, layout).sum() < example.vocab_size - 1:
        assert tied.abs().max() > 0  # a non-trivial case (not the target alone)
    torch.testing.assert_close(total, tied, rtol=0, atol=1e-12)


@pytest.mark.parametrize("example", EXAMPLES)
def test_each_scenario_touches_only_its_rows(example):
    parts = we.scenario_gradients(example, 1.0)
    rows = torch.arange(example.vocab_size)
    assert parts[INPUT][rows != example.context].abs().max() == 0
    assert parts[TARGET][rows != example.target].abs().max() == 0
    assert parts[NONTARGET][example.target].abs().max() == 0


@pytest.mark.parametrize("example", EXAMPLES)
@pytest.mark.parametrize("layout", (2.0, 1.0, 0.5))
def test_excluded_rows_get_exactly_zero_output_gradient_under_hns(example, layout):
    excluded = we.excluded_rows(example, layout)
    nontarget = we.scenario_gradients(example, layout)[NONTARGET]
    assert torch.equal(nontarget[excluded], torch.zeros_like(nontarget[excluded]))
    # ... whereas plain cross-entropy pushes every non-target row.
    ce = we.scenario_gradients(example, math.inf)[NONTARGET]
    others = torch.arange(example.vocab_size) != example.target
    assert (ce[others].norm(dim=1) > 0).all()


@pytest.mark.parametrize("example", EXAMPLES)
def test_cross_entropy_excludes_nothing(example):
    assert not we.excluded_rows(example, math.inf).any()
    assert not we.token_table(example, math.inf)["excluded"].any()
    assert we.summarize(example, math.inf)["n_excluded"] == 0


def test_the_default_example_is_instructive_at_layout_2():
    table = we.token_table(we.default_example(), 2.0)
    assert table.loc[table["excluded"], "label"].tolist() == ["Q", "X"]
    kept_others = table[~table["excluded"] & (table["role"] != "target")]
    assert len(kept_others) >= 2  # some non-targets stay as hard negatives
    assert we.token_table(we.default_example(), 1.0)["excluded"].sum() > 2


def test_a_case_derived_by_hand_with_d_equal_1():
    # W = [1, 2, -3] (d = 1), context 0, target 1: h = W[0] = 1, z = W h = (1, 2, -3).
    example = we.WorkedExample(
        torch.tensor([[1.0], [2.0], [-3.0]], dtype=torch.float64), 0, 1, ("c", "t", "r")
    )
    h, W, y = 1.0, [1.0, 2.0, -3.0], [0.0, 1.0, 0.0]

    def expected(p):
        out = [(p[j] - y[j]) * h for j in range(3)]  # dL/dW_out[j] = (p_j - y_j) h
        inp = sum((p[j] - y[j]) * W[j] for j in range(3))  # dL/dh = sum_j (p_j - y_j) W_out[j]
        return out, inp

    # Cross-entropy: the full softmax.
    e = [math.exp(z) for z in (1.0, 2.0, -3.0)]
    p_ce = [v / sum(e) for v in e]
    # HNS at layout 2: z_r = -3 < z_t - 2 = 0 is excluded; softmax over {c, t} only.
    p_hns = [e[0] / (e[0] + e[1]), e[1] / (e[0] + e[1]), 0.0]
    for layout, p in ((math.inf, p_ce), (2.0, p_hns)):
        out, inp = expected(p)
        parts = we.scenario_gradients(example, layout)
        assert parts[INPUT][0, 0].item() == pytest.approx(inp, abs=1e-12)
        assert parts[INPUT][1:].abs().max() == 0
        assert parts[TARGET][1, 0].item() == pytest.approx(out[1], abs=1e-12)
        assert parts[NONTARGET][0, 0].item() == pytest.approx(out[0], abs=1e-12)
        assert parts[NONTARGET][2, 0].item() == pytest.approx(out[2], abs=1e-12)
        tied = we.tied_gradient(example, layout)
        assert tied[0, 0].item() == pytest.approx(inp + out[0], abs=1e-12)
    assert we.excluded_rows(example, 2.0).tolist() == [False, False, True]


def test_a_case_derived_by_hand_with_d_equal_2():
    # W rows (1,0), (0,1), (1,1); context 0, target 1: h = (1,0), z = (1, 0, 1).
    W = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    example = we.WorkedExample(W, 0, 1, ("a", "b", "c"))
    e = [math.e, 1.0, math.e]
    p = [v / sum(e) for v in e]
    parts = we.scenario_gradients(example, math.inf)
    # input: sum_j (p_j - y_j) W[j] = p0 (1,0) + (p1 - 1) (0,1) + p2 (1,1)
    expected_input = [p[0] + p[2], (p[1] - 1.0) + p[2]]
    assert parts[INPUT][0].tolist() == pytest.approx(expected_input, abs=1e-12)
    assert parts[TARGET][1].tolist() == pytest.approx([p[1] - 1.0, 0.0], abs=1e-12)
    assert parts[NONTARGET][0].tolist() == pytest.approx([p[0], 0.0], abs=1e-12)
    assert parts[NONTARGET][2].tolist() == pytest.approx([p[2], 0.0], abs=1e-12)


@pytest.mark.parametrize("example", EXAMPLES)
@pytest.mark.parametrize("layout", (3.0, 2.0, 1.0, 0.5, 0.1))
def test_the_bound_holds_for_excluded_rows_and_fails_for_kept_ones(example, layout):
    check = we.bound_check(example, layout)
    assert check["holds"].all()
    table = we.token_table(example, layout)
    assert len(check) == table["excluded"].sum()
    kept = table[~table["excluded"]]
    assert (kept["ratio"] >= math.exp(-layout) - 1e-12).all()


def test_token_table_probabilities_and_ratios():
    example = we.default_example()
    table = we.token_table(example, 2.0)
    assert list(table.columns) == ["token", "label", "role", "logit", "prob", "ratio", "excluded"]
    assert table["prob"].sum() == pytest.approx(1.0, abs=1e-12)
    assert table.loc[example.target, "ratio"] == pytest.approx(1.0)
    assert table["role"].tolist().count("context") == 1
    logits = (example.W @ example.W[example.context]).tolist()
    assert table["logit"].tolist() == pytest.approx(logits)


def test_gradient_norms_is_a_long_table_matching_the_scenarios():
    example = we.default_example()
    norms = we.gradient_norms(example, 2.0)
    assert len(norms) == 2 * len(SCENARIOS) * example.vocab_size
    assert set(norms["objective"]) == {"CE", "HNS"}
    hns_push = norms[(norms["objective"] == "HNS") & (norms["scenario"] == NONTARGET)]
    expected = we.scenario_gradients(example, 2.0)[NONTARGET].norm(dim=1).tolist()
    assert hns_push["grad_norm"].tolist() == pytest.approx(expected, abs=1e-15)
    assert (hns_push.loc[hns_push["excluded"], "grad_norm"] == 0).all()


def test_summarize_reports_what_hns_removes():
    example = we.default_example()
    facts = we.summarize(example, 2.0)
    norms = we.gradient_norms(example, 2.0)
    push = norms[norms["scenario"] == NONTARGET]
    ce = push[push["objective"] == "CE"]
    assert facts["n_excluded"] == len(facts["excluded_labels"]) == 2
    assert facts["excluded_norm_hns"] == 0.0
    assert facts["excluded_share_ce"] == pytest.approx(
        ce.loc[ce["excluded"], "grad_norm"].sum() / ce["grad_norm"].sum()
    )
    # The renormalized softmax pushes the kept rows harder, but the total shrinks.
    assert 0 < facts["nontarget_norm_hns"] < facts["nontarget_norm_ce"]
    assert facts["bound_holds"] is True


def test_bad_parameters_are_rejected():
    W = torch.zeros(3, 2, dtype=torch.float64)
    with pytest.raises(ParameterError, match="context"):
        we.WorkedExample(W, 3, 0, ("a", "b", "c"))
    with pytest.raises(ParameterError, match="target"):
        we.WorkedExample(W, 0, -1, ("a", "b", "c"))
    with pytest.raises(ParameterError, match="labels"):
        we.WorkedExample(W, 0, 1, ("a", "b"))
    with pytest.raises(ParameterError, match="W"):
        we.WorkedExample(torch.zeros(3), 0, 1, ("a", "b", "c"))
    with pytest.raises(ParameterError, match="layout"):
        we.token_table(we.default_example(), -1.0)
