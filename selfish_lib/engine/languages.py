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
- **statistics** of the corpus for the chapter (``corpus_statistics``).

``elotl`` is imported only when a corpus is loaded from the installed package, so that
everything else (and the cipher) works without it.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.metadata
import io
import os
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd
import torch

# _DISPLAY: the stand-ins the English alphabet shows for whitespace, shown alike here
from .corpus import _DISPLAY, CharTokenizer, CorpusChecksumError, group_size_for, rank_group
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
) -> LanguageCorpus:
    """Load, split and encode a real language beside the English tokenizer ``english``."""
    text = load_language(language, path)
    split = split_by_document(text, val_fraction)
    vocab = build_vocabulary(english, split, alphabet)
    train = torch.tensor(vocab.encode(split.train_text), dtype=torch.long)
    val = torch.tensor(vocab.encode(split.val_text), dtype=torch.long)
    return LanguageCorpus(split, vocab, train, val, text.sha256, text.elotl_version)


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
    and restore (for an exact resume)."""

    def __init__(self, english: torch.Tensor, language: torch.Tensor, block_size: int,
                 batch_size: int, seed: int, p_low: float) -> None:  # fmt: skip
        self.block_size = check_int("block_size", block_size, 1)
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.p_low = check_float("p_low", p_low, 0.0, 1.0)
        self.english = _check_stream("english", english, self.block_size)
        self.language = _check_stream("language", language, self.block_size)
        self.generator = torch.Generator().manual_seed(check_int("seed", seed, 0))

    def sample(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Next batch: ``x``, ``y`` and the language mask ``low``."""
        return sample_blocks(self.english, self.language, self.block_size, self.batch_size,
                             self.p_low, self.generator)  # fmt: skip

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
