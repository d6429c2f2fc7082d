"""A small GPT with tied input/output embeddings (after nanoGPT's model.py).

The one property the study depends on is the tie: ``lm_head.weight`` *is*
``wte.weight``, so every row of the embedding matrix receives gradient both as
an input (through the lookup) and as an output row (through the logits), the
three scenarios of the Selfish Tokens hypothesis. ``tie_embeddings=False`` is the
ablation: two matrices, so that scenario 2.2 (non-target rows pushed away) no
longer reaches the rows the inputs are looked up in.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .losses import nucleus_mask
from .validation import ParameterError, check_choice, check_float, check_int, check_ranged


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of the GPT, written once: a TrainConfig embeds one. The vocabulary size is
    not here: it comes from the corpus (both alphabets in bilingual runs)."""

    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 64
    dropout: float = 0.0
    bias: bool = True
    # False: separate input and output embeddings (an ablation; the run id of a tied
    # model is unchanged, since a field at its default is left out of the id)
    tie_embeddings: bool = True

    def __post_init__(self) -> None:
        for name in ("block_size", "n_layer", "n_head", "n_embd"):
            check_int(name, getattr(self, name), 1)
        # Dropout 1 would zero every activation: training could not learn anything.
        dropout = check_float("dropout", self.dropout, 0.0, 1.0)
        if dropout >= 1.0:
            raise ParameterError("dropout", self.dropout, "a real number >= 0.0 and < 1.0")
        check_choice("bias", self.bias, (True, False))
        check_choice("tie_embeddings", self.tie_embeddings, (True, False))
        # Normalised to the field types, so that equal configs are equal (and hash alike).
        object.__setattr__(self, "dropout", dropout)
        object.__setattr__(self, "bias", bool(self.bias))
        object.__setattr__(self, "tie_embeddings", bool(self.tie_embeddings))
        if self.n_embd % self.n_head:
            raise ParameterError("n_embd", self.n_embd, f"a multiple of n_head={self.n_head}")

    def to_dict(self) -> dict:
        """The sizes by field name."""
        return dataclasses.asdict(self)


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (PyTorch's cannot drop only the bias)."""

    def __init__(self, ndim: int, bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where position t only sees positions <= t."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head, self.n_embd, self.dropout = config.n_head, config.n_embd, config.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        # (B, T, C) -> (B, n_head, T, head_size)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """Position-wise feed-forward network, 4x wide, GELU."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Decoder-only transformer whose output head shares the token embedding (unless
    ``config.tie_embeddings`` is False)."""

    def __init__(self, config: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        self.config = config
        self.vocab_size = check_int("vocab_size", vocab_size, 1)
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=LayerNorm(config.n_embd, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, vocab_size, bias=False)
        # The tie: one Parameter, two uses. Its .grad is the sum of the three
        # scenarios (input lookup, target row, non-target rows).
        if config.tie_embeddings:
            self.transformer.wte.weight = self.lm_head.weight
        # Untied, every module still draws its initial weights in the same order, so
        # an untied model's output head and every other weight equal the tied model's
        # (the tied matrix is drawn twice and keeps the head's draw): the two differ
        # only in the input embedding.
        self.apply(self._init_weights)
        # GPT-2's scaled init of the projections that write into the residual
        # stream, so its variance does not grow with depth.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    @property
    def embedding(self) -> torch.Tensor:
        """The (vocab_size, n_embd) output embedding W, the rows scenarios 2.1 and 2.2
        move: the tied matrix, or the output head of an untied model."""
        return self.lm_head.weight

    @property
    def input_embedding(self) -> torch.Tensor:
        """The matrix inputs are looked up in (``embedding`` itself when tied)."""
        return self.transformer.wte.weight

    @property
    def tied(self) -> bool:
        """Whether the input and output embeddings are one matrix."""
        return self.input_embedding is self.embedding

    def num_params(self) -> int:
        """Parameter count, the tied matrix counted once."""
        return sum(p.numel() for p in self.parameters())

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        """Token embeddings of ``idx`` (B, T) -> (B, T, n_embd): the input lookup (scenario 1)."""
        return self.transformer.wte(idx)

    def hidden(self, idx: torch.Tensor, tok_emb: torch.Tensor | None = None) -> torch.Tensor:
        """Final normalized hidden states (B, T, n_embd).

        ``tok_emb`` may be passed in (as returned by ``embed``) so a caller can
        read the gradient that arrives at the lookup.
        """
        B, T = idx.shape
        if self.config.block_size < T:
            raise ValueError(
                f"invalid sequence length {T}: expected at most block_size={self.config.block_size}"
            )
        if tok_emb is None:
            tok_emb = self.embed(idx)
        pos = torch.arange(T, device=idx.device)
        x = self.transformer.drop(tok_emb + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        return self.transformer.ln_f(x)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, vocab_size) for every position."""
        return self.lm_head(self.hidden(idx))

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Sample ``max_new_tokens`` continuations of ``idx`` (B, T) with nucleus sampling."""
        check_ranged("temperature", temperature)
        check_float("top_p", top_p, 0.0, 1.0, min_inclusive=False)
        for _ in range(check_int("max_new_tokens", max_new_tokens, 0)):
            logits = self(idx[:, -self.config.block_size :])[:, -1, :] / temperature
            probs = F.softmax(logits.float(), dim=-1)
            if top_p < 1.0:
                probs = probs.masked_fill(~nucleus_mask(probs, top_p), 0.0)
            nxt = torch.multinomial(probs, 1, generator=generator)
            idx = torch.cat([idx, nxt], dim=1)
        return idx
