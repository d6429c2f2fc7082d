"""The subword tokenizer: BPE over the corpus's characters, learnt from the training
split only, deterministic, stored with its runs; frequency groups that scale with V."""

from __future__ import annotations

import json
import math
import random

import pandas as pd
import pytest
import torch

from selfish_lib.engine import runs
from selfish_lib.engine.corpus import (
    BlockSampler,
    Corpus,
    SubwordTokenizer,
    check_tokenizer,
    group_size_for,
    rank_group,
    subword_size,
)
from selfish_lib.engine.ensemble import ensemble_groups
from selfish_lib.engine.profiles import get_profile
from selfish_lib.engine.runs import config_hash, get_or_train, sha256_of
from selfish_lib.engine.training import TrainConfig
from selfish_lib.engine.validation import ParameterError


def words_text(n_words: int = 4000, seed: int = 0, vocabulary=None) -> str:
    """Lines of words drawn with Zipf-like weights from a small made-up vocabulary."""
    rng = random.Random(seed)
    vocabulary = vocabulary or ["the", "and", "thou", "lord", "king", "night", "sweet",
                                "death", "love", "crown", "sword", "here"]  # fmt: skip
    weights = [1.0 / (k + 1) for k in range(len(vocabulary))]
    words = rng.choices(vocabulary, weights=weights, k=n_words)
    return "\n".join(" ".join(words[i : i + 8]) for i in range(0, n_words, 8)) + "\n"


def test_tokenizer_names_are_validated_where_they_enter():
    assert check_tokenizer("tokenizer", "char") == "char"
    assert check_tokenizer("tokenizer", "bpe-01024") == "bpe-1024"
    assert subword_size("bpe-256") == 256 and subword_size("char") is None
    for bad in ("bpe", "bpe-1", "bpe-70000", "BPE-256", "bytes", 256, None):
        with pytest.raises(ParameterError, match="tokenizer"):
            check_tokenizer("tokenizer", bad)
    with pytest.raises(ParameterError, match="invalid tokenizer='bpe-x'"):
        TrainConfig(tokenizer="bpe-x")
    assert TrainConfig(tokenizer="bpe-0300").tokenizer == "bpe-300"


def test_bpe_is_deterministic_and_round_trips(corpus):
    first = corpus.with_tokenizer("bpe-1024")
    again = Corpus.from_text(corpus.text, tokenizer="bpe-1024")  # trained afresh
    assert first is not again
    assert again.tokenizer.sha256 == first.tokenizer.sha256
    assert torch.equal(again.train, first.train) and torch.equal(again.val, first.val)
    assert first.vocab_size == 1024
    # every token is a string of the corpus's characters, each character is a token
    assert set("".join(first.tokenizer.symbols)) <= set(corpus.tokenizer.symbols)
    assert set(corpus.tokenizer.symbols) <= set(first.tokenizer.symbols)
    # the split is made on the text: the subword splits decode to the character splits
    n_train = len(corpus.train)
    assert first.tokenizer.decode(first.train.tolist()) == corpus.text[:n_train]
    assert first.tokenizer.decode(first.val.tolist()) == corpus.text[n_train:]
    assert len(first.train) < 0.6 * n_train  # merges shorten the text


def test_bpe_never_sees_the_validation_text():
    train_text = words_text(3000, seed=1)
    # the validation tail repeats a word the training text never has
    val_text = "\n".join(["zyzzyva quokka zyzzyva"] * 400) + "\n"
    text = train_text + val_text
    val_fraction = len(val_text) / len(text)
    corpus = Corpus.from_text(text, val_fraction=val_fraction, tokenizer="bpe-60")
    seen = corpus.tokenizer.decode(corpus.train.tolist())
    assert train_text.startswith(seen) and len(seen) >= len(train_text) - 1  # float rounding
    assert not any(len(s) > 1 and set(s) & set("zyq") for s in corpus.tokenizer.symbols)
    alphabet = tuple(sorted(set(text)))
    alone = SubwordTokenizer.train(seen, alphabet, 60)
    assert alone.sha256 == corpus.tokenizer.sha256
    # the unseen word still encodes, character by character
    assert corpus.tokenizer.decode(corpus.tokenizer.encode("zyzzyva")) == "zyzzyva"


