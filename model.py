"""
GPT-2 in one file, in the tradition of nanoGPT (github.com/karpathy/nanoGPT).

GPT(GPTConfig()) is GPT-2-124M: 12 pre-LayerNorm transformer blocks of causal
self-attention and a GELU MLP, learned position embeddings, and an output layer
that shares its weights with the token embedding.
"""

import math
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn import functional as F

# The output layer and loss, by the loss setting: "full" computes the logits and F.cross_entropy
# inside the compiled graph, as nanoGPT does; "chunked" is fused_cross_entropy below, which never
# holds the logits of more than a chunk; "liger" is liger-kernel's fused linear cross-entropy (GPUs).
LOSSES = ("chunked", "full", "liger")
# loss=auto: chunked on CPUs, where it was measured faster (docs/measurements.md); on GPUs nanoGPT's
# full logits, the known-good path, until gpu_check.py's loss row measures another one faster.
AUTO_LOSS = {"cpu": "chunked", "cuda": "full"}

# Tokens per chunk of the chunked loss, per device type (docs/measurements.md, docs/gpus.md).
# CPU: chosen by measurement on a 2-core CPU. CUDA: every chunk adds its gradient into the float32
# vocab x n_embd buffer, a read and a write of it, so fewer, larger chunks: a quarter of the passes of
# 2,048-token chunks, while a chunk's logits and probabilities stay a few GB (gpu_check.py times the neighbours).
LOSS_CHUNK = {"cpu": 2048, "cuda": 8192}


class LogitsBuffer:
    """Memory for one chunk's logits, reused by every chunk of every call. On a CPU, fresh memory
    costs page faults on its first write, as much as the product that fills it (docs/measurements.md)."""

    def __init__(self):
        self.tensor = None

    def get(self, rows, like, columns):
        """A (rows, columns) tensor of like's dtype and device, whose contents are undefined."""
        t = self.tensor
        if t is None or t.size(0) < rows or t.size(1) != columns or t.dtype != like.dtype or t.device != like.device:
            self.tensor = t = like.new_empty(rows, columns)
        return t[:rows]


def _chunked_cross_entropy(x, weight, targets, chunk_size, with_grads, buffer=None):
    """The summed cross-entropy of the logits x @ weight.T against targets, computed chunk_size
    rows at a time so that the full (N, vocab) logits never exist; with_grads: also the sum's
    gradients for x and weight, which cost two products per chunk while its logits are at hand.
    buffer: the LogitsBuffer to compute the logits in (None: a new one)."""
    if torch.is_autocast_enabled(x.device.type):
        return _chunked_cross_entropy_autocast(x, weight, targets, chunk_size, with_grads)
    loss = torch.zeros((), dtype=x.dtype, device=x.device)
    grad_x, grad_weight = [], torch.zeros_like(weight) if with_grads else None
    # every chunk's logits go into the buffer
    chunk_logits = (buffer or LogitsBuffer()).get(min(chunk_size, len(x)), x, weight.size(0))
    for x_c, y_c in zip(x.split(chunk_size), targets.split(chunk_size)):
        logits = torch.mm(x_c, weight.T, out=chunk_logits[:len(x_c)])
        target_logits = logits.gather(1, y_c[:, None]).squeeze(1)
        max_logits = logits.amax(dim=1)
        # softmax works on each row while it is in cache (max, sum of exponentials, scaling): one pass
        # over the logits' memory where separate max, subtract, exp, sum and divide make five; in place.
        probs = torch.softmax(logits, dim=1, out=logits)
        # log-sum-exp = max + log(sum of exp(logits - max)), and the largest probability, the max's, is
        # exactly 1 / that sum: it never underflows, unlike the target's (below e^-87 in float32).
        # Two amax passes take half the time of one max with indices.
        loss += (max_logits - target_logits - probs.amax(dim=1).log()).sum()
        if with_grads:
            grad_logits = probs
            grad_logits[torch.arange(len(y_c), device=y_c.device), y_c] -= 1
            grad_x.append(grad_logits @ weight)
            grad_weight += grad_logits.T @ x_c
    return loss, (torch.cat(grad_x) if with_grads else None), grad_weight


def _chunked_cross_entropy_autocast(x, weight, targets, chunk_size, with_grads):
    """_chunked_cross_entropy under autocast (GPUs): the products in autocast's dtype, the softmax
    and the loss in x's. Per logit, 24 bytes of memory traffic: the product's write (2), the max (2),
    the softmax's read (2) and float32 write (4), the largest probability (4), one cast of the
    gradient (4 + 2) and the two products' reads (2 + 2) (docs/gpus.md)."""
    loss = torch.zeros((), dtype=x.dtype, device=x.device)
    grad_x, grad_weight = [], torch.zeros_like(weight) if with_grads else None
    low = torch.get_autocast_dtype(x.device.type)
    with torch.autocast(x.device.type, enabled=False):  # autocast would copy the logits to float32 for the softmax
        weight, x_low = weight.to(low), x.to(low)  # cast once, not in every product
        for x_c, y_c in zip(x_low.split(chunk_size), targets.split(chunk_size)):
            logits = x_c @ weight.T
            target_logits = logits.gather(1, y_c[:, None]).squeeze(1).to(x.dtype)
            max_logits = logits.amax(dim=1).to(x.dtype)
            probs = torch.softmax(logits, dim=1, dtype=x.dtype)  # as above: the max's probability is 1 / sum
            loss += (max_logits - target_logits - probs.amax(dim=1).log()).sum()
            if with_grads:
                probs[torch.arange(len(y_c), device=y_c.device), y_c] -= 1
                grad_logits = probs.to(low)
                grad_x.append((grad_logits @ weight).to(x.dtype))
                grad_weight += grad_logits.T @ x_c
    return loss, (torch.cat(grad_x) if with_grads else None), grad_weight


