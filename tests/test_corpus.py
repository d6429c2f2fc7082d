"""The corpus: where the file comes from, the tokenizer, splits, frequency ranks
and the seeded block sampler with its bilingual shift."""

from __future__ import annotations

import hashlib
import io
import math
import urllib.error

import pytest
import torch

from selfish_lib.engine import corpus as corpus_mod
from selfish_lib.engine.corpus import (
    CORPUS_FILENAME,
    ENV_VAR,
    BlockSampler,
    CharTokenizer,
    CorpusChecksumError,
    CorpusNotFoundError,
    cache_dir,
    resolve_corpus_path,
)

FAKE_TEXT = b"To be, or not to be: that is the question.\n"
FAKE_SHA = hashlib.sha256(FAKE_TEXT).hexdigest()
FAKE_URL = "https://example.invalid/tiny.txt"


# --- resolving the corpus file ------------------------------------------------


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No SELFISH_DATA, an empty cache under tmp_path, and no network at all."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    calls: list[str] = []

    def no_network(url, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(corpus_mod.urllib.request, "urlopen", no_network)
    return calls


def serve(monkeypatch, payload: bytes) -> list[str]:
    """Make urlopen answer every URL with ``payload``; return the list of requested URLs."""
    calls: list[str] = []

    def fake_urlopen(url, *args, **kwargs):
        calls.append(url)
        return io.BytesIO(payload)

    monkeypatch.setattr(corpus_mod.urllib.request, "urlopen", fake_urlopen)
    return calls


def write(path, data: bytes = FAKE_TEXT):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def cached_path():
    return cache_dir() / CORPUS_FILENAME


def test_cache_dir_follows_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "selfish-tokens"


def test_explicit_path_beats_env_cache_and_download(tmp_path, monkeypatch, isolated):
    explicit = write(tmp_path / "explicit.txt")
    monkeypatch.setenv(ENV_VAR, str(write(tmp_path / "env.txt", b"not the corpus")))
    write(cached_path(), b"not the corpus either")
    assert resolve_corpus_path(explicit, expected_sha256=FAKE_SHA) == explicit
    assert isolated == []


def test_explicit_path_accepts_str(tmp_path, isolated):
    explicit = write(tmp_path / "explicit.txt")
    assert resolve_corpus_path(str(explicit), expected_sha256=FAKE_SHA) == explicit


def test_env_var_beats_cache_and_download(tmp_path, monkeypatch, isolated):
    env = write(tmp_path / "env.txt")
    write(cached_path())
    monkeypatch.setenv(ENV_VAR, str(env))
    assert resolve_corpus_path(expected_sha256=FAKE_SHA) == env
    assert isolated == []


def test_env_var_is_verified_not_skipped(tmp_path, monkeypatch, isolated):
    env = write(tmp_path / "env.txt", b"wrong bytes")
    write(cached_path())  # a good cache does not rescue a bad $SELFISH_DATA
    monkeypatch.setenv(ENV_VAR, str(env))
    with pytest.raises(CorpusChecksumError, match=ENV_VAR):
        resolve_corpus_path(expected_sha256=FAKE_SHA)


def test_empty_env_var_counts_as_unset(monkeypatch, isolated):
    cached = write(cached_path())
    monkeypatch.setenv(ENV_VAR, "")
    assert resolve_corpus_path(expected_sha256=FAKE_SHA) == cached


def test_cache_beats_download(isolated):
    cached = write(cached_path())
    assert resolve_corpus_path(url=FAKE_URL, expected_sha256=FAKE_SHA) == cached
    assert isolated == []


def test_bad_cached_file_raises_checksum_error(isolated):
    write(cached_path(), b"corrupted")
    with pytest.raises(CorpusChecksumError, match="cached"):
        resolve_corpus_path(expected_sha256=FAKE_SHA)


def test_download_with_right_bytes_lands_in_cache(monkeypatch, isolated):
    calls = serve(monkeypatch, FAKE_TEXT)
    path = resolve_corpus_path(url=FAKE_URL, expected_sha256=FAKE_SHA)
    assert calls == [FAKE_URL]
    assert path == cached_path()
    assert path.read_bytes() == FAKE_TEXT
    # the temporary download file was renamed, not left beside the corpus
    assert sorted(p.name for p in cache_dir().iterdir()) == [CORPUS_FILENAME]
    # a second call uses the cache without downloading again
    assert resolve_corpus_path(url=FAKE_URL, expected_sha256=FAKE_SHA) == path
    assert calls == [FAKE_URL]


def test_download_with_wrong_bytes_raises_and_leaves_no_file(monkeypatch, isolated):
    calls = serve(monkeypatch, b"a page that is not the corpus")
    with pytest.raises(CorpusChecksumError) as info:
        resolve_corpus_path(url=FAKE_URL, expected_sha256=FAKE_SHA)
    assert FAKE_URL in str(info.value)
    assert FAKE_SHA in str(info.value)
    assert calls == [FAKE_URL]
    assert not cached_path().exists()
    leftovers = list(cache_dir().iterdir()) if cache_dir().exists() else []
    assert leftovers == []


def test_offline_and_uncached_raises_not_found_with_instructions(isolated):
    with pytest.raises(CorpusNotFoundError) as info:
        resolve_corpus_path(url=FAKE_URL, expected_sha256=FAKE_SHA)
    msg = str(info.value)
    assert ENV_VAR in msg
    assert str(cached_path()) in msg
    assert FAKE_URL in msg
    assert isolated == [FAKE_URL]
    assert not cached_path().exists()


def test_download_disabled_raises_not_found_without_network(isolated):
    with pytest.raises(CorpusNotFoundError, match="downloading is disabled") as info:
        resolve_corpus_path(download=False, expected_sha256=FAKE_SHA)
    assert ENV_VAR in str(info.value)
    assert isolated == []


def test_not_found_is_a_file_not_found_error_and_checksum_a_value_error():
    assert issubclass(CorpusNotFoundError, FileNotFoundError)
    assert issubclass(CorpusChecksumError, ValueError)


def test_explicit_path_with_wrong_sha_names_the_path(tmp_path, isolated):
    bad = write(tmp_path / "impostor.txt", b"Not Shakespeare at all.\n")
    with pytest.raises(CorpusChecksumError) as info:
        resolve_corpus_path(bad)
    msg = str(info.value)
    assert str(bad) in msg
    assert corpus_mod.CORPUS_SHA256 in msg
    assert hashlib.sha256(b"Not Shakespeare at all.\n").hexdigest() in msg


def test_missing_explicit_path_raises_not_found(tmp_path, isolated):
    missing = tmp_path / "nowhere.txt"
    with pytest.raises(CorpusNotFoundError, match="nowhere.txt"):
        resolve_corpus_path(missing, expected_sha256=FAKE_SHA)
    assert isolated == []


def test_explicit_directory_raises_not_found(tmp_path, isolated):
    with pytest.raises(CorpusNotFoundError):
        resolve_corpus_path(tmp_path, expected_sha256=FAKE_SHA)


# --- the real corpus ----------------------------------------------------------


def test_real_corpus_has_65_symbols(corpus):
    assert corpus.vocab_size == 65
    assert len(corpus.tokenizer.symbols) == 65
    assert list(corpus.tokenizer.symbols) == sorted(set(corpus.text))
    assert corpus.sha256 == corpus_mod.CORPUS_SHA256


def test_encode_decode_round_trip_of_full_text(corpus):
    ids = corpus.tokenizer.encode(corpus.text)
    assert len(ids) == len(corpus.text)
    assert min(ids) == 0 and max(ids) == 64
    assert corpus.tokenizer.decode(ids) == corpus.text


def test_low_resource_encoding_shifts_by_vocab_size(corpus):
    tok, text = corpus.tokenizer, corpus.text
    high = torch.tensor(tok.encode(text))
    low = torch.tensor(tok.encode(text, low_resource=True))
    assert torch.equal(low, high + 65)
    assert int(low.min()) >= 65 and int(low.max()) < 130
    assert tok.decode(low.tolist()) == text
    assert tok.decode(low[:2000]) == text[:2000]  # tensors decode too


def test_encode_rejects_unknown_characters(corpus):
    with pytest.raises(ValueError, match="'~'"):
        corpus.tokenizer.encode("hello~")


def test_tokenizer_rejects_empty_text():
    with pytest.raises(ValueError, match="text"):
        CharTokenizer.from_text("")


def test_display_makes_whitespace_visible(corpus):
    tok = corpus.tokenizer
    space, newline = tok.encode(" \n")
    assert tok.display(space) == "␣"
    assert tok.display(newline) == "⏎"
    assert tok.display(space + 65) == "␣"
    assert tok.display(tok.encode("A")[0]) == "A"


def test_split_is_90_10_and_concatenates_to_the_whole(corpus):
    n = len(corpus.text)
    assert len(corpus.train) == int(0.9 * n)
    assert len(corpus.train) + len(corpus.val) == n
    whole = torch.tensor(corpus.tokenizer.encode(corpus.text), dtype=torch.long)
    assert torch.equal(torch.cat([corpus.train, corpus.val]), whole)
    assert corpus.train.dtype == torch.long


def test_split_ids_rejects_bad_fraction():
    ids = torch.arange(10)
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="val_fraction"):
            corpus_mod.split_ids(ids, bad)


