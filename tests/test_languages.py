"""A real second language: its verified text from elotl, the split by document, the ids
beside English's, the two-language block sampler and the corpus statistics."""

from __future__ import annotations

import hashlib
import shutil
import sys
import unicodedata

import numpy as np
import pytest
import torch
from scipy import stats

from selfish_lib.engine import languages as lang
from selfish_lib.engine.corpus import CharTokenizer, Corpus, CorpusChecksumError
from selfish_lib.engine.model import GPT, ModelConfig
from selfish_lib.engine.validation import ParameterError


@pytest.fixture(scope="module")
def texts() -> dict[str, lang.LanguageText]:
    """The three real languages, loaded once (well under a second together)."""
    return {name: lang.load_language(name) for name in lang.REAL_LANGUAGES}


def hand_made(documents: dict[str, list[str]]) -> lang.LanguageText:
    return lang.LanguageText.from_documents("test", documents)


def same_size_documents(n: int, size: int = 9) -> lang.LanguageText:
    # every document holds `size` characters plus the newline ending its row
    return hand_made({f"doc{i:02d}": ["x" * size] for i in range(n)})


# --- parameters ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("check", "name", "good", "allowed"),
    [
        (lang.check_language, "language", "otomi", ("cipher", "nahuatl", "otomi", "mixtec")),
        (lang.check_alphabet, "alphabet", "shared", ("disjoint", "shared")),
    ],
)
def test_choices_are_validated_naming_the_parameter_and_the_allowed_values(
    check, name, good, allowed
):
    assert check(name, good) == good
    with pytest.raises(ParameterError) as info:
        check(name, "klingon")
    message = str(info.value)
    assert info.value.name == name and "klingon" in message
    assert all(repr(value) in message for value in allowed)


def test_the_cipher_has_no_text_to_load():
    with pytest.raises(ParameterError, match="cipher has no text"):
        lang.load_language("cipher")


# --- text: elotl, checksums, NFC -----------------------------------------------------


def test_shipped_csv_files_have_the_recorded_checksums():
    for corpus, expected in lang.ELOTL_SHA256.items():
        path, version = lang.elotl_csv_path(corpus)
        assert path.is_file() and path.name == f"{corpus}.csv"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == expected
        assert version is not None


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # elotl reads with a legacy API
def test_loaded_text_is_the_indigenous_side_of_elotl_grouped_by_document(texts):
    from elotl.corpus import load  # the package's own reader, independent of ours

    for language, corpus in lang.ELOTL_CORPORA.items():
        text = texts[language]
        assert text.sha256 == lang.ELOTL_SHA256[corpus]
        assert text.elotl_version == lang._installed_elotl()
        expected: dict[str, list[str]] = {}
        for row in load(corpus):
            if row[1].strip():
                expected.setdefault(row[3], []).append(unicodedata.normalize("NFC", row[1]))
        assert [d.name for d in text.documents] == sorted(expected)
        assert {d.name: list(d.rows) for d in text.documents} == expected


def test_a_tampered_copy_is_refused_naming_the_file_and_both_sums(tmp_path):
    original, _ = lang.elotl_csv_path("kolo")
    good = tmp_path / "kolo.csv"
    shutil.copyfile(original, good)
    assert lang.load_language("mixtec", path=good).sha256 == lang.ELOTL_SHA256["kolo"]

    data = bytearray(original.read_bytes())
    data[100] = ord("Z") if data[100] != ord("Z") else ord("Y")
    bad = tmp_path / "tampered.csv"
    bad.write_bytes(bytes(data))
    with pytest.raises(CorpusChecksumError) as info:
        lang.load_language("mixtec", path=bad)
    message = str(info.value)
    assert str(bad) in message
    assert hashlib.sha256(bytes(data)).hexdigest() in message
    assert lang.ELOTL_SHA256["kolo"] in message


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.csv"):
        lang.load_language("nahuatl", path=tmp_path / "nowhere.csv")


def test_missing_elotl_says_how_to_install_it(monkeypatch):
    # None in sys.modules makes `import elotl` raise ImportError, as if not installed
    monkeypatch.setitem(sys.modules, "elotl", None)
    monkeypatch.setitem(sys.modules, "elotl.corpora", None)
    with pytest.raises(lang.ElotlMissingError) as info:
        lang.load_language("nahuatl")
    assert isinstance(info.value, ImportError)
    assert "pip install elotl" in str(info.value) and "make install" in str(info.value)


