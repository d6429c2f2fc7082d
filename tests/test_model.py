"""The GPT: the tied embedding, shapes, causality, initialization, dropout,
config validation and generation."""

from __future__ import annotations

import math

import pytest
import torch

from selfish_lib.engine.model import GPT, ModelConfig

SMALL = dict(vocab_size=13, block_size=16, n_layer=2, n_head=2, n_embd=16)


def build(vocab_size: int = 65, **sizes) -> GPT:
    """A GPT from flat sizes (the vocabulary beside the model config)."""
    return GPT(ModelConfig(**sizes), vocab_size)


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a shared 2-core
    machine a busy neighbour makes every OpenMP barrier stall (20x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small_model(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    return build(**{**SMALL, **overrides})


def random_idx(B: int, T: int, V: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


# --- the tie ---------------------------------------------------------------------


def test_lm_head_and_embedding_are_one_parameter():
    model = small_model()
    assert model.lm_head.weight is model.transformer.wte.weight
    assert model.embedding is model.lm_head.weight
    assert model.embedding.shape == (SMALL["vocab_size"], SMALL["n_embd"])


def test_tie_survives_a_state_dict_round_trip():
    a, b = small_model(seed=0), small_model(seed=1)
    b.load_state_dict(a.state_dict())
    assert b.lm_head.weight is b.transformer.wte.weight
    assert torch.equal(b.embedding, a.embedding)


def test_tied_matrix_gets_gradient_from_lookup_and_output():
    model = small_model()
    idx = random_idx(2, 8, SMALL["vocab_size"])
    model(idx).sum().backward()
    grad = model.embedding.grad
    assert grad is not None and grad.abs().sum() > 0
    # both uses add into the same .grad: rows never looked up still get output gradient
    unused = sorted(set(range(SMALL["vocab_size"])) - set(idx.flatten().tolist()))
    assert unused, "the test needs a token absent from idx"
    assert grad[unused].abs().sum() > 0


def expected_param_count(V: int, T: int, L: int, C: int, bias: bool = True) -> int:
    b = 1 if bias else 0
    per_block = (
        (C + b * C)  # ln_1
        + (3 * C * C + b * 3 * C)  # c_attn
        + (C * C + b * C)  # attn.c_proj
        + (C + b * C)  # ln_2
        + (4 * C * C + b * 4 * C)  # c_fc
        + (4 * C * C + b * C)  # mlp.c_proj
    )
    return V * C + T * C + L * per_block + (C + b * C)  # wte (= lm_head), wpe, blocks, ln_f


@pytest.mark.parametrize("bias", [True, False])
def test_num_params_counts_the_tied_matrix_once(bias):
    model = small_model(bias=bias)
    V, T, L, C = (SMALL[k] for k in ("vocab_size", "block_size", "n_layer", "n_embd"))
    assert model.num_params() == expected_param_count(V, T, L, C, bias)
    with_duplicates = sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False))
    assert with_duplicates - model.num_params() == V * C


# --- shapes and causality -----------------------------------------------------------


@pytest.mark.parametrize(("B", "T"), [(1, 1), (3, 7), (2, 16)])
def test_forward_shape(B, T):
    model = small_model()
    logits = model(random_idx(B, T, SMALL["vocab_size"]))
    assert logits.shape == (B, T, SMALL["vocab_size"])
    assert torch.isfinite(logits).all()


def test_hidden_shape_and_head():
    model = small_model().eval()
    idx = random_idx(2, 5, SMALL["vocab_size"])
    h = model.hidden(idx)
    assert h.shape == (2, 5, SMALL["n_embd"])
    torch.testing.assert_close(model(idx), h @ model.embedding.T)


def test_hidden_accepts_precomputed_token_embeddings():
    model = small_model().eval()
    idx = random_idx(2, 5, SMALL["vocab_size"])
    tok = model.embed(idx).detach().requires_grad_(True)
    h = model.hidden(idx, tok)
    torch.testing.assert_close(h, model.hidden(idx))
    h.sum().backward()
    assert tok.grad is not None and tok.grad.abs().sum() > 0


@pytest.mark.parametrize("t", [0, 3, 9, 15])
def test_causality_future_tokens_do_not_change_past_logits(t):
    V = SMALL["vocab_size"]
    model = small_model().eval()
    idx = random_idx(2, 16, V)
    changed = idx.clone()
    changed[:, t] = (idx[:, t] + 1) % V
    with torch.no_grad():
        a, b = model(idx), model(changed)
    assert torch.equal(a[:, :t], b[:, :t])
    # and the change is visible from position t on
    assert not torch.allclose(a[:, t:], b[:, t:])


def test_sequence_longer_than_block_size_raises():
    model = small_model()
    too_long = random_idx(1, SMALL["block_size"] + 1, SMALL["vocab_size"])
    with pytest.raises(ValueError, match="block_size"):
        model(too_long)


def test_sequence_of_exactly_block_size_is_fine():
    model = small_model()
    out = model(random_idx(1, SMALL["block_size"], SMALL["vocab_size"]))
    assert out.shape[1] == SMALL["block_size"]


# --- initialization --------------------------------------------------------------


def test_init_standard_deviations():
    torch.manual_seed(0)
    cfg = ModelConfig(block_size=64, n_layer=4, n_head=4, n_embd=256)
    model = GPT(cfg, 512)
    emb = model.embedding.detach()
    assert abs(emb.mean().item()) < 1e-3
    assert emb.std().item() == pytest.approx(0.02, rel=0.02)
    wpe = model.transformer.wpe.weight.detach()
    assert wpe.std().item() == pytest.approx(0.02, rel=0.05)
    scaled = 0.02 / math.sqrt(2 * cfg.n_layer)
    proj = [p for n, p in model.named_parameters() if n.endswith("c_proj.weight")]
    assert len(proj) == 2 * cfg.n_layer  # attention and MLP projections of every block
    for p in proj:
        assert p.detach().std().item() == pytest.approx(scaled, rel=0.03)
    others = [
        p for n, p in model.named_parameters() if n.endswith(("c_attn.weight", "c_fc.weight"))
    ]
    for p in others:
        assert p.detach().std().item() == pytest.approx(0.02, rel=0.03)


def test_init_biases_zero_and_layernorm_identity():
    model = small_model()
    for name, p in model.named_parameters():
        if name.endswith(".bias"):
            assert (p == 0).all(), name
        if ".ln_" in name or name.startswith("transformer.ln_f"):
            expected = 1.0 if name.endswith("weight") else 0.0
            assert (p == expected).all(), name


def test_bias_false_has_no_bias_parameters():
    model = small_model(bias=False)
    names = [n for n, _ in model.named_parameters()]
    assert not [n for n in names if n.endswith("bias")]
    assert all(m.bias is None for m in model.modules() if isinstance(m, torch.nn.Linear))
    # the default does have biases
    assert any(n.endswith("bias") for n, _ in small_model().named_parameters())


# --- dropout ---------------------------------------------------------------------


def test_dropout_is_active_in_train_mode_only():
    model = small_model(dropout=0.3)
    idx = random_idx(2, 16, SMALL["vocab_size"])
    model.train()
    assert not torch.equal(model(idx), model(idx))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(idx), model(idx))


