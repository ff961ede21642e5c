"""model.py: GPT-2-124M's defaults and shapes, causal attention, tied embeddings, the initialization,
the parameter and FLOP counts, the weight-decay groups, generation, and the fused cross-entropy
(the chunked loss) against the unfused one: losses and gradients, under autocast and compile."""

import math

import pytest
import torch
import torch.nn.functional as F

import model as model_module
from model import GPT, GPTConfig, fused_cross_entropy


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
    logits, loss = model(idx, torch.randint(0, 512, (3, 16)))
    assert logits is None  # the fused loss never forms them
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


def unfused_loss(model, idx, targets):
    """The loss as nanoGPT computes it: cross-entropy over the full logits."""
    logits, _ = model(idx)
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-6), (torch.float64, 1e-14)])
def test_fused_cross_entropy_matches_unfused(dtype, tol):
    torch.manual_seed(0)
    x = torch.randn(70, 16, dtype=dtype, requires_grad=True)
    weight = torch.randn(100, 16, dtype=dtype, requires_grad=True)
    targets = torch.randint(0, 90, (70,))  # rows 90..99 stand for the padding: never targets, yet in the softmax
    expected = F.cross_entropy(x @ weight.T, targets)
    expected_grads = torch.autograd.grad(3 * expected, (x, weight))  # 3: the upstream gradient is applied
    loss = fused_cross_entropy(x, weight, targets, chunk_size=32)  # chunks of 32, 32 and 6 rows
    grads = torch.autograd.grad(3 * loss, (x, weight))
    assert loss.dtype == dtype and loss.item() == pytest.approx(expected.item(), rel=tol)
    for g, e in zip(grads, expected_grads):
        assert g.dtype == dtype and torch.allclose(g, e, rtol=tol, atol=tol)
    with torch.no_grad():  # evaluation: the loss alone, no gradients computed
        assert fused_cross_entropy(x, weight, targets, chunk_size=32).item() == pytest.approx(expected.item(), rel=tol)


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-6), (torch.float64, 1e-14)])
def test_model_loss_and_every_gradient_match_unfused(monkeypatch, dtype, tol):
    monkeypatch.setitem(model_module.LOSS_CHUNK, "cpu", 20)  # 48 tokens: chunks of 20, 20 and 8
    model = tiny().to(dtype)
    idx, targets = torch.randint(0, 512, (3, 16)), torch.randint(0, 512, (3, 16))
    expected = unfused_loss(model, idx, targets)
    expected.backward()
    expected_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    _, loss = model(idx, targets)
    loss.backward()
    assert loss.item() == pytest.approx(expected.item(), rel=tol)
    for n, p in model.named_parameters():  # the tied embedding gets both of its gradients
        assert torch.allclose(p.grad, expected_grads[n], rtol=tol, atol=tol), n


def test_fused_loss_under_bf16_autocast():
    """The code path of bf16 autocast on CUDA, run on the CPU: bf16 products, float32 loss and gradients."""
    model = tiny()
    idx, targets = torch.randint(0, 512, (3, 16)), torch.randint(0, 512, (3, 16))
    expected = unfused_loss(model, idx, targets)
    expected.backward()
    expected_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, loss = model(idx, targets)
    loss.backward()
    # the bf16 logits are off by ~1e-4 here; a bf16 log-sum-exp (~6.2, spacing 1/32) would be off by ~1e-2
    assert loss.dtype == torch.float32 and loss.item() == pytest.approx(expected.item(), abs=5e-4)
    for n, p in model.named_parameters():
        assert p.grad.dtype == torch.float32
        assert torch.allclose(p.grad, expected_grads[n], rtol=0.05, atol=0.02 * expected_grads[n].abs().max()), n


def test_fused_loss_under_torch_compile():
    model = tiny()
    idx, targets = torch.randint(0, 512, (3, 16)), torch.randint(0, 512, (3, 16))
    _, expected = model(idx, targets)
    expected.backward()
    expected_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    _, loss = torch.compile(model)(idx, targets)
    loss.backward()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    for n, p in model.named_parameters():
        assert torch.allclose(p.grad, expected_grads[n], rtol=1e-5, atol=1e-7), n


def test_fused_loss_of_a_very_wrong_prediction_is_finite_and_exact():
    """Logits 200 apart: the target's probability underflows float32 (e^-200), its loss does not."""
    x = torch.tensor([[1.0], [1.0]], requires_grad=True)
    weight = torch.tensor([[100.0], [-100.0], [0.0]], requires_grad=True)
    targets = torch.tensor([1, 0])  # the worst token, then the best
    expected = F.cross_entropy(x @ weight.T, targets)
    expected_grads = torch.autograd.grad(expected, (x, weight))
    loss = fused_cross_entropy(x, weight, targets, chunk_size=1)
    assert torch.isfinite(loss) and loss.item() == pytest.approx(expected.item(), rel=1e-6)  # 100.0
    for g, e in zip(torch.autograd.grad(loss, (x, weight)), expected_grads):
        assert torch.allclose(g, e, rtol=1e-6, atol=1e-6)


def test_the_logits_buffer_is_kept_from_call_to_call_and_grown_when_needed(monkeypatch):
    monkeypatch.setitem(model_module.LOSS_CHUNK, "cpu", 20)
    model = tiny()

    def buffer_after_step(shape):
        idx, targets = torch.randint(0, 512, shape), torch.randint(0, 512, shape)
        _, loss = model(idx, targets)
        loss.backward()
        assert loss.item() == pytest.approx(unfused_loss(model, idx, targets).item(), rel=1e-6)
        return model.logits_buffer.tensor

    small = buffer_after_step((1, 8))  # 8 tokens: one chunk of 8 rows
    assert small.shape == (8, 512) and buffer_after_step((1, 8)).data_ptr() == small.data_ptr()
    chunk = buffer_after_step((3, 16))  # 48 tokens: chunks of 20, 20 and 8 rows
    assert chunk.shape == (20, 512) and buffer_after_step((1, 8)).data_ptr() == chunk.data_ptr()
