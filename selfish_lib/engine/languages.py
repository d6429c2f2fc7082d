"""A real second language beside English: Nahuatl, Otomí or Mixtec from the ``elotl``
parallel corpora, or the cipher the bilingual simulation uses (Shakespeare with every id
shifted by V, which has no text of its own).

The data layer of such a language, in the order a run needs it:

- **text**: the corpus's indigenous side (never the Spanish one), each row NFC-normalised,
  grouped by document, documents sorted by name, the bytes of the CSV file verified
  against a recorded sha256 (``load_language``);
- **split**: whole documents go to training or to validation, never both
  (``split_by_document``; ``split_summary`` states it);
- **ids**: the language's characters after English's V ids, either all of them
  (``disjoint``: a script of its own) or only those English lacks (``shared``: one
  vocabulary over both texts) (``build_vocabulary``);
- **blocks**: a training batch whose blocks come from the language with probability
  ``p_low`` (``sample_blocks``, ``LanguageBlockSampler``);
- **a run's corpus**: English and the language side by side, what training and
  evaluation read (``TwoLanguageCorpus``, ``two_language_corpus``; a smaller slice of the
  language for quick runs: ``limit_split``);
- **statistics** of the corpus for the chapter (``corpus_statistics``).

``elotl`` is imported only when a corpus is loaded from the installed package, so that
everything else (and the cipher) works without it.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.metadata
import importlib.util
import io
import os
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import torch

# _DISPLAY: the stand-ins the English alphabet shows for whitespace, shown alike here
from .corpus import (
    _DISPLAY,
    CharTokenizer,
    Corpus,
    CorpusChecksumError,
    group_size_for,
    rank_group,
)
from .model import GPT
from .validation import ParameterError, check_choice, check_float, check_int

CIPHER = "cipher"
LANGUAGES = (CIPHER, "nahuatl", "otomi", "mixtec")
REAL_LANGUAGES = LANGUAGES[1:]
ALPHABETS = ("disjoint", "shared")

# The elotl corpus of each real language, and the sha256 of the CSV file elotl ships for
# it, computed once from the installed wheel of elotl 0.1.1 (its corpora/ folder).
ELOTL_CORPORA = {"nahuatl": "axolotl", "otomi": "tsunkua", "mixtec": "kolo"}
ELOTL_VERSION = "0.1.1"
ELOTL_SHA256 = {
    "axolotl": "ed8e85f560e78c43385f91ac99d08dee071183749bc1f1aa1b88f1b3a2530878",
    "tsunkua": "8791607d9e873077b37658b2a244d1dbd437254536f15addee136d69138d7143",
    "kolo": "ca183a5eb51180301507b2c7acb9e5ab9d0893e3b8e20759e78c7329b88272c4",
}
INSTALL_HINT = "`pip install elotl` (or `make install`, which installs every dependency)"

# Columns of an elotl CSV row: Spanish, indigenous text, variety, document, then extras
# that differ between corpora.
_SPANISH, _TEXT, _DOCUMENT = 0, 1, 3

VAL_FRACTION = 0.1  # the share of characters the document split aims at for validation
RAREST = 10  # rare symbols listed by corpus_statistics


class ElotlMissingError(ImportError):
    """The ``elotl`` package, which ships the corpora, is not installed."""


def check_language(name: str, value) -> str:
    """A second language: 'cipher' (the simulation: Shakespeare with shifted ids) or a real
    one ('nahuatl', 'otomi', 'mixtec')."""
    return check_choice(name, value, LANGUAGES)


def check_installed_language(name: str, value) -> str:
    """``check_language``, and for a real language that ``elotl``, which ships its text,
    is installed: a ParameterError naming ``name`` says how to install it otherwise, so
    that a command or a notebook refuses before any work."""
    language = check_language(name, value)
    if language != CIPHER and importlib.util.find_spec("elotl") is None:
        raise ParameterError(
            name, language,
            f"a language whose text is installed: {language!r} comes from the elotl package, "
            f"which is not installed; install it with {INSTALL_HINT}, or choose 'cipher'",
        )  # fmt: skip
    return language


def check_alphabet(name: str, value) -> str:
    """How a real language's characters get ids: 'disjoint' (each its own id after
    English's) or 'shared' (English's ids for the characters English has)."""
    return check_choice(name, value, ALPHABETS)


# ---------------------------------------------------------------------------------------
# text


@dataclass(frozen=True)
class Document:
    """One document of a corpus: its name and its rows (indigenous side, NFC)."""

    name: str
    rows: tuple[str, ...]

    @property
    def text(self) -> str:
        """The rows, each ended by a newline."""
        return "".join(row + "\n" for row in self.rows)

    @property
    def characters(self) -> int:
        """Characters of ``text`` (the newlines included)."""
        return sum(len(row) + 1 for row in self.rows)


@dataclass(frozen=True)
class LanguageText:
    """The text of a language: its documents in a fixed order (sorted by name), and where
    the text came from (file, its sha256, the elotl version installed, if any)."""

    language: str
    documents: tuple[Document, ...]
    source: str = ""
    sha256: str = ""
    elotl_version: str | None = None
    rows_equal_to_spanish: int = 0  # rows whose indigenous side repeats the Spanish one

    @classmethod
    def from_documents(cls, language: str, documents: Mapping[str, Iterable[str]],
                       **provenance) -> LanguageText:  # fmt: skip
        """A text from ``{document name: rows}`` (hand-made corpora), normalised and
        ordered as ``load_language`` does."""
        return cls(language, _documents((name, row) for name, rows in documents.items()
                                        for row in rows), **provenance)  # fmt: skip

    @cached_property
    def text(self) -> str:
        """All documents, in order."""
        return "".join(doc.text for doc in self.documents)

    @property
    def rows(self) -> int:
        """Rows of all documents."""
        return sum(len(doc.rows) for doc in self.documents)


def _documents(pairs: Iterable[tuple[str, str]]) -> tuple[Document, ...]:
    """Documents from (document name, row) pairs in file order: each row NFC-normalised,
    rows with no visible text (empty or whitespace only) left out, rows kept in file order
    within a document, documents sorted by name (code points)."""
    grouped: dict[str, list[str]] = {}
    for name, row in pairs:
        row = unicodedata.normalize("NFC", row)
        if row.strip():
            grouped.setdefault(name, []).append(row)
    return tuple(Document(name, tuple(grouped[name])) for name in sorted(grouped))


def elotl_csv_path(corpus: str) -> tuple[Path, str]:
    """The CSV file the installed ``elotl`` ships for ``corpus`` ('axolotl', 'tsunkua',
    'kolo') and elotl's version. Raises ElotlMissingError, saying how to install it, when
    elotl is not installed."""
    corpus = check_choice("corpus", corpus, tuple(ELOTL_SHA256))
    try:
        # optional at import time: only loading a real language needs elotl
        from elotl import corpora
    except ImportError as exc:
        raise ElotlMissingError(
            f"the corpus {corpus!r} of a real second language comes from the elotl package, "
            f"which is not installed: install it with {INSTALL_HINT}"
        ) from exc
    # elotl.corpus.load reads the same file (importlib.resources, csv.reader); reading it
    # here lets the bytes that are verified be the bytes that are parsed
    return Path(corpora.__file__).parent / f"{corpus}.csv", _installed_elotl()


def _installed_elotl() -> str | None:
    try:
        return importlib.metadata.version("elotl")
    except importlib.metadata.PackageNotFoundError:
        return None


@cache
def installed_elotl() -> str | None:
    """The version of the installed elotl (None without it), read once per process: what a
    real-language run records beside its corpus's sha256."""
    return _installed_elotl()