def test_frequency_table_of_real_corpus(corpus):
    df = corpus.frequencies
    assert len(df) == 65
    assert sorted(df["rank"]) == list(range(1, 66))
    assert df["token"].is_unique and sorted(df["token"]) == list(range(65))
    counts = df["count"].tolist()
    assert counts == sorted(counts, reverse=True)
    assert sum(counts) == len(corpus.train)
    assert math.isclose(df["share"].sum(), 1.0)
    # counts agree with an independent bincount of the training split
    expected = torch.bincount(corpus.train, minlength=65)
    for token, count in zip(df["token"], df["count"], strict=True):
        assert expected[token].item() == count
    # symbol / display columns describe the token of each row
    for token, symbol in zip(df["token"], df["symbol"], strict=True):
        assert corpus.tokenizer.symbols[token] == symbol
    # space is the most frequent character of Tiny Shakespeare
    top = df.iloc[0]
    assert top["symbol"] == " " and top["rank"] == 1 and top["display"] == "␣"


def test_frequency_groups_of_real_corpus(corpus):
    df = corpus.frequencies
    groups = df.groupby("group", sort=False)["rank"].agg(["min", "max", "size"])
    expected = ["1-10", "11-20", "21-30", "31-40", "41-50", "51-60", "61-65"]
    assert list(groups.index) == expected
    assert groups["size"].tolist() == [10, 10, 10, 10, 10, 10, 5]
    for label, row in groups.iterrows():
        lo, hi = (int(x) for x in label.split("-"))
        assert (row["min"], row["max"]) == (lo, hi)


