"""
The output layer and loss of each loss setting (model.LOSSES), forward and backward, as train.py
runs them on the device (CUDA: compiled, under bf16 autocast): the time and the peak memory per
micro-batch size, and which one loss=auto picks.

    python -m bench.loss                                   # CUDA: 16 x 1,024 and 64 x 1,024 tokens, GPT-2's sizes
    python -m bench.loss --device=cpu --tokens=1024 --n_embd=128

The time is the median over --repeats repetitions after two that compile, each timed by CUDA
events around it on a GPU (by the clock on a CPU); the peak memory is what a repetition adds to
the inputs' (CUDA only). A loss that cannot run here (liger-kernel not installed, or on a CPU)
says why in its place.
"""

import argparse
import importlib.util
import statistics
import time

import torch

from model import AUTO_LOSS, LOSSES, LogitsBuffer, output_loss


def unavailable(loss, device):
    """Why the loss cannot run on device, or None."""
    if loss == "liger" and device != "cuda":
        return "needs a GPU"
    if loss == "liger" and importlib.util.find_spec("liger_kernel") is None:
        return "liger-kernel not installed"
    return None


def measure(device, tokens, losses=LOSSES, n_embd=768, vocab_size=50304, repeats=5, compile=None):
    """{(loss, tokens): (seconds, peak bytes or None) or the reason it did not run}, for each loss and
    number of tokens; compile: as train.py's setting (None: on CUDA only)."""
    cuda = device == "cuda"
    compile = cuda if compile is None else compile
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)
    step = torch.compile(output_loss, dynamic=False) if compile else output_loss  # static shapes, as in training
    results = {}
    for n in tokens:
        torch.manual_seed(0)
        x = torch.randn(n, n_embd, device=device, requires_grad=True)  # the last LayerNorm's output: float32
        weight = (torch.randn(vocab_size, n_embd, device=device) * 0.02).requires_grad_()
        targets = torch.randint(0, vocab_size, (n,), device=device)
        for loss in losses:
            reason = unavailable(loss, device)
            if reason:
                results[loss, n] = reason
                continue
            buffer, times, peak = LogitsBuffer(), [], None
            try:
                for i in range(2 + repeats):
                    x.grad = weight.grad = None
                    if cuda:
                        torch.cuda.synchronize()
                        torch.cuda.reset_peak_memory_stats()
                        before = torch.cuda.memory_allocated()
                        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                        start.record()
                    began = time.perf_counter()
                    with autocast:
                        value = step(loss, x, weight, targets, buffer)
                    value.backward()
                    if cuda:
                        end.record()
                        end.synchronize()
                        seconds = start.elapsed_time(end) / 1e3
                        peak = torch.cuda.max_memory_allocated() - before
                    else:
                        seconds = time.perf_counter() - began
                    if i >= 2:
                        times.append(seconds)
                results[loss, n] = statistics.median(times), peak
            except torch.cuda.OutOfMemoryError:
                results[loss, n] = "out of memory"
            del buffer
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cuda", "cpu"))
    parser.add_argument("--tokens", default="16384,65536", help="comma list of tokens per micro-batch (default: %(default)s)")
    parser.add_argument("--n_embd", type=int, default=768, help="(default: %(default)s, GPT-2-124M's)")
    parser.add_argument("--vocab_size", type=int, default=50304, help="(default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help="(default: %(default)s)")
    args = parser.parse_args()
    tokens = [int(t) for t in args.tokens.split(",")]
    results = measure(args.device, tokens, n_embd=args.n_embd, vocab_size=args.vocab_size, repeats=args.repeats)
    print(f"output layer and loss, {args.n_embd} wide, {args.vocab_size:,} tokens, on {args.device}")
    print(f"  {'loss':8s}" + "".join(f"{f'{n:,} tokens':>26s}" for n in tokens))
    for loss in LOSSES:
        cells = []
        for n in tokens:
            r = results[loss, n]
            cells.append(r if isinstance(r, str) else f"{r[0] * 1e3:.1f} ms" + (f", {r[1] / 1e9:.2f} GB" if r[1] else ""))
        print(f"  {loss:8s}" + "".join(f"{c:>26s}" for c in cells))
    print(f"loss=auto picks {AUTO_LOSS[args.device]} on {args.device}; fastest: " + ", ".join(
        f"{fastest(results, n)} at {n:,} tokens" for n in tokens))


def fastest(results, tokens):
    """The loss that took the least time at this many tokens."""
    timed = {loss: r[0] for (loss, n), r in results.items() if n == tokens and not isinstance(r, str)}
    return min(timed, key=timed.get)


if __name__ == "__main__":
    main()