def test_bad_vocabulary_sizes_fail_before_any_work(corpus):
    with pytest.raises(ParameterError, match=r"bpe-50.*at least 65"):
        corpus.with_tokenizer("bpe-50")
    with pytest.raises(ParameterError, match=r"bpe-20000.*at most \d+ subwords"):
        corpus.with_tokenizer("bpe-20000")
    with pytest.raises(ValueError, match="not in the vocabulary"):
        corpus.with_tokenizer("bpe-256").tokenizer.encode("naïve")


def test_bilingual_shift_at_1024_maps_to_the_second_block_of_ids(corpus):
    sub = corpus.with_tokenizer("bpe-1024")
    V = sub.vocab_size
    low = BlockSampler(sub.train, 64, 16, seed=0, vocab_size=V, low_only=True)
    x, y = low.sample()
    assert x.min() >= V and x.max() < 2 * V and y.min() >= V and y.max() < 2 * V
    mixed = BlockSampler(sub.train, 64, 256, seed=0, vocab_size=V, p_low=0.5)
    x, _ = mixed.sample()
    in_low = x >= V
    assert in_low.all(1).logical_or((~in_low).all(1)).all()  # a block is in one language
    assert 0 < in_low.all(1).float().mean() < 1
    assert sub.tokenizer.decode(x[in_low.all(1)][0].tolist()) == sub.tokenizer.decode(
        (x[in_low.all(1)][0] - V).tolist()
    )
    info = sub.token_info(bilingual=True)
    assert info["token"].tolist() == list(range(2 * V))
    low_rows = info[info["language"] == "low"]
    assert (low_rows["token"] - low_rows["base_token"] == V).all()