def test_no_dropout_train_mode_is_deterministic():
    model = small_model(dropout=0.0).train()
    idx = random_idx(2, 16, SMALL["vocab_size"])
    with torch.no_grad():
        assert torch.equal(model(idx), model(idx))


# --- config validation ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        ({"n_embd": 30, "n_head": 4}, "n_embd"),
        ({"vocab_size": 0}, "vocab_size"),
        ({"block_size": 0}, "block_size"),
        ({"n_layer": 0}, "n_layer"),
        ({"n_head": 0}, "n_head"),
        ({"n_embd": 0}, "n_embd"),
        ({"n_layer": 2.0}, "n_layer"),
        ({"dropout": -0.1}, "dropout"),
        ({"dropout": 1.5}, "dropout"),
        ({"bias": 2}, "bias"),
        ({"dropout": float("nan")}, "dropout"),
    ],
)
def test_config_rejects_bad_values_naming_the_parameter(overrides, name):
    with pytest.raises(ValueError, match=rf"\b{name}="):
        build(**{**SMALL, **overrides})


def test_config_divisibility_message_names_n_head():
    with pytest.raises(ValueError, match=r"n_embd=30.*n_head=4"):
        ModelConfig(n_embd=30, n_head=4)


def test_config_defaults_are_valid():
    cfg = ModelConfig()
    assert cfg.n_embd % cfg.n_head == 0
    assert GPT(cfg, 65).config is cfg


