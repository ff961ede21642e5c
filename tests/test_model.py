import math

import pytest
import torch

from model import GPT, GPTConfig


def tiny(**kw):
    torch.manual_seed(0)
    return GPT(GPTConfig(**{"block_size": 16, "vocab_size": 512, "n_layer": 2, "n_head": 2, "n_embd": 32, **kw}))


def test_defaults_are_gpt2_124m():
    c = GPTConfig()
    assert (c.block_size, c.vocab_size, c.n_layer, c.n_head, c.n_embd, c.dropout) == (1024, 50304, 12, 12, 768, 0.0)


def test_shapes_and_loss_at_init():
    model = tiny()
    idx = torch.randint(0, 512, (3, 16))
    logits, loss = model(idx)
    assert logits.shape == (3, 16, 512) and loss is None
    _, loss = model(idx, torch.randint(0, 512, (3, 16)))
    # small initial weights make the prediction almost uniform
    assert loss.item() == pytest.approx(math.log(512), abs=0.05)


def test_too_long_sequence_is_refused():
    with pytest.raises(AssertionError, match="block_size"):
        tiny()(torch.zeros(1, 17, dtype=torch.long))


def test_tied_embedding_and_output_weights():
    model = tiny()
    assert model.lm_head.weight is model.transformer.wte.weight
    sd = model.state_dict()
    assert sd["lm_head.weight"].data_ptr() == sd["transformer.wte.weight"].data_ptr()
    other = tiny()
    other.load_state_dict({k: v + 1 for k, v in sd.items()})
    assert other.lm_head.weight is other.transformer.wte.weight


def test_init_scales_residual_projections():
    model = tiny(n_layer=8, n_embd=256, n_head=4)
    block = model.transformer.h[3]
    assert block.attn.c_attn.weight.std().item() == pytest.approx(0.02, rel=0.05)
    for proj in (block.attn.c_proj, block.mlp.c_proj):
        assert proj.weight.std().item() == pytest.approx(0.02 / math.sqrt(2 * 8), rel=0.05)
        assert proj.bias.abs().max().item() == 0


def test_attention_is_causal():
    model = tiny()
    idx = torch.randint(0, 512, (1, 16))
    changed = idx.clone()
    changed[0, 10] = (idx[0, 10] + 1) % 512
    a, _ = model(idx)
    b, _ = model(changed)
    assert torch.equal(a[0, :10], b[0, :10])
    assert not torch.allclose(a[0, 10:], b[0, 10:])


def test_num_params_and_flops_per_token():
    model = tiny()
    unique = sum(p.numel() for p in model.parameters())
    assert unique == sum(p.numel() for n, p in model.named_parameters(remove_duplicate=False) if n != "lm_head.weight")
    assert model.num_params(non_embedding=False) == unique
    assert model.num_params() == unique - 16 * 32  # without the position embedding
    assert model.flops_per_token() == 6 * model.num_params() + 12 * 2 * 2 * 16 * 16
    assert model.estimate_mfu(1000.0, model.flops_per_token() * 4000.0) == pytest.approx(0.25)
    # GPT-2-124M: the well-known 124M parameters (with the padded vocabulary)
    with torch.device("meta"):
        assert GPT(GPTConfig()).num_params(non_embedding=False) == 124_475_904


def test_optim_groups_decay_matrices_only():
    model = tiny()
    decay, no_decay = model.optim_groups(0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    ids = [id(p) for p in decay["params"] + no_decay["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())  # each parameter once


def test_generate():
    model = tiny()
    torch.manual_seed(1)
    out = model.generate(torch.zeros(2, 10, dtype=torch.long), max_new_tokens=12, temperature=0.8, top_k=5)
    assert out.shape == (2, 22)  # longer than block_size: the model reads the last 16 tokens
    assert torch.equal(out[:, :10], torch.zeros(2, 10, dtype=torch.long))
    assert out.min() >= 0 and out.max() < 512
    torch.manual_seed(1)
    assert torch.equal(out, model.generate(torch.zeros(2, 10, dtype=torch.long), 12, temperature=0.8, top_k=5))
    # top_k=1 is greedy decoding: the argmax of the logits
    greedy = model.generate(out[:, :16], max_new_tokens=1, top_k=1)
    assert torch.equal(greedy[:, -1], model(out[:, :16])[0][:, -1].argmax(-1))