def test_rows_are_nfc_normalised():
    decomposed = "cafe\u0301"
    assert len(decomposed) == 5
    text = hand_made({"a": [decomposed], "b": ["x"]})
    assert text.documents[0].rows == ("caf\u00e9",)
    assert text.text.count("\u00e9") == 1 and "\u0301" not in text.text
    split = lang.split_by_document(text, 0.5)
    vocab = lang.build_vocabulary(CharTokenizer.from_text("abc"), split, "disjoint")
    assert vocab.encode(decomposed) == vocab.encode("caf\u00e9")


def test_documents_are_sorted_and_empty_rows_dropped():
    text = hand_made({"zeta": ["z1", "   ", "z2"], "alpha": ["a1"], "mid": [""]})
    assert [d.name for d in text.documents] == ["alpha", "zeta"]
    assert text.documents[1].rows == ("z1", "z2")
    assert text.text == "a1\nz1\nz2\n"


# --- split by document ---------------------------------------------------------------


def test_real_splits_never_share_a_document_and_cover_every_one(texts):
    for text in texts.values():
        split = lang.split_by_document(text)
        train = {d.name for d in split.train}
        val = {d.name for d in split.val}
        assert train and val and not train & val
        assert train | val == {d.name for d in text.documents}
        assert len(split.train_text) + len(split.val_text) == len(text.text)
        assert lang.split_by_document(text) == split  # deterministic


def test_real_splits_hold_about_a_tenth_of_the_characters_for_validation(texts):
    for text in texts.values():
        summary = lang.split_summary(lang.split_by_document(text)).set_index("side")
        assert summary.loc["val", "characters"] == len(lang.split_by_document(text).val_text)
        assert 0.05 <= summary.loc["val", "share"] <= 0.2


def test_equal_documents_give_exactly_the_target_share():
    # ten equal documents and a target of 10%: the first in the walk joins (gap to 0),
    # every later one would move the share away from 10%
    split = lang.split_by_document(same_size_documents(10), 0.1)
    assert len(split.val) == 1 and len(split.train) == 9
    summary = lang.split_summary(split).set_index("side")
    assert summary.loc["val", "share"] == pytest.approx(0.1)
    assert summary.loc["val", "documents"] == 1 and summary.loc["train", "documents"] == 9
    assert summary["characters"].sum() == 100


def test_the_walk_follows_the_hash_of_the_names():
    text = same_size_documents(10)
    first = min(text.documents, key=lambda d: hashlib.sha256(d.name.encode()).hexdigest())
    assert lang.split_by_document(text, 0.1).val == (first,)


def test_documents_all_too_large_send_the_smallest_to_validation():
    text = hand_made({"big": ["x" * 59], "small": ["y" * 39]})
    split = lang.split_by_document(text, 0.1)
    assert [d.name for d in split.val] == ["small"] and [d.name for d in split.train] == ["big"]


def test_describe_split_lists_every_document_once():
    text = hand_made({"a": ["aa", "a"], "b": ["bbbbbbbbbbbbbbbbb"], "c": ["c"]})
    table = lang.describe_split(lang.split_by_document(text, 0.2))
    assert sorted(table["document"]) == ["a", "b", "c"]
    assert dict(zip(table["document"], table["characters"], strict=True)) == {
        "a": 5, "b": 18, "c": 2,
    }  # fmt: skip
    assert dict(zip(table["document"], table["rows"], strict=True)) == {"a": 2, "b": 1, "c": 1}


def test_a_corpus_of_one_document_is_too_small_to_split():
    with pytest.raises(ParameterError, match="at least 2 documents"):
        lang.split_by_document(hand_made({"only": ["one", "two"]}))


@pytest.mark.parametrize("bad", [0.0, 0.6, -0.1, float("nan"), "0.1"])
def test_val_fraction_is_validated(bad):
    with pytest.raises(ParameterError, match="val_fraction"):
        lang.split_by_document(same_size_documents(3), bad)


# --- ids -------------------------------------------------------------------------------