def load_language(language: str, path: str | os.PathLike | None = None) -> LanguageText:
    """The verified text of a real language: the indigenous side of its elotl corpus
    (Nahuatl: axolotl, Otomí: tsunkua, Mixtec: kolo), each row NFC-normalised, grouped by
    document (the CSV's fourth column), documents sorted by name.

    ``path`` reads that CSV file instead of the one the installed elotl ships (elotl is
    then not needed). Either way the file's sha256 must be the one recorded in
    ``ELOTL_SHA256`` (from elotl 0.1.1): another file raises CorpusChecksumError naming the
    file and both sums."""
    language = check_language("language", language)
    if language == CIPHER:
        raise ParameterError(
            "language", language,
            "one of " + ", ".join(repr(x) for x in REAL_LANGUAGES)
            + " (the cipher has no text: it is English with shifted ids)",
        )  # fmt: skip
    corpus = ELOTL_CORPORA[language]
    if path is None:
        file, version = elotl_csv_path(corpus)
        origin = f"the {corpus}.csv file of the installed elotl {version}"
    else:
        file, version = Path(path).expanduser(), _installed_elotl()
        origin = "the path parameter"
    data = _verified_bytes(file, origin, ELOTL_SHA256[corpus], corpus)
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))
    short = [i for i, row in enumerate(rows) if len(row) <= _DOCUMENT]
    if short:
        raise ValueError(f"{str(file)!r}: row {short[0] + 1} has fewer than 4 columns")
    same = sum(row[_SPANISH].strip() == row[_TEXT].strip() for row in rows if row[_TEXT].strip())
    return LanguageText(
        language, _documents((row[_DOCUMENT], row[_TEXT]) for row in rows), source=str(file),
        sha256=hashlib.sha256(data).hexdigest(), elotl_version=version,
        rows_equal_to_spanish=same,
    )  # fmt: skip