@pytest.mark.parametrize("V", [12, 65, 100, 101, 256, 1024, 4096])
def test_quantile_groups_partition_the_vocabulary(V):
    """Ranks 1..V in groups of ``group_size_for(V)``: every rank in exactly one group,
    the groups contiguous and in order; groups of ten up to 100 symbols, ten above."""
    per = group_size_for(V)
    labels = [rank_group(r, per, n_ranks=V) for r in range(1, V + 1)]
    groups = list(dict.fromkeys(labels))
    bounds = [tuple(int(b) for b in g.split("-")) for g in groups]
    assert bounds[0][0] == 1 and bounds[-1][1] == V
    assert all(hi + 1 == lo for (_, hi), (lo, _) in zip(bounds, bounds[1:], strict=False))
    assert sum(hi - lo + 1 for lo, hi in bounds) == V
    if V <= 100:
        assert per == 10
    else:
        assert len(groups) == 10 and per == -(-V // 10)


def test_characters_keep_their_groups_of_ten(corpus):
    groups = corpus.frequencies["group"].unique().tolist()
    assert groups == ["1-10", "11-20", "21-30", "31-40", "41-50", "51-60", "61-65"]
    deciles = corpus.with_tokenizer("bpe-1024").frequencies
    assert deciles.groupby("group")["token"].count().sort_values().tolist() == [97] + [103] * 9
    assert deciles["token"].nunique() == 1024  # each subword in one group
    counts = deciles.groupby("group", sort=False)["count"].sum()
    assert counts.is_monotonic_decreasing  # the groups go from frequent to rare


def test_subword_runs_store_their_tokenizer_and_a_stale_one_is_retrained(corpus, results_dir):
    profile = get_profile("smoke")
    config = profile.subword_config("single", profile.config().objective, 128, seed=0)
    config = config.replace(max_steps=4, eval_interval=4, n_layer=1, n_embd=16)
    assert config.tokenizer == "bpe-128" and "bpe-128" in config.label
    assert config_hash(config) != config_hash(config.replace(tokenizer="bpe-129"))
    assert config_hash(config) != config_hash(config.replace(tokenizer="char"))
    run = get_or_train(config, corpus=corpus, results_dir=results_dir, progress=False)
    assert run.model().vocab_size == 128
    stored = run.tokenizer()
    assert stored.sha256 == corpus.with_tokenizer("bpe-128").tokenizer.sha256
    assert stored.encode("Romeo") == corpus.with_tokenizer("bpe-128").tokenizer.encode("Romeo")
    manifest = json.loads((run.path / runs.MANIFEST).read_text())
    assert runs.TOKENIZER in manifest["files"]

    # a tokenizer that is not the one the corpus trains now (the manifest rewritten to
    # match, so that only the tokenizer check can tell): set aside, trained again
    other = corpus.with_tokenizer("bpe-129").tokenizer.serialized
    (run.path / runs.TOKENIZER).write_text(other, encoding="utf-8")
    manifest["files"][runs.TOKENIZER] = {
        "size": (run.path / runs.TOKENIZER).stat().st_size,
        "sha256": sha256_of(run.path / runs.TOKENIZER),
    }
    (run.path / runs.MANIFEST).write_text(json.dumps(manifest))
    assert runs.stale_tokenizer(runs.Run.load(run.path), corpus) is not None
    again = get_or_train(config, corpus=corpus, results_dir=results_dir, progress=False)
    assert again.trained_now
    assert sha256_of(again.path / runs.TOKENIZER) == stored.sha256
    assert any((results_dir / "runs" / runs.CORRUPT_DIR).iterdir())


def test_runs_of_different_tokenizers_never_share_an_ensemble():
    profile = get_profile("smoke")
    objective = profile.config().objective
    configs = [profile.config("single", objective, seed=0),
               profile.subword_config("single", objective, 128, seed=1),
               profile.subword_config("single", objective, 128, seed=2),
               profile.subword_config("single", objective, 256, seed=3)]  # fmt: skip
    groups = ensemble_groups(configs, 4)
    assert sorted(len(g) for g in groups) == [1, 1, 2]
    assert {c.tokenizer for c in groups[1]} == {"bpe-128"}


def test_bad_sizes_parameter_fails_in_the_notebooks_parameters(corpus):
    from selfish_lib.report.parameters import validate

    with pytest.raises(ParameterError, match=r"invalid sizes=\[256, 50\].*50 is not.*at least 65"):
        validate("08_subword_scale", {"sizes": [256, 50]})
    for bad in ([], [256, 256], "256", [2.5]):
        with pytest.raises(ParameterError, match="sizes"):
            validate("08_subword_scale", {"sizes": bad})
    assert validate("08_subword_scale", {"sizes": [1024, 256]})["sizes"] == (256, 1024)


def test_tokenizer_table_counts_what_each_vocabulary_makes_of_the_text(corpus):
    from selfish_lib.study import subword

    table = subword.tokenizer_table(corpus, [256, 1024]).set_index("tokenizer")
    assert table.loc["char", "characters per token"] == 1.0
    assert table.loc["char", "rarest group"] == "61-65"
    for size in (256, 1024):
        sub = corpus.with_tokenizer(f"bpe-{size}")
        row = table.loc[f"bpe-{size}"]
        assert row["training tokens"] == len(sub.train) and row["V"] == size
        assert row["never in training"] == int((sub.frequencies["count"] == 0).sum())
        rarest = sub.frequencies[sub.frequencies["rank"] > size - size // 10 - 1]
        assert row["rarest group's share of tokens"] <= rarest["share"].sum() + 1e-12
    assert (
        table.loc["bpe-1024", "characters per token"] > table.loc["bpe-256", "characters per token"]
    )


def test_deciles_number_the_groups_in_rank_order(corpus):
    from selfish_lib.study import subword

    info = subword.decile_info(corpus.with_tokenizer("bpe-256").token_info(bilingual=True))
    assert sorted(info["decile"].unique()) == list(range(1, 11))
    first = info.groupby("decile")["rank"].min()
    assert first.is_monotonic_increasing and first.iloc[0] == 1
    assert (info.groupby("base_token")["decile"].nunique() == 1).all()  # twins share a decile


def _claim_frames(share_ce, loss_ce, loss_hns, top1_ce, top1_hns, sizes=(256, 1024)):
    """Hand-made per-seed frames in the shapes subword_claims reads."""
    shares, single, both = [], [], []
    for size in sizes:
        for seed in (0, 1, 2):
            for decile in (1, 10):
                value = share_ce[size][seed] if decile == 10 else 0.2
                shares.append(
                    {
                        "V": size,
                        "experiment": "CE",
                        "language": "high",
                        "decile": decile,
                        "seed": seed,
                        "share_nontarget": value,
                    }
                )
            for arm, loss in (("CE", loss_ce), ("HNS", loss_hns)):
                single.append(
                    {
                        "V": size,
                        "experiment": arm,
                        "seed": seed,
                        "scope": "deciles 9-10",
                        "loss": loss[seed],
                        # the deciles' tokens spell 2.5 characters each, in every run
                        "loss_per_char": loss[seed] / 2.5,
                    }
                )
            for arm, top1 in (("CE", top1_ce), ("HNS", top1_hns)):
                both.append(
                    {"V": size, "experiment": arm, "seed": seed, "scope": "low", "top1": top1[seed]}
                )
    return pd.DataFrame(shares), pd.DataFrame(single), pd.DataFrame(both)


def test_subword_claims_follow_the_intervals_of_hand_made_numbers():
    from selfish_lib.study import subword

    frames = _claim_frames(
        share_ce={256: [0.70, 0.72, 0.71], 1024: [0.80, 0.83, 0.81]},
        loss_ce=[5.0, 5.1, 5.2], loss_hns=[4.0, 4.2, 4.1],  # HNS lower: S2 supported
        top1_ce=[0.30, 0.31, 0.29], top1_hns=[0.20, 0.22, 0.21],  # HNS lower: S3 contradicted
    )  # fmt: skip
    table = subword.subword_claims(*frames)
    table = table[table["primary"]]
    # one id per claim (S3 is listed so in the primary family), one row per V
    assert set(table["claim"]) == {"S1", "S2", "S3", "S4"}
    assert table.groupby("claim").size().to_dict() == {"S1": 2, "S2": 2, "S3": 2, "S4": 1}
    assert table[table["claim"] == "S3"]["family"].eq("primary").all()
    table = table.set_index(["claim", "scope"])
    assert table.loc[("S1", "rarest decile, V = 256"), "verdict"] == "supported"
    assert table.loc[("S1", "rarest decile, V = 256"), "diff"] == pytest.approx(0.71 - 0.5)
    assert table.loc[("S2", "deciles 9-10, V = 1024"), "verdict"] == "supported"
    assert table.loc[("S2", "deciles 9-10, V = 1024"), "diff"] == pytest.approx(1.0)
    assert table.loc[("S3", "low, V = 256"), "verdict"] == "contradicted"
    assert table.loc[("S4", "rarest decile"), "verdict"] == "supported"  # 0.81 against 0.71
    assert table.loc[("S4", "rarest decile"), "diff"] == pytest.approx(0.81333333 - 0.71)
    every = subword.subword_claims(*frames)
    assert every["definition"].str.strip().str.len().gt(0).all()  # never empty (S3 was)
    assert every[every["claim"].str.startswith("S3")]["definition"].str.contains("top-1").all()
    # S2 per character stands beside it: the same verdict, the difference over 2.5
    s2 = every[every["scope"] == "deciles 9-10, V = 1024"].set_index("metric")
    assert s2["primary"].to_dict() == {"loss": True, "loss_per_char": False}
    assert s2.loc["loss_per_char", "verdict"] == s2.loc["loss", "verdict"] == "supported"
    assert s2.loc["loss_per_char", "diff"] == pytest.approx(1.0 / 2.5)
    assert "per character" in s2.loc["loss_per_char", "definition"]
    noisy = _claim_frames(
        share_ce={256: [0.2, 0.9, 0.5], 1024: [0.9, 0.1, 0.5]},
        loss_ce=[5.0, 4.0, 4.5], loss_hns=[4.0, 5.0, 4.5],
        top1_ce=[0.30, 0.31, 0.29], top1_hns=[0.30, 0.31, 0.29],
    )  # fmt: skip
    assert set(subword.subword_claims(*noisy)["verdict"]) == {"inconclusive"}
    # the update's share stands beside S1 when the frames have it
    with_update = frames[0].assign(update_share_nontarget=0.9)
    s1 = subword.subword_claims(with_update, frames[1], frames[2])
    s1 = s1[s1["scope"] == "rarest decile, V = 256"]
    assert s1["primary"].tolist() == [True, False]
    assert s1["verdict"].tolist() == ["supported", "supported"]
    assert s1["diff"].iloc[1] == pytest.approx(0.4)
    s4 = subword.subword_claims(with_update, frames[1], frames[2])
    assert s4[s4["claim"] == "S4"]["primary"].tolist() == [True, False]
    empty = pd.DataFrame()
    assert subword.subword_claims(empty, empty, empty).empty


# --- the loss per character: one unit across vocabularies --------------------------------


def _sums_of_positions(targets, losses, n_tokens):
    """Per-token sums (token, count, loss_sum) of hand-listed positions."""
    frame = pd.DataFrame({"token": targets, "loss": losses})
    summed = (
        frame.groupby("token")["loss"].agg(["count", "sum"]).rename(columns={"sum": "loss_sum"})
    )
    summed = summed.reindex(range(n_tokens), fill_value=0).rename_axis("token").reset_index()
    return summed.assign(count=summed["count"].astype(int))


def test_loss_per_character_against_the_characters_counted_by_hand():
    from selfish_lib.study import subword

    symbols = ["a", "bc", "def", "g"]  # one, two, three and one characters
    info = pd.DataFrame({"token": range(4), "symbol": symbols, "kind": ["x", "y", "y", "x"]})
    targets = [0, 1, 0, 2, 1]  # the text a|bc|a|def|bc: 1 + 2 + 1 + 3 + 2 = 9 characters
    losses = [0.5, 2.0, 0.25, 3.0, 1.5]
    sums = _sums_of_positions(targets, losses, 4)
    text = "".join(symbols[t] for t in targets)
    assert len(text) == 9
    overall = subword.per_character(sums, info)
    assert overall["characters"].item() == 9
    assert overall["loss_per_char"].item() == pytest.approx(sum(losses) / len(text))
    by_kind = subword.per_character(sums, info, by=["kind"]).set_index("kind")
    # kind x: 'a' twice (2 characters, loss 0.75); kind y: bc, def, bc (7, loss 6.5)
    assert by_kind.loc["x", "characters"] == 2 and by_kind.loc["y", "characters"] == 7
    assert by_kind.loc["x", "loss_per_char"] == pytest.approx(0.75 / 2)
    assert by_kind.loc["y", "loss_per_char"] == pytest.approx(6.5 / 7)
    # a token in two groups counts in each (a scope table has one row per token and scope)
    both = pd.concat([info.assign(scope="all"), info[info["kind"] == "y"].assign(scope="y")])
    scoped = subword.per_character(sums, both, by=["scope"]).set_index("scope")
    assert scoped.loc["all", "loss_per_char"] == pytest.approx(overall["loss_per_char"].item())
    assert scoped.loc["y", "loss_per_char"] == pytest.approx(6.5 / 7)
    # a group with no character has no loss per character, not 0
    empty = subword.per_character(sums.assign(count=0, loss_sum=0.0), info)
    assert empty["loss_per_char"].isna().all()
    with pytest.raises(ValueError, match="without a symbol"):
        subword.per_character(sums, info[info["token"] != 3])


def _tiny_model(vocab_size: int):
    from selfish_lib.engine.model import GPT, ModelConfig

    torch.manual_seed(0)
    config = ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=16)
    return GPT(config, vocab_size).eval()


def test_loss_per_character_of_a_model_equals_its_positions_over_the_decoded_text():
    """A real model on a BPE split: the per-token sums turned into nats per character
    equal every position's loss summed, over the length of the text the targets decode
    to; for the characters the loss per character is the loss per token."""
    from selfish_lib.engine.evaluation import aggregate, evaluate_ids, position_values
    from selfish_lib.study import subword

    text = words_text(3000, seed=3)
    sub = Corpus.from_text(text, tokenizer="bpe-60")
    model = _tiny_model(sub.vocab_size)
    sums = evaluate_ids(model, sub.val)
    positions = position_values(model, sub.val)
    decoded = sub.tokenizer.decode(sub.val[1:].tolist())  # the targets: every id but the first
    got = subword.per_character(sums, sub.token_info())
    assert got["characters"].item() == len(decoded)
    assert got["loss_per_char"].item() == pytest.approx(positions["loss"].sum() / len(decoded))
    assert len(decoded) > 1.5 * len(positions)  # merges: the two units differ here

    chars = Corpus.from_text(text)
    model = _tiny_model(chars.vocab_size)
    sums = evaluate_ids(model, chars.val)
    per_char = subword.per_character(sums, chars.token_info())["loss_per_char"].item()
    assert per_char == pytest.approx(aggregate(sums, chars.token_info(), by=[])["loss"].item())


class _StoredRun:
    """The part of a run the chapter's metrics read: its final validation sums."""

    metrics = runs.Run.metrics
    final_eval = runs.Run.final_eval

    def __init__(self, sums: pd.DataFrame, arm: str, seed: int):
        from types import SimpleNamespace

        self.eval_tokens = sums.assign(step=10)
        self.config = SimpleNamespace(seed=seed, objective=SimpleNamespace(arm=arm))


def _random_sums(n_tokens: int, counts, seed: int) -> pd.DataFrame:
    from selfish_lib.engine.evaluation import SUMS

    gen = torch.Generator().manual_seed(seed)
    frame = pd.DataFrame({"token": range(n_tokens), "count": counts})
    for column in SUMS[1:]:
        frame[column] = torch.rand(n_tokens, generator=gen).double().numpy() * frame["count"]
    return frame


def test_metrics_per_seed_adds_the_loss_per_character_to_every_scope(corpus):
    from selfish_lib.study import subword

    sub = corpus.with_tokenizer("bpe-128")
    V = sub.vocab_size
    length = sub.frequencies.sort_values("token")["symbol"].str.len().to_numpy()
    counts = torch.bincount(sub.val[1:], minlength=V).numpy()
    single = {
        (arm, seed): _StoredRun(_random_sums(V, counts, 10 * seed + k), arm, seed)
        for k, arm in enumerate(("CE", "HNS"))
        for seed in (0, 1, 2)
    }
    info = sub.token_info()
    table = subword.metrics_per_seed({V: single}, {V: info}, "single")
    assert {"all text", "decile 1", "deciles 9-10"} <= set(table["scope"])
    for rec in table[table["scope"] == "all text"].to_dict("records"):
        sums = single[(rec["experiment"], rec["seed"])].final_eval()
        assert rec["characters"] == int((counts * length).sum())
        assert rec["loss_per_char"] == pytest.approx(sums["loss_sum"].sum() / rec["characters"])
    # every run of one V predicts the same tokens: per character = per token × tokens /
    # characters, one factor for every run, so HNS − CE keeps its sign and verdict
    tail = table[table["scope"] == "deciles 9-10"]
    factor = tail["count"] / tail["characters"]
    assert factor.nunique() == 1
    assert tail["loss_per_char"].to_numpy() == pytest.approx((tail["loss"] * factor).to_numpy())
    diffs = subword.differences(table)
    row = diffs[(diffs["scope"] == "deciles 9-10")].set_index("metric")
    assert row.loc["loss_per_char", "verdict"] == row.loc["loss", "verdict"]
    assert row.loc["loss_per_char", "diff"] == pytest.approx(
        row.loc["loss", "diff"] * factor.iloc[0]
    )
    assert set(diffs["seeds"]) == {"0-2"}

    both_info = sub.token_info(bilingual=True)
    twice = torch.cat([torch.tensor(counts), torch.tensor(counts)]).numpy()
    pair = {
        (arm, seed): _StoredRun(_random_sums(2 * V, twice, 7 + seed + k), arm, seed)
        for k, arm in enumerate(("CE", "HNS"))
        for seed in (0, 1)
    }
    table = subword.metrics_per_seed({V: pair}, {V: both_info}, "bilingual", p_low=0.25)
    for (arm, seed), run in pair.items():
        rows = table[(table["experiment"] == arm) & (table["seed"] == seed)].set_index("scope")
        sums = run.final_eval()
        text = int((counts * length).sum())
        low = sums[sums["token"] >= V]["loss_sum"].sum() / text  # the twins spell the same
        high = sums[sums["token"] < V]["loss_sum"].sum() / text
        assert rows.loc["low", "loss_per_char"] == pytest.approx(low)
        assert rows.loc["high", "loss_per_char"] == pytest.approx(high)
        assert rows.loc["both", "loss_per_char"] == pytest.approx((low + high) / 2)
        assert rows.loc["mixture", "loss_per_char"] == pytest.approx(0.75 * high + 0.25 * low)


def test_seed_labels_and_the_seeds_a_figure_rests_on():
    from selfish_lib.study import subword

    assert subword.seed_label([1, 0]) == "0-1"
    assert subword.seed_label((0, 1, 2, 5)) == "0-2, 5"
    assert subword.seed_label([3]) == "3" and subword.seed_label([]) == "none"
    frame = pd.DataFrame(
        {"V": [256, 1024, 256, 1024], "scope": ["a", "a", "low", "low"],
         "seeds": ["0-1", "0-1", "0-1", "0"]}
    )  # fmt: skip
    titles = {"a": "all text", "low": "low-resource language"}
    assert subword.seeds_caption(frame[:2], titles) == "seeds 0-1"
    caption = subword.seeds_caption(frame, titles)
    assert "seeds 0-1: all text at V = 256, 1024; low-resource language at V = 256" in caption
    assert "seeds 0: low-resource language at V = 1024" in caption


def test_the_wording_across_sizes_follows_every_interval():
    from selfish_lib.study import subword

    def row(size, lo, hi, verdict):
        return {"V": size, "diff_lo": lo, "diff_hi": hi, "verdict": verdict}

    spans = [row(256, -1.06, 1.53, "indistinguishable"), row(1024, -0.4, 1.1, "indistinguishable")]
    assert subword.across_sizes(spans) == "the interval includes 0 at every V"
    better = [row(256, -0.3, -0.1, "better"), row(1024, -0.2, -0.05, "better")]
    assert subword.across_sizes(better) == "HNS better at every V"
    assert subword.across_sizes(better[:1]) == "HNS better at V = 256"  # one V is not every V
    mixed = [*spans, row(4096, 0.5, 1.8, "worse"), row(128, -0.3, -0.1, "better")]
    words = subword.across_sizes(mixed)
    assert words == ("HNS better at V = 128; HNS worse at V = 4096; "
                     "the interval includes 0 at V = 256, 1024")  # fmt: skip
    assert "every" not in words
    one = [row(256, math.nan, math.nan, "indistinguishable"), better[1]]
    assert subword.across_sizes(one) == ("HNS better at V = 1024; one seed, no interval at V = 256")


def test_the_charts_across_sizes_name_their_unit_interval_and_seeds():
    from selfish_lib.report.charts import subword as charts
    from selfish_lib.study import subword

    rows = []
    for size, seeds, lo, hi in ((256, "0-1", -0.2, 0.1), (1024, "0", math.nan, math.nan)):
        for metric in ("loss_per_char", "top1", "loss"):
            rows.append({"V": size, "scope": "low", "metric": metric, "diff": 0.01,
                         "diff_lo": lo, "diff_hi": hi, "n_pairs": 1 + (seeds == "0-1"),
                         "verdict": "indistinguishable", "seeds": seeds})  # fmt: skip
    diffs = pd.DataFrame(rows)
    spec = charts.effect_by_size(diffs, {"low": "low-resource language"}).to_dict()
    subtitle = " ".join(spec["title"]["subtitle"])
    assert "95% interval" in subtitle and "per character" in subtitle
    assert "seeds 0-1: low-resource language at V = 256" in subtitle
    assert "seeds 0: low-resource language at V = 1024" in subtitle
    assert "a point without a bar rests on one seed" in subtitle
    shown = {r["metric"] for r in spec["datasets"][next(iter(spec["datasets"]))]}
    assert shown == {"loss per character (nats)", "top-1 accuracy"}  # per token: not across V

    levels = pd.DataFrame(
        [{"V": 256, "scope": "low", "experiment": arm, "loss_per_char": 1.5, "loss_per_char_lo":
          1.4, "loss_per_char_hi": 1.6, "loss": 2.7, "loss_lo": 2.6, "loss_hi": 2.8,
          "n_seeds": 2, "seeds": "0-1"} for arm in ("CE", "HNS")]
    )  # fmt: skip
    spec = charts.loss_per_character(levels, {"low": "low-resource language"}).to_dict()
    assert "95% interval over seeds 0-1" in spec["title"]["subtitle"]
    table = subword.loss_table(levels, ["low"])
    assert table.loc[0, "CE per character (nats)"] == "1.5000 [1.4000, 1.6000]"
    assert table.loc[0, "seeds"] == "CE 0-1 / HNS 0-1"
