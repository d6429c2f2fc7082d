"""Generated text: reproducible, in the requested alphabet, decoded to symbols."""

from __future__ import annotations

import pytest
import torch

from selfish_lib.engine.model import GPT, ModelConfig
from selfish_lib.engine.samples import generate_text


@pytest.fixture
def bilingual_model(tiny_corpus):
    torch.manual_seed(0)
    V = tiny_corpus.vocab_size
    return GPT(ModelConfig(block_size=16, n_layer=1, n_head=1, n_embd=8), 2 * V)


def test_samples_are_reproducible_and_decoded(bilingual_model, tiny_corpus):
    a = generate_text(bilingual_model, tiny_corpus.tokenizer, "low", 40, seed=3, prompt="e")
    b = generate_text(bilingual_model, tiny_corpus.tokenizer, "low", 40, seed=3, prompt="e")
    assert a == b and len(a.text) == 40
    assert set(a.text) <= set(tiny_corpus.tokenizer.symbols)
    assert 0.0 <= a.in_alphabet <= 1.0


def test_a_model_that_only_writes_one_alphabet_is_measured(tiny_corpus, bilingual_model):
    V = tiny_corpus.vocab_size
    # A constant hidden state (LayerNorm weight 0, bias 1) and output rows of -5 / +5 make
    # every low-alphabet logit far above every high one: it always writes 'low'.
    with torch.no_grad():
        bilingual_model.transformer.ln_f.weight.zero_()
        bilingual_model.transformer.ln_f.bias.fill_(1.0)
        bilingual_model.lm_head.weight[:V] = -5.0
        bilingual_model.lm_head.weight[V:] = 5.0
    high = generate_text(bilingual_model, tiny_corpus.tokenizer, "high", 30, prompt="e")
    low = generate_text(bilingual_model, tiny_corpus.tokenizer, "low", 30, prompt="e")
    assert high.in_alphabet == 0.0 and low.in_alphabet == 1.0


def test_bad_arguments(tiny_corpus, bilingual_model):
    with pytest.raises(ValueError, match="language"):
        generate_text(bilingual_model, tiny_corpus.tokenizer, "french")
    single = GPT(ModelConfig(block_size=8, n_layer=1, n_head=1, n_embd=8), tiny_corpus.vocab_size)
    with pytest.raises(ValueError, match="single alphabet"):
        generate_text(single, tiny_corpus.tokenizer, "low")
    with pytest.raises(ValueError, match="length"):
        generate_text(bilingual_model, tiny_corpus.tokenizer, "high", 0)