class _FusedCrossEntropy(torch.autograd.Function):
    """The gradients are computed in the forward pass, where each chunk's logits are at hand:
    backward only scales them by the upstream gradient, and no logits are recomputed."""

    @staticmethod
    def forward(ctx, x, weight, targets, chunk_size, buffer):
        loss, grad_x, grad_weight = _chunked_cross_entropy(x, weight, targets, chunk_size, True, buffer)
        ctx.save_for_backward(grad_x, grad_weight)
        return loss / len(targets)

    @staticmethod
    def backward(ctx, grad_loss):
        grad_x, grad_weight = ctx.saved_tensors
        scale = grad_loss / grad_x.size(0)
        return grad_x * scale, grad_weight * scale, None, None, None


# Run eagerly inside a compiled model: dynamo cannot trace an autograd.Function that computes its
# gradients in forward (torch 2.13 stops at the first step; DDP's graph splitter refuses it on 2.4-2.5),
# and the loss is three matrix products per chunk, which compiling would not speed up.
@torch.compiler.disable
def fused_cross_entropy(x, weight, targets, chunk_size, buffer=None):
    """F.cross_entropy(x @ weight.T, targets), the mean over the N rows of x (N, C), without the
    (N, vocab) logits: memory O(chunk_size * vocab) instead of O(N * vocab). buffer: a LogitsBuffer
    to keep the chunk's memory in from call to call (None: new memory for each call)."""
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return _FusedCrossEntropy.apply(x, weight, targets, chunk_size, buffer)
    return _chunked_cross_entropy(x, weight, targets, chunk_size, False, buffer)[0] / len(targets)


@torch.compiler.disable  # liger's function, like fused_cross_entropy, computes its gradients in forward
def liger_cross_entropy(x, weight, targets):
    """liger-kernel's fused linear cross-entropy (Triton kernels: GPUs only), the mean over the N rows."""
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
    return LigerFusedLinearCrossEntropyLoss()(weight, x, targets)


def output_loss(loss, x, weight, targets, buffer=None):
    """The mean cross-entropy of the logits x @ weight.T (x: N rows) against targets, computed as the
    loss setting names it (LOSSES). buffer: the chunked loss's LogitsBuffer."""
    if loss == "full":  # nanoGPT's: under torch.compile, inductor fuses the softmax into its kernels
        return F.cross_entropy(F.linear(x, weight), targets)
    if loss == "liger":
        return liger_cross_entropy(x, weight, targets)
    return fused_cross_entropy(x, weight, targets, LOSS_CHUNK["cpu" if x.device.type == "cpu" else "cuda"], buffer)


GPT2_VOCAB_SIZE = 50257  # GPT-2's tokens: tiktoken's r50k_base, 50,000 merges, 256 bytes, <|endoftext|>
# the linear layers Hugging Face's GPT-2 keeps as Conv1D, whose weight is (in, out): ours transposed
CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def from_hf_gpt2(hf_state_dict, config):
    """A Hugging Face GPT-2's weights (nanoGPT kept its names) as this GPT's state_dict for config:
    the Conv1D weights transposed, the embedding padded with zero rows to config.vocab_size, the
    position embedding cropped to config.block_size."""
    state = {}
    for name, tensor in hf_state_dict.items():
        if name.endswith((".attn.bias", ".attn.masked_bias")) or name == "lm_head.weight":
            continue  # the causal mask's buffers, and the output layer tied to the embedding
        if name.endswith(CONV1D_WEIGHTS):
            tensor = tensor.t()
        if name == "transformer.wte.weight":
            tensor = torch.cat([tensor, tensor.new_zeros(config.vocab_size - len(tensor), tensor.size(1))])
        if name == "transformer.wpe.weight":
            tensor = tensor[:config.block_size]
        state[name] = tensor.contiguous()
    state["lm_head.weight"] = state["transformer.wte.weight"]
    return state


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

    def __init__(self, config, loss="chunked"):
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
        self.config = config
        self.loss = loss  # how forward() computes the output layer and loss: output_loss()
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
        self.logits_buffer = LogitsBuffer()  # the chunked loss's memory, kept from step to step
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
        (None, the mean cross-entropy), computed as self.loss says (output_loss)."""
        B, T = idx.size()
        assert T <= self.config.block_size, f"sequence of length {T} is longer than block_size {self.config.block_size}"
        pos = torch.arange(T, dtype=torch.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        if targets is None:
            return self.lm_head(x), None
        return None, output_loss(self.loss, x.flatten(0, 1), self.lm_head.weight, targets.flatten(), self.logits_buffer)

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


@torch.no_grad()
def mean_loss(model, tokens, batch_size, block_size, world_size=1, autocast=nullcontext()):
    """The mean loss per token over the whole sequences of block_size tokens in `tokens` (on the
    model's device), batch_size sequences at a time; with world_size > 1, over every process's
    tokens (an all-reduce). The sums stay on the device until the one read-back at the end."""
    model.eval()
    n_seq = (len(tokens) - 1) // block_size
    total = torch.tensor([0.0, n_seq * block_size], dtype=torch.float64, device=tokens.device)  # loss summed over tokens, token count
    for i in range(0, n_seq, batch_size):
        j = min(i + batch_size, n_seq)
        x = tokens[i * block_size:j * block_size].view(-1, block_size)
        y = tokens[i * block_size + 1:j * block_size + 1].view(-1, block_size)
        with autocast:
            _, loss = model(x, y)
        total[0] += loss.double() * y.numel()
    if world_size > 1:
        dist.all_reduce(total)
    model.train()
    loss_sum, count = total.tolist()
    return loss_sum / count