ENGLISH = CharTokenizer.from_text("\n abcde")  # ids: '\n' 0, ' ' 1, 'a' 2 ... 'e' 6


def small_split() -> lang.LanguageSplit:
    """Training text 'ab ñ\\n' ... and a validation document holding 'ç' and 'z', which
    the training text never has."""
    text = hand_made({"train1": ["ab ñ"] * 5, "train2": ["ba ñx"] * 5, "val": ["açz"]})
    split = lang.split_by_document(text, 0.1)
    assert [d.name for d in split.val] == ["val"]
    return split


def test_disjoint_ids_never_overlap_english_ids():
    vocab = lang.build_vocabulary(ENGLISH, small_split(), "disjoint")
    V, A = ENGLISH.vocab_size, len(vocab.symbols)
    assert sorted(vocab.ids) == list(range(V, V + A))
    assert vocab.size == V + A
    # even the characters English has (a, b, space, newline) get ids of their own
    assert set(vocab.symbols) & set(ENGLISH.symbols) == {"\n", " ", "a", "b"}
    assert not vocab.token_info()["serves_english"].any()
    assert vocab.decode(range(V)) == "".join(ENGLISH.symbols)


def test_shared_ids_coincide_with_english_on_common_characters():
    vocab = lang.build_vocabulary(ENGLISH, small_split(), "shared")
    english_id = {ch: i for i, ch in enumerate(ENGLISH.symbols)}
    V = ENGLISH.vocab_size
    by_symbol = dict(zip(vocab.symbols, vocab.ids, strict=True))
    for ch in ("\n", " ", "a", "b"):
        assert by_symbol[ch] == english_id[ch]
    # the others follow V in code point order: x (0x78) < z < ç (0xe7) < ñ (0xf1)
    assert [by_symbol[ch] for ch in ("x", "z", "ç", "ñ")] == [V, V + 1, V + 2, V + 3]
    assert vocab.size == V + 4
    info = vocab.token_info().set_index("symbol")
    assert info.loc["a", "serves_english"] and not info.loc["ñ", "serves_english"]


def test_shared_ids_on_the_real_corpora(corpus, texts):
    english = corpus.tokenizer
    for text in texts.values():
        vocab = lang.build_vocabulary(english, lang.split_by_document(text), "shared")
        common = set(vocab.symbols) & set(english.symbols)
        assert common  # Latin letters at least
        for ch, i in zip(vocab.symbols, vocab.ids, strict=True):
            if ch in common:
                assert i == english.encode(ch)[0]
            else:
                assert i >= english.vocab_size
        assert sorted(i for i in vocab.ids if i >= english.vocab_size) == list(
            range(english.vocab_size, vocab.size)
        )


@pytest.mark.parametrize("alphabet", lang.ALPHABETS)
def test_encode_decode_round_trip(alphabet):
    split = small_split()
    vocab = lang.build_vocabulary(ENGLISH, split, alphabet)
    for side in (split.train_text, split.val_text):
        assert vocab.decode(vocab.encode(side)) == side
    with pytest.raises(ValueError, match="'q' is not in the language's alphabet"):
        vocab.encode("aq")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        vocab.decode([vocab.size])


@pytest.mark.parametrize("alphabet", lang.ALPHABETS)
def test_a_character_seen_only_in_validation_gets_an_id_and_count_zero(alphabet):
    vocab = lang.build_vocabulary(ENGLISH, small_split(), alphabet)
    info = vocab.token_info().set_index("symbol")
    for ch in ("ç", "z"):
        assert info.loc[ch, "train_count"] == 0 and info.loc[ch, "val_count"] == 1
    # the training counts, counted independently
    assert info.loc["ñ", "train_count"] == 10 and info.loc["x", "train_count"] == 5
    assert info.loc["a", "train_count"] == 10 and info.loc["a", "val_count"] == 1
    # ranks: by training count, ties by id; the unseen ones last
    n = len(info)
    assert sorted(info["rank"]) == list(range(1, n + 1))
    assert set(info.loc[["ç", "z"], "rank"]) == {n - 1, n}
    ordered = vocab.token_info().sort_values("rank")
    assert list(ordered["train_count"]) == sorted(ordered["train_count"], reverse=True)


