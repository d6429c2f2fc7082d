"""Geometry on matrices with known answers: the measures of one matrix (``matrix``),
the projections, the unigram probe and the chapter's tables and reading."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats as st

from selfish_lib.engine.validation import ParameterError
from selfish_lib.study import geometry, matrix, probe, projection


def test_scale_and_normalization():
    w = np.array([[3.0, 4.0], [0.0, 0.0]])  # row norms 5 and 0: rms = sqrt(12.5)
    assert matrix.scale(w) == pytest.approx(np.sqrt(12.5))
    assert matrix.scale(matrix.normalized(torch.tensor(w))) == pytest.approx(1.0)


def test_pca_recovers_a_planar_set_up_to_rotation_and_is_stable():
    rng = np.random.default_rng(0)
    plane = rng.normal(size=(40, 2)) * [3.0, 1.0]
    basis = np.linalg.qr(rng.normal(size=(6, 6)))[0][:, :2]
    w = plane @ basis.T  # 40 points on a plane inside 6 dimensions
    coords = projection.pca_2d(w)
    # distances are preserved (up to the normalization), so the plane is recovered exactly
    d_in = np.linalg.norm(w[:, None] - w[None], axis=-1) / matrix.scale(w)
    d_out = np.linalg.norm(coords[:, None] - coords[None], axis=-1)
    assert np.allclose(d_in, d_out, atol=1e-9)
    assert np.array_equal(coords, projection.pca_2d(w))
    # the components are sign-fixed, so a mirrored set gives the mirrored picture
    assert np.allclose(projection.pca_2d(-w), -coords)


# --- helpers -------------------------------------------------------------------------------


def bilingual_info(ranks) -> pd.DataFrame:
    """A token_info table for a bilingual matrix whose base symbols have these ranks."""
    n = len(ranks)
    return pd.DataFrame(
        {
            "token": range(2 * n),
            "base_token": list(range(n)) * 2,
            "symbol": [chr(ord("a") + i) for i in range(n)] * 2,
            "display": [chr(ord("a") + i) for i in range(n)] * 2,
            "rank": list(ranks) * 2,
            "language": ["high"] * n + ["low"] * n,
        }
    )


def planted_weights(n_base=12, d=8, seeds=(0, 1, 2), noise=None):
    """{(objective, seed): W} where the low rows are noisy copies of the high rows:
    small noise for HNS, large for CE, fresh random rows for 'initial'."""
    noise = noise or {"CE": 1.0, "HNS": 0.2}
    out = {}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        out[("initial", seed)] = rng.normal(size=(2 * n_base, d))
        high = rng.normal(size=(n_base, d))
        for objective, sigma in noise.items():
            low = high + sigma * rng.normal(size=(n_base, d))
            out[(objective, seed)] = np.vstack([high, low])
    return out


# --- isotropy on matrices with known answers ----------------------------------------------


def test_orthonormal_set():
    w = np.eye(6)[:4]  # four orthonormal rows in six dimensions
    assert matrix.mean_pairwise_cosine(w) == pytest.approx(0.0, abs=1e-15)
    assert matrix.effective_rank(w, center=False) == pytest.approx(4.0)
    # centring removes the common mean (1/4)Σe_j: I - J/4 has singular values 1, 1, 1, 0
    assert matrix.effective_rank(w) == pytest.approx(3.0)


def test_plus_minus_basis_is_perfectly_isotropic():
    d = 5
    w = np.vstack([np.eye(d), -np.eye(d)])
    iso = matrix.partition_isotropy(w)
    # Z(±e_j) = e + 1/e + 2(d - 1) for every j
    assert iso.value == pytest.approx(1.0, abs=1e-12)
    assert (iso.n_directions, iso.n_zero) == (d, 0)
    # each e_i is opposite to -e_i (cosine -1), every other pair is orthogonal
    assert matrix.mean_pairwise_cosine(w) == pytest.approx(-d / (d * (2 * d - 1)))
    assert matrix.effective_rank(w) == pytest.approx(d)  # the mean is already zero


def test_rank_one_set():
    v = np.random.default_rng(0).normal(size=7)
    w = np.stack([v, 2 * v, -v])  # cosines: +1, -1, -1
    assert matrix.mean_pairwise_cosine(w) == pytest.approx(-1 / 3)
    assert matrix.effective_rank(w) == pytest.approx(1.0)
    assert matrix.effective_rank(w, center=False) == pytest.approx(1.0)


def test_partition_isotropy_by_hand():
    # rows e1 and 2·e2: WᵀW = diag(1, 4), eigenvectors ±e1, ±e2, and
    # Z(e1) = e + 1, Z(-e1) = 1/e + 1, Z(e2) = 1 + e², Z(-e2) = 1 + e⁻²,
    # so I = (1 + e⁻²) / (1 + e²) = e⁻².
    w = np.array([[1.0, 0.0], [0.0, 2.0]])
    iso = matrix.partition_isotropy(w)
    assert iso.value == pytest.approx(np.exp(-2.0), rel=1e-12)
    assert (iso.n_directions, iso.n_zero) == (2, 0)
    # it depends on the scale (hence computed on normalized matrices in the metrics)
    assert matrix.partition_isotropy(3 * w).value == pytest.approx(np.exp(-6.0), rel=1e-12)


def test_zero_eigenvalue_directions_are_left_out_and_counted():
    rng = np.random.default_rng(1)
    square = rng.normal(size=(3, 3))
    wide = np.hstack([square, np.zeros((3, 2))]) @ np.linalg.qr(rng.normal(size=(5, 5)))[0]
    iso = matrix.partition_isotropy(wide)  # 3 rows in 5 dims: WᵀW has rank 3
    assert (iso.n_directions, iso.n_zero) == (3, 2)
    # a rotation of the space changes nothing: same value as the 3-D matrix
    assert iso.value == pytest.approx(matrix.partition_isotropy(square).value, rel=1e-9)
    # the ±e_i set of 3 dimensions inside 5: every Z over the non-zero directions is
    # e + 1/e + 4 > n = 6, so the zero directions (Z = n) would wrongly lower I(W) below 1
    pm = np.hstack([np.vstack([np.eye(3), -np.eye(3)]), np.zeros((6, 2))])
    iso = matrix.partition_isotropy(pm)
    assert (iso.n_directions, iso.n_zero, iso.value) == (3, 2, pytest.approx(1.0, abs=1e-12))
    assert 6 / (np.e + 1 / np.e + 4) < 0.99


def test_isotropy_rejects_a_zero_matrix():
    with pytest.raises(ParameterError, match="weight"):
        matrix.partition_isotropy(np.zeros((3, 2)))


# --- distances -----------------------------------------------------------------------------


def test_twin_and_centroid_distances_by_hand():
    # rows: high a=(2,0), b=(0,2); low a'=(2,0), b'=(0,0); scale = sqrt((4+4+4+0)/4) = √3
    w = np.array([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [0.0, 0.0]])
    s = np.sqrt(3.0)
    assert matrix.twin_distance(w, 2) == pytest.approx((0 + 2) / 2 / s)
    # centroids (1, 1) and (1, 0)
    assert matrix.centroid_distance(w, [0, 1], [2, 3]) == pytest.approx(1 / s)
    assert matrix.twin_distance(5 * w, 2) == pytest.approx(matrix.twin_distance(w, 2))
    assert np.allclose(matrix.row_norms(w), np.array([2, 2, 2, 0]) / s)
    with pytest.raises(ParameterError, match="n_base"):
        matrix.twin_distance(w, 3)
    with pytest.raises(ParameterError, match="rows_b"):
        matrix.centroid_distance(w, [0], [4])


def test_geometry_metrics_by_hand_and_scale_invariant():
    # three symbols (ranks 1, 2, 3: symbol 2 is the rarest), rows in 3 dimensions
    high = np.array([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]])
    low = high + np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, -2.0]])
    w = np.vstack([high, low])
    info = bilingual_info([1, 2, 3])
    s = matrix.scale(w)
    out = geometry.geometry_metrics(w, info, n_rare=1)
    assert out["twin_distance"] == pytest.approx(2 / 3 / s)
    assert out["language_centroid_distance"] == pytest.approx(2 / 3 / s)
    # rarest (0, 0, 3) against the centroid (1, 1, 0) of the rest
    assert out["rare_centroid_distance_high"] == pytest.approx(np.sqrt(1 + 1 + 9) / s)
    assert out["rare_centroid_distance_low"] == pytest.approx(np.sqrt(1 + 1 + 1) / s)
    assert out["norm_rank_spearman_high"] == pytest.approx(st.spearmanr([2, 2, 3], [1, 2, 3])[0])
    assert out["n_zero"] == 0
    scaled = geometry.geometry_metrics(7.5 * w, info, n_rare=1)
    for key, value in out.items():
        assert scaled[key] == pytest.approx(value, rel=1e-9), key


def test_single_language_metrics_leave_the_bilingual_ones_out():
    info = bilingual_info([1, 2, 3, 4])
    info = info[info["language"] == "high"]
    out = geometry.geometry_metrics(np.random.default_rng(0).normal(size=(4, 6)), info, 1)
    assert np.isnan(out["twin_distance"]) and np.isnan(out["rare_centroid_distance_low"])
    assert out["n_zero"] == 2  # 4 rows in 6 dimensions
    assert out["rare_centroid_distance_high"] > 0


def test_rarest_base_tokens_and_n_rare_validation():
    info = bilingual_info([3, 1, 4, 2])
    assert projection.rarest_base_tokens(info, 2) == [2, 0]
    for bad in (0, 4, 2.5):
        with pytest.raises(ParameterError, match=r"n_rare=.*>= 1 and < 4 \(the number of symbols"):
            projection.rarest_base_tokens(info, bad)


# --- the unigram probe -----------------------------------------------------------------------


def test_unigram_distribution_splits_counts_between_twins_with_a_ghost_count():
    f = probe.unigram_distribution([3, 1, 0], bilingual=True, p_low=0.25, ghost=0.5)
    expected = np.array([2.25, 0.75, 0.5, 0.75, 0.25, 0.5])
    assert np.allclose(f, expected / expected.sum())
    single = probe.unigram_distribution([3, 1, 0], ghost=0.5)
    assert np.allclose(single, np.array([3, 1, 0.5]) / 4.5)
    with pytest.raises(ParameterError, match="p_low"):
        probe.unigram_distribution([3, 1], p_low=0.1)
    with pytest.raises(ParameterError, match="ghost"):
        probe.unigram_distribution([3, 0], ghost=0)


def test_unigram_target_of_a_bilingual_config(tiny_corpus):
    from selfish_lib.engine.training import TrainConfig

    config = TrainConfig.flat(bilingual=True, p_low=0.02, data_sha256=tiny_corpus.sha256)
    f = probe.unigram_target(tiny_corpus, config)
    n = tiny_corpus.vocab_size
    assert f.shape == (2 * n,) and f.sum() == pytest.approx(1.0)
    assert np.allclose(f[n:] / f[:n], 0.02 / 0.98)


def test_probe_recovers_a_planted_distribution():
    rng = np.random.default_rng(0)
    V, d = 12, 16  # d >= V: some x reproduces the target exactly
    w = rng.normal(size=(V, d))
    logits = w @ rng.normal(size=d)
    f = np.exp(logits - logits.max())
    f /= f.sum()
    fit = probe.probe_unigram(w, f, steps=1000, lr=0.1)
    assert abs(fit.kl[0]) < 1e-9
    assert np.allclose(fit.reconstructed[0], f, rtol=1e-3, atol=1e-6)
    # a uniform matrix of one direction cannot: every row gets the same logit
    flat = probe.probe_unigram(np.ones((V, d)), f, steps=200)
    assert flat.kl[0] == pytest.approx((f * np.log(f * V)).sum(), rel=1e-9)


def test_probe_is_deterministic_and_batched_problems_are_independent():
    rng = np.random.default_rng(1)
    a, b, c = rng.normal(size=(3, 20, 4))
    f = rng.dirichlet(np.ones(20))
    ab = probe.probe_unigram(np.stack([a, b]), f, steps=100, seed=3)
    torch.manual_seed(123)  # the global RNG plays no part
    again = probe.probe_unigram(np.stack([a, b]), f, steps=100, seed=3)
    assert np.array_equal(ab.kl, again.kl) and np.array_equal(ab.x, again.x)
    # A's fit does not depend on what it is batched with, nor on being batched at all
    ac = probe.probe_unigram(np.stack([a, c]), f, steps=100, seed=3)
    alone = probe.probe_unigram(a, f, steps=100, seed=3)
    assert np.allclose(ab.x[0], ac.x[0], rtol=1e-12, atol=1e-12)
    assert np.allclose(ab.x[0], alone.x[0], rtol=1e-12, atol=1e-12)
    assert ab.kl.shape == ab.mse.shape == (2,) and (ab.kl > 0).all()


def test_probe_validates_its_settings():
    w, f = np.eye(3), np.full(3, 1 / 3)
    for kwargs, name in (({"steps": 0}, "steps"), ({"lr": 0.0}, "lr"), ({"seed": -1}, "seed")):
        with pytest.raises(ParameterError, match=name):
            probe.probe_unigram(w, f, **kwargs)
    with pytest.raises(ParameterError, match="target"):
        probe.probe_unigram(w, np.array([0.5, 0.5, 0.0]))


# --- projections -------------------------------------------------------------------------------


def test_perplexity_is_validated_against_the_number_of_rows():
    assert projection.check_perplexity(5, 20) == 5.0
    for bad in (0, -1.0, 20, 25.0, float("nan"), "5", True):
        with pytest.raises(ParameterError, match=r"perplexity=.*< 20 \(the number of embedding"):
            projection.check_perplexity(bad, 20)
    with pytest.raises(ParameterError, match="perplexity"):
        projection.tsne_2d(np.eye(6), perplexity=6)


def test_projection_table_gives_both_methods_on_comparable_axes():
    weights = geometry.for_seed(planted_weights(n_base=10, d=6, seeds=(0,)), 0)
    info = bilingual_info(range(1, 11))
    points = projection.projection_table(weights, info, perplexity=5, seed=0, n_rare=3)
    assert len(points) == 2 * 2 * 20  # methods x models x rows
    assert set(points["method"]) == {"PCA", "t-SNE"}
    assert set(points["objective"]) == {"CE", "HNS"}
    for _, part in points.groupby(["method", "objective"]):
        assert part["token"].tolist() == list(range(20))
        assert part["rare"].sum() == 2 * 3  # the three rarest symbols, in both languages
        assert set(part.loc[part["rare"], "rank"]) == {8, 9, 10}
    tsne = points[points["method"] == "t-SNE"]
    for _, part in tsne.groupby("objective"):
        radius = np.sqrt((part["x"] ** 2 + part["y"] ** 2).mean())
        assert radius == pytest.approx(1.0) and abs(part["x"].mean()) < 1e-9
    again = projection.projection_table(weights, info, perplexity=5, seed=0, n_rare=3)
    pd.testing.assert_frame_equal(points, again)
    with pytest.raises(ParameterError, match="seed"):
        geometry.for_seed(planted_weights(seeds=(0,)), 1)


# --- per model, over seeds, and the reading -------------------------------------------------------


@pytest.fixture(scope="module")
def planted_study():
    """Metrics of planted matrices: HNS twins much closer than CE twins, three seeds."""
    weights = planted_weights()
    info = bilingual_info(range(1, 13))
    target = probe.unigram_distribution(np.arange(12, 0, -1) ** 2, bilingual=True, p_low=0.1)
    per_seed = geometry.metrics_table(weights, info, target, n_rare=3, steps=100)
    means, diffs = geometry.summarize(per_seed)
    return weights, info, per_seed, means, diffs


def test_metrics_table_has_every_model_and_metric(planted_study):
    weights, info, per_seed, means, diffs = planted_study
    assert list(zip(per_seed["objective"], per_seed["seed"], strict=True)) == list(weights)
    assert set(geometry.METRICS) <= set(per_seed.columns)
    assert (per_seed[["n_rows", "n_dims", "n_zero"]].to_numpy() == [24, 8, 0]).all()
    row = per_seed.iloc[4]
    direct = geometry.geometry_metrics(weights[(row["objective"], row["seed"])], info, 3)
    for key, value in direct.items():
        assert row[key] == pytest.approx(value)
    assert set(means["objective"]) == {"initial", "CE", "HNS"}
    assert (means["n_seeds"] == 3).all()
    assert set(diffs["metric"]) == set(geometry.METRICS)
    assert (diffs["n_pairs"] == 3).all()


def test_summarize_pairs_by_seed(planted_study):
    _, _, per_seed, _, diffs = planted_study
    twin = diffs.set_index("metric").loc["twin_distance"]
    by_seed = per_seed.pivot(index="seed", columns="objective", values="twin_distance")
    assert twin["diff"] == pytest.approx((by_seed["HNS"] - by_seed["CE"]).mean())
    assert twin["diff_hi"] < 0 and twin["direction"] == "lower"


def test_reading_states_closer_from_the_paired_interval(planted_study):
    _, _, per_seed, means, diffs = planted_study
    result = geometry.reading(per_seed, means, diffs, base_vocab_size=12, n_rare=3)
    assert result.summary["verdicts"]["twin_distance"] == "closer"
    assert "(*i*, *i* + 12)" in result.text and "**closer**" in result.text
    assert "HNS brings closer than CE does: the twins" in result.text
    twin = result.summary["metrics"]["twin_distance"]
    assert set(twin) == {"initial", "CE", "HNS", "hns_minus_ce"}
    assert twin["hns_minus_ce"]["direction"] == "lower"
    assert result.summary["zero_directions"] == {"initial": 0, "CE": 0, "HNS": 0}
    assert set(result.summary["verdicts"]) == set(geometry.METRICS) - set(geometry.NORM_METRICS)
    # with one seed nothing can be told apart
    one = per_seed[per_seed["seed"] == 0]
    single = geometry.reading(one, *geometry.summarize(one), base_vocab_size=12, n_rare=3)
    assert set(single.summary["verdicts"].values()) == {"indistinguishable"}
    assert "(1 seed)" in single.text and "[" not in single.text  # no interval to show


def test_tables_and_notes(planted_study):
    _, _, per_seed, means, diffs = planted_study
    table = geometry.comparison_table(means, diffs, geometry.ISOTROPY_METRICS)
    assert table["metric"].tolist() == [geometry.METRICS[m][0] for m in geometry.ISOTROPY_METRICS]
    assert {"initial", "CE", "HNS", "HNS − CE", "direction"} <= set(table.columns)
    assert "24 × 8" in geometry.isotropy_note(per_seed).replace("WᵀW is 8 × 8", "")
    assert "V = 24 > d + 1 = 9" in probe.probe_note(per_seed)
    wide = per_seed.assign(n_dims=128, n_rows=65)
    assert "at least 63 of its 128 eigenvalues" in geometry.isotropy_note(wide)
    assert "V = 65 ≤ d + 1 = 129" in probe.probe_note(wide)


def test_norm_table_and_probe_points(planted_study):
    weights, info, _, _, _ = planted_study
    norms = geometry.norm_table(weights, info)
    assert len(norms) == 3 * 24 and (norms["n_seeds"] == 3).all()
    w = weights[("CE", 0)]
    mean_norm = np.mean([matrix.row_norms(weights[("CE", s)])[5] for s in (0, 1, 2)])
    ce5 = norms[(norms["objective"] == "CE") & (norms["token"] == 5)]["norm"].item()
    assert ce5 == pytest.approx(mean_norm) and len(matrix.row_norms(w)) == 24
    target = probe.unigram_distribution(np.arange(12, 0, -1), bilingual=True, p_low=0.1)
    points = probe.probe_points(weights, info, target, steps=50)
    assert len(points) == 9 * 24
    for _, part in points.groupby(["objective", "seed"]):
        assert part["f"].sum() == pytest.approx(1.0) and part["f_hat"].sum() == pytest.approx(1.0)


def test_model_weights_reads_final_and_initial_matrices(tiny_corpus):
    from types import SimpleNamespace

    from selfish_lib.engine.training import TrainConfig, initial_model

    base = dict(n_layer=1, n_head=1, n_embd=8, block_size=8, bilingual=True, p_low=0.02)
    base["data_sha256"] = tiny_corpus.sha256
    n = tiny_corpus.vocab_size
    runs = {}
    for objective, layout in (("CE", float("inf")), ("HNS", 2.0)):
        config = TrainConfig.flat(**base, layout=layout, seed=4)
        trained = initial_model(config, n)
        with torch.no_grad():
            trained.embedding.add_(1.0 if objective == "HNS" else 0.5)
        runs[(objective, 4)] = SimpleNamespace(config=config, model=lambda m=trained: m)
    weights = geometry.model_weights(runs, n)
    assert list(weights) == [("initial", 4), ("CE", 4), ("HNS", 4)]
    start = initial_model(runs[("CE", 4)].config, n).embedding.detach().double().numpy()
    assert np.array_equal(weights[("initial", 4)], start)
    assert np.allclose(weights[("HNS", 4)] - start, 1.0)
    assert weights[("CE", 4)].shape == (2 * n, 8)


# --- charts ----------------------------------------------------------------------------------


def _units(spec: dict) -> list[dict]:
    """Every unit spec (with a mark) inside a composed spec."""
    if "mark" in spec:
        return [spec]
    out = []
    for key in ("layer", "hconcat", "vconcat", "concat"):
        for part in spec.get(key, []):
            out += _units(part)
    if "spec" in spec:
        out += _units(spec["spec"])
    return out


def test_projection_chart_shares_axes_marks_twins_rare_symbols_and_tooltips():
    from selfish_lib.report import charts

    weights = geometry.for_seed(planted_weights(n_base=10, d=6, seeds=(0,)), 0)
    points = projection.projection_table(weights, bilingual_info(range(1, 11)), perplexity=5)
    spec = charts.chart_spec(charts.embedding_projections(points, n_rare=5))
    assert len(spec["vconcat"]) == 2 and all(len(r["hconcat"]) == 2 for r in spec["vconcat"])
    for row, method in zip(spec["vconcat"], ("PCA", "t-SNE"), strict=True):
        domains = [
            (u["encoding"]["x"]["scale"]["domain"], u["encoding"]["y"]["scale"]["domain"])
            for u in _units(row)
        ]
        assert all(d == domains[0] for d in domains)  # one domain for the whole row
        (x0, x1), (y0, y1) = domains[0]
        part = points[points["method"] == method]
        assert x0 <= part["x"].min() and part["x"].max() <= x1
        assert y0 <= part["y"].min() and part["y"].max() <= y1
        for panel in row["hconcat"]:  # one unit is as long on both axes
            assert (x1 - x0) / panel["width"] == pytest.approx((y1 - y0) / panel["height"], 0.01)
    units = _units(spec)
    lines = [u for u in units if u["mark"]["type"] == "line"]
    assert lines and all(u["encoding"]["detail"]["field"] == "base_token" for u in lines)
    dots = [u for u in units if u["mark"]["type"] == "point"]
    for u in dots:
        assert u["encoding"]["color"]["field"] == "language"
        assert u["encoding"]["shape"]["field"] == "kind"
        fields = {t["field"] for t in u["encoding"]["tooltip"]}
        assert {"display", "rank", "language"} <= fields


def test_other_geometry_charts_build(planted_study):
    from selfish_lib.report import charts

    weights, info, _, means, _ = planted_study
    norms = charts.chart_spec(charts.norms_by_rank(geometry.norm_table(weights, info)))
    assert norms["facet"]["column"]["field"] == "objective"
    (rows,) = norms["datasets"].values()
    assert {r["objective"] for r in rows} == {"CE", "HNS"}  # initial left out by default
    diffs = planted_study[4]
    forest = charts.chart_spec(charts.paired_differences(diffs))
    assert forest["resolve"]["scale"]["x"] == "independent"
    (rows,) = forest["datasets"].values()
    assert len(rows) == len(geometry.METRICS)
    overview = charts.chart_spec(charts.metric_comparison(means))
    assert overview["resolve"]["scale"]["x"] == "independent"
    target = probe.unigram_distribution(np.arange(12, 0, -1), bilingual=True, p_low=0.1)
    scatter = charts.chart_spec(
        charts.unigram_probe_scatter(probe.probe_points(weights, info, target, steps=20))
    )
    assert len(scatter["hconcat"]) == 3
    for unit in _units(scatter):
        assert unit["encoding"]["x"]["scale"]["type"] == "log"
        assert unit["encoding"]["y"]["scale"]["type"] == "log"