def _verified_bytes(file: Path, origin: str, expected: str, corpus: str) -> bytes:
    if not file.is_file():
        raise FileNotFoundError(f"{origin} points to {str(file)!r}, which is not a file")
    data = file.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise CorpusChecksumError(
            f"{origin}: {str(file)!r} has sha256 {actual}, expected {expected} "
            f"(the {corpus}.csv corpus of elotl {ELOTL_VERSION}; installed elotl: "
            f"{_installed_elotl() or 'none'})"
        )
    return data


# ---------------------------------------------------------------------------------------
# split


def _document_key(doc: Document) -> str:
    return hashlib.sha256(doc.name.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class LanguageSplit:
    """A language's documents split into training and validation, whole documents only."""

    language: str
    train: tuple[Document, ...]
    val: tuple[Document, ...]
    val_fraction: float

    @cached_property
    def train_text(self) -> str:
        """The training documents' text, in name order."""
        return "".join(doc.text for doc in self.train)

    @cached_property
    def val_text(self) -> str:
        """The validation documents' text, in name order."""
        return "".join(doc.text for doc in self.val)


def split_by_document(text: LanguageText, val_fraction: float = VAL_FRACTION) -> LanguageSplit:
    """Split ``text`` by document, aiming at ``val_fraction`` of its characters for
    validation (0 < val_fraction <= 0.5).

    The rule: walk the documents in the order of the sha256 of their names (a fixed order
    unrelated to names, sizes or time); a document goes to validation when adding it
    brings validation's share of the characters closer to ``val_fraction`` than leaving it
    out (so a document joins while it is under twice the gap that remains). When no
    document does (every one is more than twice the target), the smallest one goes
    (ties: first in the walk). No document is on both sides; both sides keep at least one
    document (with ``val_fraction <= 0.5``, validation never takes everything). The split
    is deterministic: the same documents give the same split. Raises ParameterError for a
    text of fewer than two documents, which cannot be split this way."""
    val_fraction = check_float("val_fraction", val_fraction, 0.0, 0.5, min_inclusive=False)
    docs = text.documents
    if len(docs) < 2:
        raise ParameterError(
            "text", f"{text.language} ({len(docs)} document)",
            "a corpus of at least 2 documents (a split by document needs one on each side)",
        )  # fmt: skip
    total = sum(doc.characters for doc in docs)
    walk = sorted(docs, key=_document_key)
    chosen: set[str] = set()
    held = 0
    for doc in walk:
        share, joined = held / total, (held + doc.characters) / total
        if abs(joined - val_fraction) < abs(share - val_fraction):
            chosen.add(doc.name)
            held += doc.characters
    if not chosen:
        chosen.add(min(walk, key=lambda doc: doc.characters).name)  # min keeps the first tie
    train = tuple(doc for doc in docs if doc.name not in chosen)
    val = tuple(doc for doc in docs if doc.name in chosen)
    return LanguageSplit(text.language, train, val, val_fraction)


def describe_split(split: LanguageSplit) -> pd.DataFrame:
    """One row per document: document, side ('train' or 'val'), rows, characters."""
    records = [
        {"document": doc.name, "side": side, "rows": len(doc.rows), "characters": doc.characters}
        for side, docs in (("train", split.train), ("val", split.val))
        for doc in docs
    ]
    return pd.DataFrame(records, columns=["document", "side", "rows", "characters"])


def split_summary(split: LanguageSplit) -> pd.DataFrame:
    """The split, stated: per side (train, val), its documents, rows, characters and share
    of the characters."""
    per_doc = describe_split(split)
    out = (
        per_doc.groupby("side", sort=False)
        .agg(documents=("document", "size"), rows=("rows", "sum"), characters=("characters", "sum"))
        .reindex(["train", "val"])
        .reset_index()
    )
    out.insert(0, "language", split.language)
    out["share"] = out["characters"] / out["characters"].sum()
    return out


def _first_rows(documents: tuple[Document, ...], chars: int) -> tuple[Document, ...]:
    """The first rows of ``documents``, in order, while they hold at most ``chars``
    characters (newlines counted); the first row is kept whatever its length."""
    kept: list[Document] = []
    held = 0
    for doc in documents:
        rows: list[str] = []
        for row in doc.rows:
            if held + len(row) + 1 > chars and (rows or kept):
                break
            rows.append(row)
            held += len(row) + 1
        if rows:
            kept.append(Document(doc.name, tuple(rows)))
        if len(rows) < len(doc.rows):
            break
    return tuple(kept)


def limit_split(split: LanguageSplit, chars: int) -> LanguageSplit:
    """``split`` cut to a slice for quick runs: each side keeps its first rows (documents
    in name order, rows in file order) while they hold at most ``chars`` characters, and
    at least one row. ``chars=0`` keeps the whole split. The sides still share no
    document, since each keeps only documents it had."""
    chars = check_int("chars", chars, 0)
    if chars == 0:
        return split
    return LanguageSplit(split.language, _first_rows(split.train, chars),
                         _first_rows(split.val, chars), split.val_fraction)  # fmt: skip


# ---------------------------------------------------------------------------------------
# ids


@dataclass(frozen=True)
class LanguageVocabulary:
    """Ids of a language's characters beside English's (ids 0 .. V-1, unchanged).

    ``symbols`` are the language's characters (training and validation text) in code
    point order and ``ids`` their ids: under 'disjoint' ``V + i`` for the i-th symbol,
    under 'shared' English's id for a character English has and ``V, V + 1, ...`` (in
    code point order) for the others. ``train_counts`` count the training text; a
    character seen only in validation has count 0 (and ranks last)."""

    alphabet: str
    english: tuple[str, ...]
    symbols: tuple[str, ...]
    ids: tuple[int, ...]
    train_counts: tuple[int, ...]
    val_counts: tuple[int, ...]
    _encode: dict[str, int] = field(init=False, repr=False, compare=False)
    _decode: dict[int, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_encode", dict(zip(self.symbols, self.ids, strict=True)))
        table = dict(enumerate(self.english))
        table.update(zip(self.ids, self.symbols, strict=True))
        object.__setattr__(self, "_decode", table)

    @property
    def english_size(self) -> int:
        """V: English's ids are 0 .. V-1."""
        return len(self.english)

    @property
    def size(self) -> int:
        """The model's vocabulary: English's ids and the language's new ones."""
        return len(self._decode)

    def encode(self, text: str) -> list[int]:
        """Ids of the language's ``text`` (NFC-normalised first, as the corpus is)."""
        index = self._encode
        try:
            return [index[ch] for ch in unicodedata.normalize("NFC", text)]
        except KeyError as exc:
            raise ValueError(
                f"character {exc.args[0]!r} is not in the language's alphabet"
            ) from None

    def decode(self, ids: Iterable[int]) -> str:
        """Text of model ids (English's ids decode to English's characters)."""
        table = self._decode
        try:
            return "".join(table[int(i)] for i in ids)
        except KeyError as exc:
            raise ValueError(
                f"id {exc.args[0]} is outside the vocabulary 0 .. {self.size - 1}"
            ) from None

    def token_info(self) -> pd.DataFrame:
        """One row per character of the language: token (its id), symbol, display,
        train_count, val_count, rank (1 = most frequent in the language's training text;
        ties by id, so validation-only characters come last), group (as the English
        groups: ``corpus.group_size_for``), serves_english (the id is also English's:
        'shared' only)."""
        df = pd.DataFrame({
            "token": self.ids,
            "symbol": self.symbols,
            "display": [display(ch) for ch in self.symbols],
            "train_count": self.train_counts,
            "val_count": self.val_counts,
            "serves_english": [i < self.english_size for i in self.ids],
        })  # fmt: skip
        df = df.sort_values(["train_count", "token"], ascending=[False, True])
        df = df.reset_index(drop=True)
        n = len(df)
        df["rank"] = range(1, n + 1)
        size = group_size_for(n)
        df["group"] = [rank_group(r, size, n_ranks=n) for r in df["rank"]]
        return df.sort_values("token").reset_index(drop=True)


def display(ch: str) -> str:
    """A printable label for one character: whitespace as the English alphabet shows it, a
    combining mark on a dotted circle, an invisible control or format character as its
    code point (U+FEFF)."""
    if ch in _DISPLAY:
        return _DISPLAY[ch]
    category = unicodedata.category(ch)
    if category.startswith("M"):
        return "◌" + ch
    if category[0] in "CZ":
        return f"U+{ord(ch):04X}"
    return ch


def build_vocabulary(english: CharTokenizer, split: LanguageSplit, alphabet: str
                     ) -> LanguageVocabulary:  # fmt: skip
    """The ids of the language of ``split`` beside the English character tokenizer
    ``english`` (its V ids unchanged), under ``alphabet`` ('disjoint' or 'shared'); every
    character of the training and the validation text gets an id."""
    alphabet = check_alphabet("alphabet", alphabet)
    if not isinstance(english, CharTokenizer):
        raise ParameterError(
            "english", english, "the character tokenizer of the English corpus (CharTokenizer)"
        )
    train = Counter(split.train_text)
    val = Counter(split.val_text)
    symbols = tuple(sorted(set(train) | set(val)))
    V = english.vocab_size
    if alphabet == "disjoint":
        ids = tuple(V + i for i in range(len(symbols)))
    else:
        known = {ch: i for i, ch in enumerate(english.symbols)}
        new = iter(range(V, V + len(symbols)))
        ids = tuple(known[ch] if ch in known else next(new) for ch in symbols)
    return LanguageVocabulary(
        alphabet, tuple(english.symbols), symbols, ids,
        tuple(train[ch] for ch in symbols), tuple(val[ch] for ch in symbols),
    )  # fmt: skip


@dataclass(frozen=True)
class LanguageCorpus:
    """A language ready for a run: its split, its vocabulary and both sides as ids."""

    split: LanguageSplit
    vocabulary: LanguageVocabulary
    train: torch.Tensor
    val: torch.Tensor
    sha256: str
    elotl_version: str | None


def prepare_language(
    language: str,
    english: CharTokenizer,
    alphabet: str,
    *,
    val_fraction: float = VAL_FRACTION,
    path: str | os.PathLike | None = None,
    chars: int = 0,
) -> LanguageCorpus:
    """Load, split and encode a real language beside the English tokenizer ``english``;
    with ``chars`` > 0, only a slice of each side (``limit_split``), whose characters
    are then the language's alphabet."""
    text = load_language(language, path) if path is not None else language_text(language)
    split = limit_split(split_by_document(text, val_fraction), chars)
    vocab = build_vocabulary(english, split, alphabet)
    train = torch.tensor(vocab.encode(split.train_text), dtype=torch.long)
    val = torch.tensor(vocab.encode(split.val_text), dtype=torch.long)
    return LanguageCorpus(split, vocab, train, val, text.sha256, text.elotl_version)


_TEXTS: dict[str, LanguageText] = {}


def language_text(language: str) -> LanguageText:
    """``load_language(language)`` from the installed elotl, verified once per process."""
    language = check_language("language", language)
    if language not in _TEXTS:
        _TEXTS[language] = load_language(language)
    return _TEXTS[language]


# ---------------------------------------------------------------------------------------
# a run's corpus: English and the language


# The two sides of a run's evaluation table (``evaluation.evaluate_languages``): the rows
# of English's validation text, then those of the language's.
HIGH, LOW, BOTH = "high", "low", "both"


@dataclass(frozen=True)
class TwoLanguageCorpus(Corpus):
    """The corpus of a run whose second language is real text: English (every field of
    ``Corpus``, unchanged: its text, tokenizer, splits and ranks) and ``second``, the
    language's split, vocabulary and ids.

    The model's vocabulary is ``second.vocabulary`` (``model_vocab_size``): English's V
    ids, then the language's new ones. Training blocks come from either text
    (``LanguageBlockSampler``, built by ``training.fresh_run``); each validation text is
    evaluated on its own (``evaluation.evaluate_languages``): the table's rows 0 .. M-1
    hold English's validation text and M .. 2M-1 the language's (M the model's
    vocabulary), so that a character whose id serves both languages ('shared') keeps one
    row per language. ``token_info`` describes those rows, ``row_info`` the model's
    embedding rows."""

    second: LanguageCorpus | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.second, LanguageCorpus):
            raise ParameterError("second", self.second, "the LanguageCorpus of the language")

    @property
    def language(self) -> str:
        """The second language ('nahuatl', 'otomi' or 'mixtec')."""
        return self.second.split.language

    @property
    def alphabet(self) -> str:
        """'disjoint' or 'shared'."""
        return self.second.vocabulary.alphabet

    @property
    def vocabulary(self) -> LanguageVocabulary:
        """The ids of the language's characters beside English's."""
        return self.second.vocabulary

    def model_vocab_size(self, bilingual: bool = True) -> int:
        """M: the model's vocabulary, English's V ids and the language's new ones."""
        return self.second.vocabulary.size

    def log_prior(self, bilingual: bool = True, p_low: float = 0.0) -> torch.Tensor:
        """Log of the training stream's unigram distribution over the model's M tokens,
        add-one smoothed: a block is the language's with probability ``p_low``, so a
        token's expected count is (1 - p_low) times its English count plus ``p_low``
        times its count in the language's training text rescaled to English's length
        (both, for a 'shared' id); pi = (expected + 1) / (total + M). With the cipher's
        twin counts this is ``Corpus.log_prior``."""
        p_low = check_float("p_low", p_low, 0.0, 1.0)
        M = self.model_vocab_size()
        english = torch.bincount(self.train, minlength=M).double()
        language = torch.bincount(self.second.train, minlength=M).double()
        expected = (1.0 - p_low) * english + p_low * language * (english.sum() / language.sum())
        smoothed = expected + 1.0
        return torch.log(smoothed / smoothed.sum()).float()

    def token_info(self, bilingual: bool = True) -> pd.DataFrame:
        """One row per row of the run's evaluation table that a character can fill:
        token (the table's row: the model id for English's text, M + id for the
        language's), model_token (the id), symbol, display, train_count and val_count
        (in that language's training and validation text), rank and group (by training
        count within that language: each language's own ranks; a character seen only
        in validation has count 0 and ranks last), language ('high' or 'low') and
        shared_row (the id also serves the other language: 'shared' only)."""
        M = self.model_vocab_size()
        language = self.second.vocabulary.token_info()
        in_language = set(language["token"])
        english = self.frequencies.sort_values("token").reset_index(drop=True)
        val = torch.bincount(self.val, minlength=self.vocab_size).tolist()
        high = pd.DataFrame({
            "token": english["token"], "model_token": english["token"],
            "symbol": english["symbol"], "display": english["display"],
            "train_count": english["count"], "val_count": [val[t] for t in english["token"]],
            "rank": english["rank"], "group": english["group"], "language": HIGH,
            "shared_row": [t in in_language for t in english["token"]],
        })  # fmt: skip
        low = pd.DataFrame({
            "token": language["token"] + M, "model_token": language["token"],
            "symbol": language["symbol"], "display": language["display"],
            "train_count": language["train_count"], "val_count": language["val_count"],
            "rank": language["rank"], "group": language["group"], "language": LOW,
            "shared_row": language["serves_english"],
        })  # fmt: skip
        return pd.concat([high, low], ignore_index=True)

    def row_info(self, bilingual: bool = True) -> pd.DataFrame:
        """One row per embedding row (model id, 0 .. M-1): token, symbol, display,
        language (which texts the row serves: 'high', 'low', or 'both' for a 'shared'
        id whose character both texts have), rank and group (English's for a row English
        uses, the language's otherwise), low_rank and low_group (the language's, for a
        row it uses), high_count and low_count (training counts in each text)."""
        info = self.token_info()
        high = info[info["language"] == HIGH].set_index("model_token")
        low = info[info["language"] == LOW].set_index("model_token")
        M = self.model_vocab_size()
        rows = []
        for i in range(M):
            in_high, in_low = i in high.index, i in low.index
            own = high.loc[i] if in_high else low.loc[i]
            rows.append({
                "token": i, "symbol": own["symbol"], "display": own["display"],
                "language": BOTH if in_high and in_low else (HIGH if in_high else LOW),
                "rank": int(own["rank"]), "group": own["group"],
                "low_rank": int(low.loc[i, "rank"]) if in_low else None,
                "low_group": low.loc[i, "group"] if in_low else None,
                "high_count": int(high.loc[i, "train_count"]) if in_high else 0,
                "low_count": int(low.loc[i, "train_count"]) if in_low else 0,
            })  # fmt: skip
        out = pd.DataFrame(rows)
        out["low_rank"] = out["low_rank"].astype("Int64")
        return out

    def for_tuning(self, fraction: float = 0.1) -> Corpus:
        """Not defined for a real language (TrainConfig refuses split='tuning' with one)."""
        raise ParameterError("split", "tuning", "'validation' with a real second language")


_RUN_CORPORA: dict[tuple, TwoLanguageCorpus] = {}


def two_language_corpus(english: Corpus, language: str, alphabet: str, chars: int = 0
                        ) -> TwoLanguageCorpus:  # fmt: skip
    """The corpus of a run with a real second language: ``english`` (characters) beside
    ``language`` under ``alphabet``, the language cut to ``chars`` characters per side
    when > 0 (``limit_split``). Built once per process for each English text, language,
    alphabet and slice (loading and verifying the language's CSV file first)."""
    language = check_language("language", language)
    if language == CIPHER:
        raise ParameterError("language", language,
                             "a real language: " + ", ".join(REAL_LANGUAGES))  # fmt: skip
    alphabet = check_alphabet("alphabet", alphabet)
    chars = check_int("chars", chars, 0)
    if not isinstance(english, Corpus) or not isinstance(english.tokenizer, CharTokenizer):
        raise ParameterError("english", english, "the English corpus in characters")
    key = (english.sha256, english.val_fraction, language, alphabet, chars)
    if key not in _RUN_CORPORA:
        second = prepare_language(language, english.tokenizer, alphabet, chars=chars)
        fields = {f: getattr(english, f) for f in Corpus.__dataclass_fields__}
        _RUN_CORPORA[key] = TwoLanguageCorpus(**fields, second=second)
    return _RUN_CORPORA[key]


@torch.no_grad()
def generate_in_language(
    model: GPT,
    corpus: TwoLanguageCorpus,
    language: str,
    prompt: str,
    length: int = 300,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    device: str = "cpu",
) -> tuple[str, float]:
    """``length`` characters sampled after ``prompt`` written in ``language`` ('high':
    English ids, 'low': the language's), and the share of them whose id the prompted
    language's text has (English's V ids, or the language's alphabet)."""
    check_choice("language", language, (HIGH, LOW))
    length = check_int("length", length, 1)
    vocab = corpus.vocabulary
    start = corpus.tokenizer.encode(prompt) if language == HIGH else vocab.encode(prompt)
    ids = torch.tensor([start], device=device)
    generator = torch.Generator(device=device).manual_seed(check_int("seed", seed, 0))
    out = model.to(device).eval().generate(ids, length, temperature, top_p, generator)
    new = out[0, len(start) :].cpu().tolist()
    own = set(range(vocab.english_size)) if language == HIGH else set(vocab.ids)
    share = float(np.mean([i in own for i in new]))
    return vocab.decode(new), share


# ---------------------------------------------------------------------------------------
# blocks


def _check_stream(name: str, ids: torch.Tensor, block_size: int) -> torch.Tensor:
    if not isinstance(ids, torch.Tensor) or ids.dim() != 1 or ids.dtype != torch.long:
        raise ParameterError(name, ids, "a 1-D tensor of int64 ids")
    if len(ids) <= block_size + 1:
        raise ParameterError(
            "block_size", block_size,
            f"an integer below {len(ids) - 1} (the length of {name} minus one)",
        )  # fmt: skip
    return ids


def sample_blocks(
    english: torch.Tensor,
    language: torch.Tensor,
    block_size: int,
    batch_size: int,
    p_low: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One training batch from two id streams: each block independently is a contiguous
    window of ``language`` with probability ``p_low``, of ``english`` otherwise.

    Returns ``x`` and ``y`` (batch_size, block_size), the targets one position on, and the
    bool vector ``low`` marking the language's blocks. The ids are used as they are (the
    language's already lie in the model's vocabulary: ``LanguageVocabulary``). Every call
    draws, in this order, an English offset per block, a coin per block and a language
    offset per block, whatever ``p_low`` is: the same generator state gives the same
    batch, and runs differing only in ``p_low`` see the same offsets."""
    block_size = check_int("block_size", block_size, 1)
    batch_size = check_int("batch_size", batch_size, 1)
    p_low = check_float("p_low", p_low, 0.0, 1.0)
    _check_stream("english", english, block_size)
    _check_stream("language", language, block_size)
    g, T = generator, block_size
    span = torch.arange(T + 1)
    ix_en = torch.randint(len(english) - T - 1, (batch_size,), generator=g)
    coin = torch.rand(batch_size, generator=g)
    ix_low = torch.randint(len(language) - T - 1, (batch_size,), generator=g)
    low = coin < p_low
    blocks = torch.where(
        low.unsqueeze(1),
        language[ix_low.unsqueeze(1) + span],
        english[ix_en.unsqueeze(1) + span],
    )
    return blocks[:, :-1].contiguous(), blocks[:, 1:].contiguous(), low


class LanguageBlockSampler:
    """``sample_blocks`` with its own seeded generator, whose state a checkpoint can save
    and restore (for an exact resume).

    ``sample`` returns ``(x, y)`` as ``corpus.BlockSampler`` does, so that the training
    loop takes either; ``sample_with_language`` also returns the mask of the language's
    blocks. Both draw the same numbers from the generator."""

    def __init__(self, english: torch.Tensor, language: torch.Tensor, block_size: int,
                 batch_size: int, seed: int, p_low: float) -> None:  # fmt: skip
        self.block_size = check_int("block_size", block_size, 1)
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.p_low = check_float("p_low", p_low, 0.0, 1.0)
        self.english = _check_stream("english", english, self.block_size)
        self.language = _check_stream("language", language, self.block_size)
        self.generator = torch.Generator().manual_seed(check_int("seed", seed, 0))

    def sample_with_language(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Next batch: ``x``, ``y`` and the language mask ``low``."""
        return sample_blocks(self.english, self.language, self.block_size, self.batch_size,
                             self.p_low, self.generator)  # fmt: skip

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Next batch: ``x`` and ``y`` (the draws of ``sample_with_language``)."""
        x, y, _ = self.sample_with_language()
        return x, y

    def state_dict(self) -> dict:
        """The generator state, for checkpoints."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        """Restore a state saved by ``state_dict``."""
        self.generator.set_state(state["generator"])


# ---------------------------------------------------------------------------------------
# statistics


@dataclass(frozen=True)
class LanguageStatistics:
    """A corpus described for the chapter (characters count the newline ending each row).

    ``overlap`` is shared / distinct: the share of the language's characters that English
    also has; ``non_ascii_share`` the share of the text's characters outside ASCII;
    ``rarest`` the least frequent characters with their counts (rarest first, ties by code
    point)."""

    language: str
    documents: int
    rows: int
    characters: int
    distinct: int
    shared: int
    overlap: float
    non_ascii_share: float
    non_ascii_distinct: int
    rows_equal_to_spanish: int
    rarest: tuple[tuple[str, int], ...]


def corpus_statistics(text: LanguageText, english: Sequence[str], rarest: int = RAREST
                      ) -> LanguageStatistics:  # fmt: skip
    """Statistics of ``text`` beside the English alphabet ``english`` (its characters,
    e.g. ``CharTokenizer.symbols``)."""
    rarest = check_int("rarest", rarest, 0)
    body = text.text
    if not body:
        raise ParameterError("text", text.language, "a corpus with at least one character")
    counts = Counter(body)
    shared = len(set(counts) & set(english))
    non_ascii = sum(n for ch, n in counts.items() if not ch.isascii())
    ordered = sorted(counts.items(), key=lambda kv: (kv[1], kv[0]))
    return LanguageStatistics(
        language=text.language,
        documents=len(text.documents),
        rows=text.rows,
        characters=len(body),
        distinct=len(counts),
        shared=shared,
        overlap=shared / len(counts),
        non_ascii_share=non_ascii / len(body),
        non_ascii_distinct=sum(not ch.isascii() for ch in counts),
        rows_equal_to_spanish=text.rows_equal_to_spanish,
        rarest=tuple(ordered[:rarest]),
    )


def statistics_table(stats: Iterable[LanguageStatistics]) -> pd.DataFrame:
    """One row per language; ``rarest`` shown as 'symbol:count' labels."""
    records = []
    for s in stats:
        record = {k: getattr(s, k) for k in LanguageStatistics.__dataclass_fields__}
        record["rarest"] = " ".join(f"{display(ch)}:{n}" for ch, n in s.rarest)
        records.append(record)
    return pd.DataFrame(records)