def test_frequency_ties_are_broken_by_token_id():
    tok = CharTokenizer.from_text("abc")
    ids = torch.tensor([2, 2, 1, 0])  # a and b tie with one count each
    df = corpus_mod.frequency_table(ids, tok)
    assert df["symbol"].tolist() == ["c", "a", "b"]
    assert df["rank"].tolist() == [1, 2, 3]


def test_frequency_table_folds_the_second_alphabet():
    tok = CharTokenizer.from_text("ab")
    df = corpus_mod.frequency_table(torch.tensor([0, 2, 3, 3, 3]), tok)
    assert dict(zip(df["symbol"], df["count"], strict=True)) == {"a": 2, "b": 3}


@pytest.mark.parametrize(
    ("rank", "label"),
    [(1, "1-10"), (10, "1-10"), (11, "11-20"), (13, "11-20"), (61, "61-70")],
)
def test_rank_group_labels(rank, label):
    assert corpus_mod.rank_group(rank) == label


def test_rank_group_is_capped_by_n_ranks():
    assert corpus_mod.rank_group(63, n_ranks=65) == "61-65"
    assert corpus_mod.rank_group(3, group_size=5, n_ranks=4) == "1-4"


def test_ranks_agree_with_frequency_table(corpus):
    ranks = corpus.ranks()
    assert ranks.shape == (65,)
    for token, rank in zip(corpus.frequencies["token"], corpus.frequencies["rank"], strict=True):
        assert ranks[token].item() == rank
    assert ranks[corpus.tokenizer.encode(" ")[0]].item() == 1


def test_token_info_bilingual_twins(corpus):
    info = corpus.token_info(bilingual=True)
    assert len(info) == 130
    assert info["token"].tolist() == list(range(130))
    high = info.iloc[:65].reset_index(drop=True)
    low = info.iloc[65:].reset_index(drop=True)
    assert (high["language"] == "high").all() and (low["language"] == "low").all()
    assert (low["token"] == high["token"] + 65).all()
    assert (low["base_token"] == high["token"]).all()
    for col in ("rank", "group", "symbol", "display", "train_count"):
        assert low[col].tolist() == high[col].tolist(), col
    ranks = corpus.ranks()
    assert high["rank"].tolist() == ranks.tolist()


def test_token_info_monolingual(corpus):
    info = corpus.token_info()
    assert len(info) == 65
    assert set(info["language"]) == {"high"}
    assert info["train_count"].sum() == len(corpus.train)


def test_synthetic_corpus_from_text(tiny_corpus):
    assert tiny_corpus.vocab_size == 12
    assert tiny_corpus.frequencies["count"].sum() == len(tiny_corpus.train)
    assert len(tiny_corpus.train) == int(0.9 * len(tiny_corpus.text))


# --- the block sampler --------------------------------------------------------


def make_sampler(data, seed=0, p_low=0.0, low_only=False, block_size=16, batch_size=8, vocab=12):
    return BlockSampler(data, block_size, batch_size, seed, vocab, p_low=p_low, low_only=low_only)


def test_sampler_same_seed_same_batches(tiny_corpus):
    a, b = make_sampler(tiny_corpus.train, seed=3), make_sampler(tiny_corpus.train, seed=3)
    for _ in range(5):
        (xa, ya), (xb, yb) = a.sample(), b.sample()
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_sampler_different_seed_different_batches(tiny_corpus):
    a, b = make_sampler(tiny_corpus.train, seed=0), make_sampler(tiny_corpus.train, seed=1)
    assert not torch.equal(a.sample()[0], b.sample()[0])


