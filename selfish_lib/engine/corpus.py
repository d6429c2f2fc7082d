"""The corpus: loading Tiny Shakespeare, its tokenizers (characters, or BPE subwords
over those characters), splits, frequency ranks and groups, the seeded block sampler
and the bilingual id shift.

Where the text comes from, in order: an explicit ``path``; the ``SELFISH_DATA``
environment variable; the user cache (``$XDG_CACHE_HOME/selfish-tokens``); a
download from the canonical URL into that cache. The sha256 is checked every
time, so every number in the study is tied to the exact same bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import re
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import tokenizers
import torch

from .validation import ParameterError, check_float, check_int

CORPUS_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
CORPUS_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
CORPUS_FILENAME = "tinyshakespeare.txt"
ENV_VAR = "SELFISH_DATA"
GROUP_SIZE = 10  # frequency ranks are grouped 1-10, 11-20, ... (up to 100 tokens)
N_GROUPS = 10  # larger vocabularies: ten groups of equal numbers of ranks (rank deciles)
CHARACTERS = "char"
MAX_SUBWORDS = 65536


class CorpusNotFoundError(FileNotFoundError):
    """The corpus is nowhere to be found and could not be downloaded."""


class CorpusChecksumError(ValueError):
    """A corpus file exists but its bytes are not the expected ones."""


def cache_dir() -> Path:
    """The per-user cache folder for the corpus (``$XDG_CACHE_HOME/selfish-tokens``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "selfish-tokens"


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verified(path: Path, origin: str, expected: str) -> Path:
    if not path.is_file():
        raise CorpusNotFoundError(f"{origin} points to {str(path)!r}, which is not a file")
    actual = sha256_of(path)
    if actual != expected:
        raise CorpusChecksumError(
            f"{origin}: {str(path)!r} has sha256 {actual}, expected {expected} "
            "(the Tiny Shakespeare corpus of char-rnn)"
        )
    return path


def _download(url: str, dest: Path, expected: str, timeout: float = 30.0) -> Path:
    """Download ``url`` to ``dest`` atomically, keeping it only if the sha256 matches."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".download-")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            out.write(resp.read())
        _verified(Path(tmp), f"the download from {url}", expected)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def resolve_corpus_path(
    path: str | os.PathLike | None = None,
    *,
    download: bool = True,
    url: str = CORPUS_URL,
    expected_sha256: str = CORPUS_SHA256,
) -> Path:
    """Find (or fetch) the verified corpus file and return its path.

    Raises CorpusNotFoundError with instructions when it cannot be provided, and
    CorpusChecksumError when a file is found but is not the expected corpus.
    """
    if path is not None:
        return _verified(Path(path).expanduser(), "the data_path parameter", expected_sha256)
    env = os.environ.get(ENV_VAR)
    if env:
        return _verified(Path(env).expanduser(), f"${ENV_VAR}", expected_sha256)
    cached = cache_dir() / CORPUS_FILENAME
    if cached.is_file():
        return _verified(cached, "the cached corpus", expected_sha256)
    if download:
        try:
            return _download(url, cached, expected_sha256)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = f"downloading {url} failed ({exc})"
    else:
        reason = "downloading is disabled"
    raise CorpusNotFoundError(
        "Tiny Shakespeare was not found: no data_path was given, "
        f"${ENV_VAR} is not set, {cached} does not exist, and {reason}. "
        f"Provide the file (sha256 {expected_sha256}) in one of these ways: "
        f"`export {ENV_VAR}=/path/to/tinyshakespeare.txt`, pass data_path=..., "
        f"or copy it to {cached}."
    )


def load_text(path: str | os.PathLike | None = None, *, download: bool = True) -> str:
    """The verified corpus text (see ``resolve_corpus_path`` for where it comes from)."""
    return resolve_corpus_path(path, download=download).read_text(encoding="utf-8")


# Printable stand-ins for symbols that would be invisible on a chart axis.
_DISPLAY = {"\n": "⏎", " ": "␣", "\t": "⇥"}


@dataclass(frozen=True)
class CharTokenizer:
    """Maps each distinct character of a text to an id, in sorted order.

    Ids at or above ``vocab_size`` belong to the second (low-resource) alphabet
    of the bilingual simulation: id ``i + vocab_size`` is the twin of ``i``.
    """

    symbols: tuple[str, ...]

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """Build the tokenizer from every distinct character of ``text``."""
        if not text:
            raise ValueError("invalid text='': expected a non-empty string")
        return cls(tuple(sorted(set(text))))

    @property
    def vocab_size(self) -> int:
        """Number of symbols of one alphabet."""
        return len(self.symbols)

    @property
    def _index(self) -> dict[str, int]:
        return {s: i for i, s in enumerate(self.symbols)}

    def encode(self, text: str, *, low_resource: bool = False) -> list[int]:
        """Ids of ``text``; in the second alphabet when ``low_resource``."""
        index, offset = self._index, self.vocab_size if low_resource else 0
        try:
            return [index[ch] + offset for ch in text]
        except KeyError as exc:
            raise ValueError(f"character {exc.args[0]!r} is not in the vocabulary") from None

    def decode(self, ids) -> str:
        """Text of ``ids``; ids of the second alphabet decode to their twins' symbols."""
        n = self.vocab_size
        return "".join(self.symbols[int(i) % n] for i in ids)

    def display(self, token: int) -> str:
        """A printable label for ``token`` (whitespace made visible)."""
        ch = self.symbols[int(token) % self.vocab_size]
        return _DISPLAY.get(ch, ch)

    @property
    def spec(self) -> str:
        """The tokenizer's name in a run's config: 'char'."""
        return CHARACTERS


_SPEC = re.compile(r"bpe-(\d+)")


def check_tokenizer(name: str, value) -> str:
    """A tokenizer name: 'char' (one token per character) or 'bpe-V' (BPE over the
    corpus's characters with a vocabulary of V subwords, 2 <= V <= 65536; whether the
    corpus supports V is checked when the tokenizer is trained)."""
    allowed = f"'{CHARACTERS}' or 'bpe-V' with an integer V from 2 to {MAX_SUBWORDS}"
    if value == CHARACTERS:
        return value
    match = _SPEC.fullmatch(value) if isinstance(value, str) else None
    if match is None or not 2 <= int(match.group(1)) <= MAX_SUBWORDS:
        raise ParameterError(name, value, allowed)
    return f"bpe-{int(match.group(1))}"  # bpe-01024 and bpe-1024 are one tokenizer


def subword_size(spec: str) -> int | None:
    """V of a 'bpe-V' tokenizer name; None for characters."""
    spec = check_tokenizer("tokenizer", spec)
    return None if spec == CHARACTERS else int(spec.split("-")[1])


# The pre-tokenizer keeps BPE inside words: a run of letters (with the space before it),
# of digits, of other symbols, or of whitespace. Merges across a word boundary would make
# tokens of frequent word pairs, which says more about the corpus than about the words.
_WORDS = r" ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+"


@dataclass(frozen=True)
class SubwordTokenizer:
    """BPE subwords over the characters of a corpus (not over bytes: every token is a
    string of the corpus's characters, so every id is one the text can produce), trained
    with the ``tokenizers`` package on the training split only.

    Ids below ``len(alphabet)``-ish are the characters, the rest are merges in the order
    they were learnt; as for characters, id ``i + vocab_size`` is the low-resource twin of
    ``i``. ``serialized`` is the trained tokenizer (the ``tokenizers`` JSON): its sha256
    is the tokenizer's identity, stored with every run trained on it.
    """

    spec: str
    symbols: tuple[str, ...] = field(repr=False)
    serialized: str = field(repr=False)

    @classmethod
    def train(cls, training_text: str, alphabet: tuple[str, ...], size: int) -> SubwordTokenizer:
        """BPE with ``size`` tokens learnt from ``training_text``, every character of
        ``alphabet`` a token. Deterministic: the same text and size give the same merges
        (and the same ``sha256``). Raises ParameterError when ``size`` is below the
        alphabet or above the number of tokens the text supports (pairs seen twice)."""
        spec = check_tokenizer("tokenizer", f"bpe-{size}")
        if size < len(alphabet):
            raise ParameterError(
                "tokenizer", spec, f"a vocabulary of at least {len(alphabet)} subwords "
                "(the corpus's characters, each a token)"
            )  # fmt: skip
        tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE())
        tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Split(
            tokenizers.Regex(_WORDS), behavior="isolated"
        )
        trainer = tokenizers.trainers.BpeTrainer(
            vocab_size=size, min_frequency=2, initial_alphabet=list(alphabet),
            limit_alphabet=len(alphabet), special_tokens=[], show_progress=False,
        )  # fmt: skip
        tokenizer.train_from_iterator([training_text], trainer=trainer)
        reached = tokenizer.get_vocab_size()
        if reached < size:
            raise ParameterError(
                "tokenizer", spec, f"a vocabulary of at most {reached} subwords (the training "
                "split has no more pairs seen at least twice)"
            )  # fmt: skip
        vocab = tokenizer.get_vocab()
        symbols = tuple(sorted(vocab, key=vocab.get))
        out = cls(spec, symbols, tokenizer.to_str())
        object.__setattr__(out, "_backend", tokenizer)
        return out

    @classmethod
    def from_serialized(cls, spec: str, serialized: str) -> SubwordTokenizer:
        """The tokenizer a run stored (``serialized``, its ``tokenizer.json``)."""
        backend = tokenizers.Tokenizer.from_str(serialized)
        vocab = backend.get_vocab()
        out = cls(check_tokenizer("tokenizer", spec), tuple(sorted(vocab, key=vocab.get)),
                  serialized)  # fmt: skip
        object.__setattr__(out, "_backend", backend)
        return out

    @property
    def sha256(self) -> str:
        """Hex sha256 of the trained tokenizer (its serialized form)."""
        return hashlib.sha256(self.serialized.encode("utf-8")).hexdigest()

    @property
    def vocab_size(self) -> int:
        """Number of subwords of one alphabet."""
        return len(self.symbols)

    def encode(self, text: str, *, low_resource: bool = False) -> list[int]:
        """Ids of ``text``; in the second alphabet when ``low_resource``."""
        ids = self._backend.encode(text).ids
        if sum(len(self.symbols[i]) for i in ids) != len(text):  # a character was dropped
            alphabet = {s for s in self.symbols if len(s) == 1}
            missing = next(ch for ch in text if ch not in alphabet)
            raise ValueError(f"character {missing!r} is not in the vocabulary")
        offset = self.vocab_size if low_resource else 0
        return [i + offset for i in ids]

    def decode(self, ids) -> str:
        """Text of ``ids`` (the tokens' strings joined); the second alphabet decodes as the
        first."""
        n = self.vocab_size
        return "".join(self.symbols[int(i) % n] for i in ids)

    def display(self, token: int) -> str:
        """A printable label for ``token`` (its whitespace made visible)."""
        text = self.symbols[int(token) % self.vocab_size]
        return "".join(_DISPLAY.get(ch, ch) for ch in text)

    def __getstate__(self) -> dict:
        return {"spec": self.spec, "symbols": self.symbols, "serialized": self.serialized}

    def __setstate__(self, state: dict) -> None:
        for key, value in state.items():
            object.__setattr__(self, key, value)
        object.__setattr__(self, "_backend", tokenizers.Tokenizer.from_str(self.serialized))


