"""The corpus: loading Tiny Shakespeare, the character tokenizer, splits,
frequency ranks, the seeded block sampler and the bilingual id shift.

Where the text comes from, in order: an explicit ``path``; the ``SELFISH_DATA``
environment variable; the user cache (``$XDG_CACHE_HOME/selfish-tokens``); a
download from the canonical URL into that cache. The sha256 is checked every
time, so every number in the study is tied to the exact same bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from .validation import ParameterError, check_float, check_int

CORPUS_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
CORPUS_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
CORPUS_FILENAME = "tinyshakespeare.txt"
ENV_VAR = "SELFISH_DATA"
GROUP_SIZE = 10  # frequency ranks are grouped 1-10, 11-20, ...


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


# The share of the training text held out as the tuning split (``Corpus.for_tuning``):
# hyperparameters are chosen there, never on the reported validation split.
TUNING_FRACTION = 0.1


def split_ids(ids: torch.Tensor, val_fraction: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a 1-D id tensor into a leading train part and a trailing validation part."""
    val_fraction = check_float("val_fraction", val_fraction, 0.0, 1.0, min_inclusive=False)
    n_train = int(len(ids) * (1.0 - val_fraction))
    return ids[:n_train], ids[n_train:]


def rank_group(rank: int, group_size: int = GROUP_SIZE, n_ranks: int | None = None) -> str:
    """Label of the frequency group of a 1-based rank, e.g. 13 -> '11-20'."""
    lo = (rank - 1) // group_size * group_size + 1
    hi = lo + group_size - 1
    if n_ranks is not None:
        hi = min(hi, n_ranks)
    return f"{lo}-{hi}"


def frequency_table(ids: torch.Tensor, tokenizer: CharTokenizer) -> pd.DataFrame:
    """Per-symbol counts of ``ids`` (one alphabet), ranked by frequency.

    Columns: token, symbol, display, count, share, rank (1 = most frequent; ties
    broken by token id so ranks are unique), group (rank group of 10).
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
    df["group"] = [rank_group(r, n_ranks=n) for r in df["rank"]]
    return df


@dataclass(frozen=True)
class Corpus:
    """A tokenized corpus with its 90/10 split and training-split frequency ranks."""

    text: str
    tokenizer: CharTokenizer
    train: torch.Tensor
    val: torch.Tensor
    sha256: str
    frequencies: pd.DataFrame = field(repr=False)

    @classmethod
    def from_text(cls, text: str, val_fraction: float = 0.1) -> Corpus:
        """Build a corpus from any text (used for synthetic corpora in tests)."""
        tok = CharTokenizer.from_text(text)
        ids = torch.tensor(tok.encode(text), dtype=torch.long)
        train, val = split_ids(ids, val_fraction)
        sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
        return cls(text, tok, train, val, sha, frequency_table(train, tok))

    @property
    def vocab_size(self) -> int:
        """Symbols in one alphabet."""
        return self.tokenizer.vocab_size

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


def load_corpus(
    path: str | os.PathLike | None = None, *, val_fraction: float = 0.1, download: bool = True
) -> Corpus:
    """Load and verify Tiny Shakespeare, tokenize it and split it 90/10."""
    text = load_text(path, download=download)
    corpus = Corpus.from_text(text, val_fraction)
    assert corpus.sha256 == CORPUS_SHA256, "text round trip changed the corpus bytes"
    return corpus


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