def test_sampler_shapes_and_dtype(tiny_corpus):
    x, y = make_sampler(tiny_corpus.train, block_size=16, batch_size=8).sample()
    assert x.shape == y.shape == (8, 16)
    assert x.dtype == y.dtype == torch.long


def test_sampler_y_is_x_shifted_and_comes_from_the_data(tiny_corpus):
    data = tiny_corpus.train
    T = 16
    windows = data.unfold(0, T + 1, 1)  # every (T + 1)-long window of the data
    sampler = make_sampler(data, seed=5, block_size=T)
    for _ in range(3):
        x, y = sampler.sample()
        assert torch.equal(y[:, :-1], x[:, 1:])
        for row_x, row_y in zip(x, y, strict=True):
            block = torch.cat([row_x, row_y[-1:]])
            assert (windows == block).all(dim=1).any()


def test_sampler_p_low_zero_never_shifts(tiny_corpus):
    sampler = make_sampler(tiny_corpus.train, p_low=0.0)
    for _ in range(20):
        x, y = sampler.sample()
        assert int(x.max()) < 12 and int(y.max()) < 12


def test_sampler_low_only_shifts_every_block(tiny_corpus):
    sampler = make_sampler(tiny_corpus.train, low_only=True)
    for _ in range(10):
        x, y = sampler.sample()
        assert int(x.min()) >= 12 and int(y.min()) >= 12
        assert int(x.max()) < 24 and int(y.max()) < 24


def test_sampler_p_low_one_shifts_every_block(tiny_corpus):
    x, y = make_sampler(tiny_corpus.train, p_low=1.0).sample()
    assert int(x.min()) >= 12 and int(y.min()) >= 12


def test_sampler_p_low_fraction_is_binomial_and_blocks_are_whole(tiny_corpus):
    p, n_batches, batch_size, V = 0.02, 200, 64, 12
    sampler = make_sampler(tiny_corpus.train, seed=11, p_low=p, batch_size=batch_size)
    shifted = 0
    for _ in range(n_batches):
        x, y = sampler.sample()
        xs, ys = x >= V, y >= V
        # a block is wholly shifted or not at all, and x and y agree
        assert torch.equal(xs.all(dim=1), xs.any(dim=1))
        assert torch.equal(ys.all(dim=1), ys.any(dim=1))
        assert torch.equal(xs[:, 0], ys[:, 0])
        shifted += int(xs[:, 0].sum())
    n = n_batches * batch_size
    sd = math.sqrt(n * p * (1 - p))
    assert abs(shifted - n * p) < 4 * sd
    assert shifted > 0


def test_sampler_offsets_do_not_depend_on_p_low(tiny_corpus):
    mono = make_sampler(tiny_corpus.train, seed=7, p_low=0.0)
    bi = make_sampler(tiny_corpus.train, seed=7, p_low=0.5)
    any_shifted = False
    for _ in range(10):
        (xm, ym), (xb, yb) = mono.sample(), bi.sample()
        assert torch.equal(xm, xb % 12) and torch.equal(ym, yb % 12)
        any_shifted |= bool((xb >= 12).any())
    assert any_shifted


def test_sampler_state_dict_resumes_the_exact_stream(tiny_corpus):
    a = make_sampler(tiny_corpus.train, seed=2, p_low=0.3)
    a.sample()
    state = a.state_dict()
    expected = [a.sample() for _ in range(3)]
    b = make_sampler(tiny_corpus.train, seed=99, p_low=0.3)
    b.load_state_dict(state)
    for xe, ye in expected:
        x, y = b.sample()
        assert torch.equal(x, xe) and torch.equal(y, ye)


def test_sampler_state_is_a_copy(tiny_corpus):
    a = make_sampler(tiny_corpus.train, seed=2)
    state = a.state_dict()
    first = a.sample()
    a.load_state_dict(state)
    again = a.sample()
    assert torch.equal(first[0], again[0])


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"block_size": 0}, "block_size"),
        ({"block_size": 2.5}, "block_size"),
        ({"block_size": 10_000}, "block_size"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": True}, "batch_size"),
        ({"p_low": -0.1}, "p_low"),
        ({"p_low": 1.5}, "p_low"),
        ({"p_low": float("nan")}, "p_low"),
        ({"seed": -1}, "seed"),
    ],
)
def test_sampler_rejects_bad_parameters(tiny_corpus, kwargs, name):
    params = {"block_size": 16, "batch_size": 8, "seed": 0, "p_low": 0.0}
    params.update(kwargs)
    with pytest.raises(ValueError, match=name):
        BlockSampler(
            tiny_corpus.train[:1000],
            params["block_size"],
            params["batch_size"],
            params["seed"],
            12,
            p_low=params["p_low"],
        )