def test_prepare_language_encodes_both_sides(texts):
    english = CharTokenizer.from_text("\n abcdefghijklmnopqrstuvwxyz")
    data = lang.prepare_language("mixtec", english, "disjoint")
    assert data.sha256 == lang.ELOTL_SHA256["kolo"]
    assert int(data.train.min()) >= english.vocab_size
    assert data.vocabulary.decode(data.train.tolist()) == data.split.train_text
    assert data.vocabulary.decode(data.val.tolist()) == data.split.val_text


def test_build_vocabulary_validates_its_inputs():
    with pytest.raises(ParameterError, match="alphabet"):
        lang.build_vocabulary(ENGLISH, small_split(), "mixed")
    with pytest.raises(ParameterError, match="english"):
        lang.build_vocabulary("abc", small_split(), "shared")


# --- blocks ----------------------------------------------------------------------------

EN_STREAM = torch.arange(500)
LOW_STREAM = torch.arange(300) + 10_000  # every id above English's: a block says its source


def test_blocks_are_contiguous_windows_of_one_language():
    g = torch.Generator().manual_seed(0)
    x, y, low = lang.sample_blocks(EN_STREAM, LOW_STREAM, 8, 64, 0.5, g)
    assert x.shape == y.shape == (64, 8)
    assert torch.equal(x[:, 1:], y[:, :-1])  # targets are the inputs one position on
    assert bool((torch.diff(torch.cat([x, y[:, -1:]], 1)) == 1).all())  # contiguous
    assert torch.equal(low, (x >= 10_000).all(1)) and torch.equal(~low, (x < 10_000).all(1))
    assert 0 < int(low.sum()) < 64


def test_language_share_is_p_low_within_a_binomial_interval():
    g = torch.Generator().manual_seed(1234)
    batches, batch_size, p_low = 400, 64, 0.02
    n_low = sum(
        int(lang.sample_blocks(EN_STREAM, LOW_STREAM, 16, batch_size, p_low, g)[2].sum())
        for _ in range(batches)
    )
    n = batches * batch_size
    lo, hi = stats.binom.interval(0.9999, n, p_low)
    assert lo <= n_low <= hi, (n_low, lo, hi)


def test_same_seed_same_batches_and_p_low_leaves_the_offsets_alone():
    def draw(seed, p_low):
        g = torch.Generator().manual_seed(seed)
        return [lang.sample_blocks(EN_STREAM, LOW_STREAM, 8, 32, p_low, g) for _ in range(5)]

    a, b, other = draw(7, 0.3), draw(7, 0.3), draw(8, 0.3)
    assert all(torch.equal(u, v) for ba, bb in zip(a, b, strict=True)
               for u, v in zip(ba, bb, strict=True))  # fmt: skip
    assert any(not torch.equal(ba[0], bo[0]) for ba, bo in zip(a, other, strict=True))
    english_only = draw(7, 0.0)
    for (x, _, low), (x0, _, low0) in zip(a, english_only, strict=True):
        assert not low0.any()
        assert torch.equal(x[~low], x0[~low])  # the English blocks are the same ones
    assert all(batch[2].all() for batch in draw(7, 1.0))


def test_sampler_state_resumes_exactly():
    sampler = lang.LanguageBlockSampler(EN_STREAM, LOW_STREAM, 8, 16, seed=3, p_low=0.5)
    sampler.sample()
    state = sampler.state_dict()
    expected = [sampler.sample_with_language() for _ in range(3)]
    sampler.load_state_dict(state)
    again = [sampler.sample_with_language() for _ in range(3)]
    for e, a in zip(expected, again, strict=True):
        assert all(torch.equal(u, v) for u, v in zip(e, a, strict=True))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"p_low": 1.5}, "p_low"),
        ({"block_size": 0}, "block_size"),
        ({"block_size": 299}, "block_size"),  # the language stream is 300 long
        ({"batch_size": 0}, "batch_size"),
        ({"language": torch.arange(300.0)}, "language"),
    ],
)
def test_sampler_arguments_are_validated(kwargs, name):
    args = {"english": EN_STREAM, "language": LOW_STREAM, "block_size": 8, "batch_size": 4,
            "p_low": 0.02, "generator": torch.Generator()} | kwargs  # fmt: skip
    with pytest.raises(ParameterError, match=name):
        lang.sample_blocks(**args)