Tokenizer = CharTokenizer | SubwordTokenizer


# The share of the training text held out as the tuning split (``Corpus.for_tuning``):
# hyperparameters are chosen there, never on the reported validation split.
TUNING_FRACTION = 0.1


def split_ids(ids: torch.Tensor, val_fraction: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a 1-D id tensor into a leading train part and a trailing validation part."""
    val_fraction = check_float("val_fraction", val_fraction, 0.0, 1.0, min_inclusive=False)
    n_train = int(len(ids) * (1.0 - val_fraction))
    return ids[:n_train], ids[n_train:]


def group_size_for(n_ranks: int) -> int:
    """Ranks per frequency group for a vocabulary of ``n_ranks`` tokens: groups of ten up
    to 100 tokens (the 65 characters keep the groups 1-10, ..., 61-65), otherwise ten
    groups of equal numbers of ranks (rank deciles by training frequency: 1024 subwords
    give 1-103, 104-206, ..., 928-1024)."""
    return max(GROUP_SIZE, math.ceil(n_ranks / N_GROUPS))


def rank_group(rank: int, group_size: int = GROUP_SIZE, n_ranks: int | None = None) -> str:
    """Label of the frequency group of a 1-based rank, e.g. 13 -> '11-20'."""
    lo = (rank - 1) // group_size * group_size + 1
    hi = lo + group_size - 1
    if n_ranks is not None:
        hi = min(hi, n_ranks)
    return f"{lo}-{hi}"


def frequency_table(ids: torch.Tensor, tokenizer: Tokenizer) -> pd.DataFrame:
    """Per-symbol counts of ``ids`` (one alphabet), ranked by frequency.

    Columns: token, symbol, display, count, share, rank (1 = most frequent; ties
    broken by token id so ranks are unique), group (``group_size_for`` ranks: groups of
    ten for the characters, rank deciles for subwords).
    """
    n = tokenizer.vocab_size
    counts = torch.bincount(ids % n, minlength=n).tolist()
    df = pd.DataFrame(
        {
            "token": range(n),
            "symbol": list(tokenizer.symbols),
            "display": [tokenizer.display(i) for i in range(n)],
            "count": counts,
        }
    )
    df["share"] = df["count"] / max(1, int(df["count"].sum()))
    df = df.sort_values(["count", "token"], ascending=[False, True]).reset_index(drop=True)
    df["rank"] = range(1, n + 1)
    size = group_size_for(n)
    df["group"] = [rank_group(r, size, n_ranks=n) for r in df["rank"]]
    return df


@dataclass(frozen=True)
class Corpus:
    """A tokenized corpus with its 90/10 split and training-split frequency ranks.

    The split is made on the text (its first 90% of characters train), so that every
    tokenizer of one text has the same training and validation text; a subword
    tokenizer is learnt from the training text alone.
    """

    text: str
    tokenizer: Tokenizer
    train: torch.Tensor
    val: torch.Tensor
    sha256: str
    frequencies: pd.DataFrame = field(repr=False)
    val_fraction: float = 0.1

    @classmethod
    def from_text(cls, text: str, val_fraction: float = 0.1, tokenizer: str = CHARACTERS
                  ) -> Corpus:  # fmt: skip
        """Build a corpus from any text (used for synthetic corpora in tests), tokenized
        by characters or by ``tokenizer='bpe-V'``."""
        spec = check_tokenizer("tokenizer", tokenizer)
        chars = CharTokenizer.from_text(text)
        sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
        if spec == CHARACTERS:
            ids = torch.tensor(chars.encode(text), dtype=torch.long)
            train, val = split_ids(ids, val_fraction)
            tok: Tokenizer = chars
        else:
            n_train = len(split_ids(torch.empty(len(text)), val_fraction)[0])
            train_text, val_text = text[:n_train], text[n_train:]
            tok = SubwordTokenizer.train(train_text, chars.symbols, subword_size(spec))
            train = torch.tensor(tok.encode(train_text), dtype=torch.long)
            val = torch.tensor(tok.encode(val_text), dtype=torch.long)
        return cls(text, tok, train, val, sha, frequency_table(train, tok), val_fraction)

    def with_tokenizer(self, tokenizer: str) -> Corpus:
        """The same text and split under another tokenizer ('char' or 'bpe-V'); trained
        once per process for each text, split and tokenizer."""
        spec = check_tokenizer("tokenizer", tokenizer)
        if spec == self.tokenizer.spec:
            return self
        key = (self.sha256, self.val_fraction, spec)
        if key not in _TOKENIZED:
            _TOKENIZED[key] = Corpus.from_text(self.text, self.val_fraction, spec)
        return _TOKENIZED[key]

    @property
    def vocab_size(self) -> int:
        """Symbols in one alphabet."""
        return self.tokenizer.vocab_size

    def model_vocab_size(self, bilingual: bool = False) -> int:
        """The vocabulary of a model trained on this corpus: one alphabet, or the cipher's
        two (ids + vocab_size) when ``bilingual``. A real second language has its own
        (``languages.TwoLanguageCorpus``)."""
        return self.vocab_size * (2 if bilingual else 1)

    def ranks(self) -> torch.Tensor:
        """``ranks()[token]`` is the 1-based training-split frequency rank of ``token``."""
        out = torch.empty(self.vocab_size, dtype=torch.long)
        out[torch.tensor(self.frequencies["token"].to_numpy())] = torch.tensor(
            self.frequencies["rank"].to_numpy()
        )
        return out

    def for_tuning(self, fraction: float = TUNING_FRACTION) -> Corpus:
        """The corpus a tuning run sees: the training split without its last ``fraction``,
        and that tail as the split it is scored on. The reported validation split is
        never part of it. Frequency ranks and groups stay the training split's, so the
        groups are the same as in the reported runs."""
        fraction = check_float("fraction", fraction, 0.0, 1.0, min_inclusive=False)
        if fraction >= 1.0:
            raise ParameterError("fraction", fraction, "a real number strictly between 0 and 1")
        cut = int(len(self.train) * (1.0 - fraction))
        return dataclasses.replace(self, train=self.train[:cut], val=self.train[cut:])

    def log_prior(self, bilingual: bool = False, p_low: float = 0.0) -> torch.Tensor:
        """Log of the training stream's unigram distribution over the model's tokens, add-one
        smoothed so that no token has probability 0: a symbol of the training split with
        count c is expected (1 - p_low) c times in the first alphabet and p_low c times in
        the second (bilingual), and pi = (expected + 1) / (total + V)."""
        counts = torch.bincount(self.train, minlength=self.vocab_size).double()
        if bilingual:
            counts = torch.cat([(1.0 - p_low) * counts, p_low * counts])
        smoothed = counts + 1.0
        return torch.log(smoothed / smoothed.sum()).float()

    def token_info(self, bilingual: bool = False) -> pd.DataFrame:
        """One row per model token: token, base token, symbol, display, rank, group, language."""
        base = self.frequencies.set_index("token").sort_index()
        n = self.vocab_size
        langs = ("high", "low") if bilingual else ("high",)
        frames = []
        for k, lang in enumerate(langs):
            part = base[["symbol", "display", "count", "rank", "group"]].reset_index()
            part = part.rename(columns={"token": "base_token", "count": "train_count"})
            part.insert(0, "token", part["base_token"] + k * n)
            part["language"] = lang
            frames.append(part)
        return pd.concat(frames, ignore_index=True)

    def row_info(self, bilingual: bool = False) -> pd.DataFrame:
        """One row per embedding row of the model (what the scenario log and the training
        loss per token are indexed by). Under the cipher every row serves one alphabet and
        row i + V is the evaluation row of the twin, so this is ``token_info``; a real
        second language's rows may serve both languages (``TwoLanguageCorpus.row_info``)."""
        return self.token_info(bilingual)


_TOKENIZED: dict[tuple[str, float, str], Corpus] = {}


def load_corpus(
    path: str | os.PathLike | None = None,
    *,
    val_fraction: float = 0.1,
    download: bool = True,
    tokenizer: str = CHARACTERS,
) -> Corpus:
    """Load and verify Tiny Shakespeare, tokenize it (characters, or ``tokenizer='bpe-V'``)
    and split it 90/10."""
    text = load_text(path, download=download)
    corpus = Corpus.from_text(text, val_fraction)
    assert corpus.sha256 == CORPUS_SHA256, "text round trip changed the corpus bytes"
    return corpus.with_tokenizer(tokenizer)


def shift_blocks(blocks: torch.Tensor, low: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Shift the rows of ``blocks`` selected by the bool vector ``low`` into the second alphabet."""
    return blocks + low.to(blocks.dtype).unsqueeze(-1) * vocab_size


class BlockSampler:
    """Seeded random blocks (x, y) from a 1-D id tensor, with the bilingual shift.

    Each block independently falls in the low-resource language with
    probability ``p_low`` (``low_only`` puts every block there). The random
    draws are the same whatever ``p_low`` is, so a single-language and a
    bilingual run see the same block offsets. The state (a torch.Generator) can
    be saved and restored for exact resume.
    """

    def __init__(
        self,
        data: torch.Tensor,
        block_size: int,
        batch_size: int,
        seed: int,
        vocab_size: int,
        p_low: float = 0.0,
        low_only: bool = False,
    ) -> None:
        self.block_size = check_int("block_size", block_size, 1)
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.p_low = check_float("p_low", p_low, 0.0, 1.0)
        if len(data) <= block_size + 1:
            raise ValueError(
                f"invalid block_size={block_size}: expected fewer than {len(data) - 1} "
                "(the length of the data minus one)"
            )
        self.data, self.vocab_size, self.low_only = data, vocab_size, low_only
        self.generator = torch.Generator().manual_seed(check_int("seed", seed, 0))

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Next batch: ``x`` and ``y`` of shape (batch_size, block_size)."""
        g, T = self.generator, self.block_size
        ix = torch.randint(len(self.data) - T - 1, (self.batch_size,), generator=g)
        coin = torch.rand(self.batch_size, generator=g)
        low = torch.ones_like(coin, dtype=torch.bool) if self.low_only else coin < self.p_low
        offsets = ix.unsqueeze(1) + torch.arange(T + 1)
        blocks = shift_blocks(self.data[offsets], low, self.vocab_size)
        return blocks[:, :-1].contiguous(), blocks[:, 1:].contiguous()

    def state_dict(self) -> dict:
        """The generator state, for checkpoints."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        """Restore a state saved by ``state_dict``."""
        self.generator.set_state(state["generator"])
