"""
GPT-2 in one file, in the tradition of nanoGPT (github.com/karpathy/nanoGPT).

GPT(GPTConfig()) is GPT-2-124M: 12 pre-LayerNorm transformer blocks of causal
self-attention and a GELU MLP, learned position embeddings, and an output layer
that shares its weights with the token embedding.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F


# Tokens per chunk of the fused output layer + loss, chosen by measurement on this repository's
# 2-core CPU (quiet, 2 threads): configs/cpu.py's 4,096 tokens, forward+backward of the loss alone,
# the variants interleaved in one process, minimum of 3: chunks of 512 and 1,024 tokens took 1.20 s,
# 256 1.24 s, 2,048 1.23 s, 4,096 1.33 s; the unfused F.cross_entropy(lm_head(x), y) 1.96 s.
# 1,024 keeps a chunk's logits at 0.2 GB. Recomputing the logits in backward instead of computing
# the gradients in forward took 1.56x as long (measured under load with an earlier version).
LOSS_CHUNK = 1024


def _chunked_cross_entropy(x, weight, targets, chunk_size, with_grads):
    """The summed cross-entropy of the logits x @ weight.T against targets, computed chunk_size
    rows at a time so that the full (N, vocab) logits never exist; with_grads: also the sum's
    gradients for x and weight, which cost two products per chunk while its logits are at hand."""
    loss = torch.zeros((), dtype=x.dtype, device=x.device)
    grad_x, grad_weight = [], torch.zeros_like(weight) if with_grads else None
    autocast = torch.is_autocast_enabled(x.device.type)
    # Without autocast every chunk's logits go into one buffer: on a CPU a new 0.2 GB tensor
    # per chunk costs as much in page faults (first writes to fresh memory) as its product.
    buffer = None if autocast else x.new_empty(min(chunk_size, len(x)), weight.size(0))
    for x_c, y_c in zip(x.split(chunk_size), targets.split(chunk_size)):
        if autocast:  # the product in bf16, the log-sum-exp and softmax in x's precision
            logits = (x_c @ weight.T).to(x.dtype)
        else:
            logits = torch.mm(x_c, weight.T, out=buffer[:len(x_c)])
        target_logits = logits.gather(1, y_c[:, None]).squeeze(1)
        # the log-sum-exp and the softmax share exp(logits - max), computed in place: one pass
        # fewer over the logits than torch.logsumexp followed by a softmax, and no new tensor
        max_logits = logits.amax(dim=1)
        exps = logits.sub_(max_logits[:, None]).exp_()
        sum_exps = exps.sum(dim=1)
        loss += (max_logits + sum_exps.log() - target_logits).sum()
        if with_grads:
            grad_logits = exps.div_(sum_exps[:, None])  # the softmax
            grad_logits[torch.arange(len(y_c), device=y_c.device), y_c] -= 1
            grad_x.append((grad_logits @ weight).to(x.dtype))
            grad_weight += grad_logits.T @ x_c
    return loss, (torch.cat(grad_x) if with_grads else None), grad_weight


class _FusedCrossEntropy(torch.autograd.Function):
    """The gradients are computed in the forward pass, where each chunk's logits are at hand:
    backward only scales them by the upstream gradient, and no logits are recomputed."""

    @staticmethod
    def forward(ctx, x, weight, targets, chunk_size):
        loss, grad_x, grad_weight = _chunked_cross_entropy(x, weight, targets, chunk_size, with_grads=True)
        ctx.save_for_backward(grad_x, grad_weight)
        return loss / len(targets)

    @staticmethod
    def backward(ctx, grad_loss):
        grad_x, grad_weight = ctx.saved_tensors
        scale = grad_loss / grad_x.size(0)
        return grad_x * scale, grad_weight * scale, None, None


def fused_cross_entropy(x, weight, targets, chunk_size):
    """F.cross_entropy(x @ weight.T, targets), the mean over the N rows of x (N, C), without the
    (N, vocab) logits: memory O(chunk_size * vocab) instead of O(N * vocab)."""
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return _FusedCrossEntropy.apply(x, weight, targets, chunk_size)
    return _chunked_cross_entropy(x, weight, targets, chunk_size, with_grads=False)[0] / len(targets)


@dataclass
class GPTConfig:
    block_size: int = 1024  # longest sequence the model can read
    vocab_size: int = 50304  # GPT-2's 50257 tokens padded up to a multiple of 64: faster matmuls
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0  # one pass over the data does not overfit, so pretraining needs none
    bias: bool = True  # biases in Linear and LayerNorm layers, as GPT-2 has them


class CausalSelfAttention(nn.Module):

    def __init__(self, config):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v of all heads in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.c_proj.RESIDUAL_PROJECTION = True  # see GPT._init_weights
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.dropout = config.dropout

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        # (B, T, C) -> (B, n_head, T, head_size): every head attends independently
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        # the fused kernel (flash attention on GPU) never materializes the T x T attention matrix
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")  # the approximation GPT-2 was trained with
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.c_proj.RESIDUAL_PROJECTION = True
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x):
        # pre-LayerNorm: the residual stream itself is never normalized, which keeps deep stacks trainable
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # weight tying: one matrix embeds tokens and scores them, saving vocab_size * n_embd parameters
        self.lm_head.weight = self.transformer.wte.weight
        self.apply(self._init_weights)

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            std = 0.02
            if getattr(module, "RESIDUAL_PROJECTION", False):
                # every block adds two projections to the residual stream: scaling them by
                # 1/sqrt(2 * n_layer) keeps its variance at init independent of depth (GPT-2 paper)
                std /= math.sqrt(2 * self.config.n_layer)
            torch.nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets=None):
        """(logits (B, T, vocab_size), None) for token ids idx (B, T); with targets (B, T):
        (None, the mean cross-entropy), computed by the fused output layer without the logits."""
        B, T = idx.size()
        assert T <= self.config.block_size, f"sequence of length {T} is longer than block_size {self.config.block_size}"
        pos = torch.arange(T, dtype=torch.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        if targets is None:
            return self.lm_head(x), None
        return None, fused_cross_entropy(x.flatten(0, 1), self.lm_head.weight, targets.flatten(), LOSS_CHUNK)

    def num_params(self, non_embedding=True):
        """Parameter count, the tied embedding counted once. The position embedding is
        left out by default: it costs no FLOPs, so it does not belong in the MFU estimate."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wpe.weight.numel()
        return n

    def flops_per_token(self):
        """Training FLOPs per token (forward and backward), as in the PaLM paper, appendix B:
        6 per parameter, plus the attention scores and their weighted sum over a full context."""
        L, H, Q, T = self.config.n_layer, self.config.n_head, self.config.n_embd // self.config.n_head, self.config.block_size
        return 6 * self.num_params() + 12 * L * H * Q * T

    def estimate_mfu(self, tokens_per_s, peak_flops):
        """Model FLOPs utilization: the share of the hardware's peak FLOP/s that training uses."""
        return self.flops_per_token() * tokens_per_s / peak_flops

    def optim_groups(self, weight_decay):
        """Parameter groups for the optimizer: weight decay on the matrices (linear layers and
        embeddings) only, not on biases and LayerNorm gains, which set scales rather than features."""
        params = list(self.parameters())  # the tied embedding appears once
        return [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None):
        """Extend the token ids idx (B, T) by max_new_tokens sampled tokens, each fed back in.
        Call model.eval() first when the model has dropout."""
        for _ in range(max_new_tokens):
            idx_cond = idx[:, -self.config.block_size:]  # the model sees at most block_size tokens
            logits, _ = self(idx_cond)
            logits = logits[:, -1, :] / temperature
            if top_k is not None:
                v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                logits[logits < v[:, [-1]]] = -float("inf")
            idx_next = torch.multinomial(F.softmax(logits, dim=-1), num_samples=1)
            idx = torch.cat((idx, idx_next), dim=1)
        return idx