# --- statistics ------------------------------------------------------------------------


def test_statistics_on_a_hand_made_corpus():
    text = hand_made({"d1": ["abé"], "d2": ["ñ"]})  # text: 'abé\nñ\n'
    s = lang.corpus_statistics(text, ("\n", " ", "a", "b", "c"), rarest=2)
    assert (s.documents, s.rows, s.characters, s.distinct) == (2, 2, 6, 5)
    assert s.shared == 3 and s.overlap == pytest.approx(3 / 5)  # newline, a, b
    assert s.non_ascii_share == pytest.approx(2 / 6) and s.non_ascii_distinct == 2
    assert s.rarest == (("a", 1), ("b", 1))  # count 1, then code point; newline has 2
    table = lang.statistics_table([s])
    assert table.loc[0, "rarest"] == "a:1 b:1" and table.loc[0, "characters"] == 6


def test_statistics_of_the_real_corpora_agree_with_a_direct_count(texts):
    for text in texts.values():
        body = text.text
        s = lang.corpus_statistics(text, ("a", "b", "\u00e9"))
        assert s.characters == len(body) and s.distinct == len(set(body))
        assert s.non_ascii_share == pytest.approx(sum(ord(c) > 127 for c in body) / len(body))
        assert s.rows == body.count("\n")  # each row ends with one; none holds one
        assert len(s.rarest) == lang.RAREST
        points = np.frombuffer(body.encode("utf-32-le"), dtype=np.uint32)
        _, counts = np.unique(points, return_counts=True)
        assert s.rarest[0][1] == counts.min() and s.distinct == len(counts)


# --- a slice for quick runs ----------------------------------------------------------------


def test_a_slice_keeps_whole_rows_of_each_side_within_its_characters(texts):
    for text in texts.values():
        split = lang.split_by_document(text)
        assert lang.limit_split(split, 0) is split
        for chars in (500, 5000):
            cut = lang.limit_split(split, chars)
            for whole, part in ((split.train, cut.train), (split.val, cut.val)):
                text_of = "".join(d.text for d in part)
                assert 0 < len(text_of) <= chars
                assert "".join(d.text for d in whole).startswith(text_of)  # the first rows
                assert {d.name for d in part} <= {d.name for d in whole}
            assert not {d.name for d in cut.train} & {d.name for d in cut.val}


def test_a_slice_keeps_a_first_row_longer_than_the_limit():
    split = lang.split_by_document(hand_made({"a": ["x" * 50, "y"], "b": ["z" * 5]}), 0.1)
    cut = lang.limit_split(split, 10)
    assert [d.rows for d in cut.train] == [("x" * 50,)]
    assert cut.val == split.val  # 'zzzzz\n' fits
    with pytest.raises(ParameterError, match="chars"):
        lang.limit_split(split, -1)


# --- a run's corpus: English beside the language --------------------------------------------


def two_languages(alphabet: str) -> lang.TwoLanguageCorpus:
    """English 'abcde' text beside the small split (training 'ab ñ', 'ba ñx'; validation
    'açz'), built as ``two_language_corpus`` builds it, without elotl."""
    english = Corpus.from_text("\n abcde" * 40)
    split = small_split()
    vocab = lang.build_vocabulary(english.tokenizer, split, alphabet)
    second = lang.LanguageCorpus(
        split, vocab, torch.tensor(vocab.encode(split.train_text)),
        torch.tensor(vocab.encode(split.val_text)), "0" * 64, None,
    )  # fmt: skip
    fields = {f: getattr(english, f) for f in Corpus.__dataclass_fields__}
    return lang.TwoLanguageCorpus(**fields, second=second)