def test_config_normalises_types_and_rejects_dropout_one():
    assert ModelConfig(dropout=0, bias=1) == ModelConfig(dropout=0.0, bias=True)
    assert isinstance(ModelConfig(dropout=0).dropout, float)
    assert ModelConfig(bias=1).bias is True
    with pytest.raises(ValueError, match=r"dropout=1\.0"):
        ModelConfig(dropout=1.0)


# --- generation ------------------------------------------------------------------


def test_generate_length_and_vocabulary():
    model = small_model().eval()
    prompt = random_idx(3, 4, SMALL["vocab_size"])
    out = model.generate(prompt, 20, generator=torch.Generator().manual_seed(0))
    assert out.shape == (3, 24)
    assert torch.equal(out[:, :4], prompt)
    assert out.min() >= 0 and out.max() < SMALL["vocab_size"]


def test_generate_beyond_block_size_crops_the_context():
    model = small_model().eval()
    prompt = random_idx(1, SMALL["block_size"], SMALL["vocab_size"])
    out = model.generate(prompt, 5, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, SMALL["block_size"] + 5)


def test_generate_zero_new_tokens_returns_prompt():
    model = small_model().eval()
    prompt = random_idx(2, 3, SMALL["vocab_size"])
    assert torch.equal(model.generate(prompt, 0), prompt)


def test_generate_with_seeded_generator_is_reproducible():
    model = small_model().eval()
    prompt = random_idx(2, 3, SMALL["vocab_size"])
    a = model.generate(prompt, 30, generator=torch.Generator().manual_seed(5))
    b = model.generate(prompt, 30, generator=torch.Generator().manual_seed(5))
    c = model.generate(prompt, 30, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def greedy(model: GPT, idx: torch.Tensor, n: int) -> torch.Tensor:
    with torch.no_grad():
        for _ in range(n):
            logits = model(idx[:, -model.config.block_size :])[:, -1, :]
            idx = torch.cat([idx, logits.argmax(-1, keepdim=True)], dim=1)
    return idx


@pytest.mark.parametrize("seed", [0, 1])
def test_tiny_top_p_is_greedy_decoding(seed):
    # a sharper model than the near-uniform init, so the argmax is unambiguous
    model = small_model()
    with torch.no_grad():
        model.embedding.mul_(20.0)
    model.eval()
    prompt = random_idx(2, 3, SMALL["vocab_size"], seed=seed)
    out = model.generate(prompt, 25, top_p=1e-6, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(out, greedy(model, prompt, 25))


def test_top_p_restricts_to_the_nucleus():
    """With top_p=0.5 no token outside the smallest prefix of mass >= 0.5 is drawn."""
    model = small_model()
    with torch.no_grad():
        model.embedding.mul_(10.0)
    model.eval()
    prompt = random_idx(1, 3, SMALL["vocab_size"])
    with torch.no_grad():
        probs = torch.softmax(model(prompt)[0, -1].float(), -1)
    sorted_p, order = probs.sort(descending=True)
    n_keep = int((sorted_p.cumsum(0) - sorted_p < 0.5).sum())
    nucleus = set(order[:n_keep].tolist())
    assert n_keep < SMALL["vocab_size"]
    g = torch.Generator().manual_seed(0)
    drawn = {int(model.generate(prompt, 1, top_p=0.5, generator=g)[0, -1]) for _ in range(200)}
    assert drawn <= nucleus


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"temperature": 0.0}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"max_new_tokens": -1}, "max_new_tokens"),
    ],
)
def test_generate_rejects_bad_parameters(kwargs, name):
    model = small_model().eval()
    args = {"max_new_tokens": 2, **kwargs}
    with pytest.raises(ValueError, match=name):
        model.generate(random_idx(1, 2, SMALL["vocab_size"]), **args)
