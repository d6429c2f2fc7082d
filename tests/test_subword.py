"""The subword tokenizer: BPE over the corpus's characters, learnt from the training
split only, deterministic, stored with its runs; frequency groups that scale with V."""

from __future__ import annotations

import json
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
    table = table[table["primary"]].set_index("claim")
    assert set(table.index) == {"S1 (V=256)", "S1 (V=1024)", "S2 (V=256)", "S2 (V=1024)",
                                "S3 (V=256)", "S3 (V=1024)", "S4"}  # fmt: skip
    assert table.loc["S1 (V=256)", "verdict"] == "supported"
    assert table.loc["S1 (V=256)", "diff"] == pytest.approx(0.71 - 0.5)
    assert table.loc["S2 (V=1024)", "verdict"] == "supported"
    assert table.loc["S2 (V=1024)", "diff"] == pytest.approx(1.0)
    assert table.loc["S3 (V=256)", "verdict"] == "contradicted"
    assert table.loc["S4", "verdict"] == "supported"  # 0.81 at 1024 against 0.71 at 256
    assert table.loc["S4", "diff"] == pytest.approx(0.81333333 - 0.71)
    noisy = _claim_frames(
        share_ce={256: [0.2, 0.9, 0.5], 1024: [0.9, 0.1, 0.5]},
        loss_ce=[5.0, 4.0, 4.5], loss_hns=[4.0, 5.0, 4.5],
        top1_ce=[0.30, 0.31, 0.29], top1_hns=[0.30, 0.31, 0.29],
    )  # fmt: skip
    assert set(subword.subword_claims(*noisy)["verdict"]) == {"inconclusive"}
    # the update's share stands beside S1 when the frames have it
    with_update = frames[0].assign(update_share_nontarget=0.9)
    s1 = subword.subword_claims(with_update, frames[1], frames[2])
    s1 = s1[s1["claim"] == "S1 (V=256)"]
    assert s1["primary"].tolist() == [True, False]
    assert s1["verdict"].tolist() == ["supported", "supported"]
    assert s1["diff"].iloc[1] == pytest.approx(0.4)
    s4 = subword.subword_claims(with_update, frames[1], frames[2])
    assert s4[s4["claim"] == "S4"]["primary"].tolist() == [True, False]
    empty = pd.DataFrame()
    assert subword.subword_claims(empty, empty, empty).empty