@pytest.mark.parametrize("alphabet", lang.ALPHABETS)
def test_the_run_corpus_lists_each_languages_rows_with_its_own_ranks(alphabet):
    both = two_languages(alphabet)
    V, M = 7, both.vocabulary.size
    assert both.model_vocab_size() == M == V + (8 if alphabet == "disjoint" else 4)
    info = both.token_info()
    high, low = info[info["language"] == "high"], info[info["language"] == "low"]
    assert high["token"].tolist() == list(range(V))  # English's rows: its ids
    assert sorted(low["token"]) == sorted(i + M for i in both.vocabulary.ids)
    assert (low["token"] - M == low["model_token"]).all()
    # ranks within each language, by its own training counts
    assert sorted(low["rank"]) == list(range(1, 9)) and sorted(high["rank"]) == list(range(1, 8))
    # counts 10 ('\n', ' ', a, b, ñ; ties by id), 5 (x), 0 (ç, z: validation only)
    ranks = low.set_index("symbol")["rank"]
    assert [ranks[ch] for ch in "\n abñx"] == [1, 2, 3, 4, 5, 6]
    assert {ranks["ç"], ranks["z"]} == {7, 8}
    shared = low.set_index("symbol")["shared_row"]
    assert shared["a"] == (alphabet == "shared") and not shared["ñ"]
    rows = both.row_info().set_index("symbol")
    assert len(both.row_info()) == M
    if alphabet == "shared":
        assert rows.loc["a", "language"] == "both" and rows.loc["c", "language"] == "high"
        english_a = both.frequencies.set_index("symbol").loc["a", "count"]
        assert rows.loc["a", "low_rank"] == 3 and rows.loc["a", "high_count"] == english_a
        assert rows.loc["a", "rank"] == both.frequencies.set_index("symbol").loc["a", "rank"]
    else:
        assert set(both.row_info()["language"]) == {"high", "low"}
    assert rows.loc["ñ", "language"] == "low" and rows.loc["ñ", "low_count"] == 10


def test_the_run_corpus_refuses_a_tuning_view_and_a_missing_language():
    with pytest.raises(ParameterError, match="split"):
        two_languages("shared").for_tuning()
    english = Corpus.from_text("\n abcde" * 40)
    fields = {f: getattr(english, f) for f in Corpus.__dataclass_fields__}
    with pytest.raises(ParameterError, match="second"):
        lang.TwoLanguageCorpus(**fields)
    with pytest.raises(ParameterError, match="a real language"):
        lang.two_language_corpus(english, "cipher", "disjoint")


def test_two_language_corpora_are_built_once(corpus):
    first = lang.two_language_corpus(corpus, "mixtec", "shared", 3000)
    assert lang.two_language_corpus(corpus, "mixtec", "shared", 3000) is first
    assert first.sha256 == corpus.sha256 and torch.equal(first.train, corpus.train)
    assert first.second.sha256 == lang.ELOTL_SHA256["kolo"]
    assert len(first.second.split.val_text) <= 3000


def test_sample_and_sample_with_language_make_the_same_draws():
    a = lang.LanguageBlockSampler(EN_STREAM, LOW_STREAM, 8, 16, seed=9, p_low=0.5)
    b = lang.LanguageBlockSampler(EN_STREAM, LOW_STREAM, 8, 16, seed=9, p_low=0.5)
    for _ in range(3):
        x, y = a.sample()
        x2, y2, low = b.sample_with_language()
        assert torch.equal(x, x2) and torch.equal(y, y2) and 0 < int(low.sum()) < 16


def test_a_language_whose_package_is_missing_is_refused_by_name(monkeypatch):
    assert lang.check_installed_language("language", "cipher") == "cipher"
    assert lang.check_installed_language("language", "otomi") == "otomi"
    monkeypatch.setitem(sys.modules, "elotl", None)
    assert lang.check_installed_language("language", "cipher") == "cipher"  # needs nothing
    with pytest.raises(ParameterError) as info:
        lang.check_installed_language("language", "otomi")
    assert info.value.name == "language" and "pip install elotl" in str(info.value)


def test_generated_text_decodes_the_models_ids():
    both = two_languages("disjoint")
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=1, n_head=1, n_embd=8, block_size=8), both.vocabulary.size)
    text, share = lang.generate_in_language(model, both, "low", "ab", 20, seed=1)
    again = lang.generate_in_language(model, both, "low", "ab", 20, seed=1)
    assert (text, share) == again and len(text) == 20
    assert 0.0 <= share <= 1.0
    with pytest.raises(ValueError, match="not in the language's alphabet"):
        lang.generate_in_language(model, both, "low", "q", 5)
