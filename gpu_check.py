"""
The first command to run on a machine with GPUs: checks, in under 10 minutes, what no CPU
can (compile, DDP and autocast together, the compiled optimizer's kernels, memory, speed),
prints one table (check, value, expectation, pass/fail) and writes it as JSON.

    python gpu_check.py                          # every check; the table also in gpu_check.json
    python gpu_check.py --only smoke,memory      # some of them

On a machine without a GPU it says so in one line and exits 0. --device=cpu runs the checks
that need no GPU on the CPU (the tests do), skipping the others. The exit status is 1 when a
check fails. Each check runs in processes of its own, on synthetic data in a temporary folder.
"""

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from prepare_fineweb import write_shard

REPO = os.path.dirname(os.path.abspath(__file__))
SMALL = ["--n_layer=2", "--n_head=2", "--n_embd=128", "--block_size=128", "--batch_size=8", "--eval_tokens=4096",
         "--total_batch_size=1024", "--warmup_steps=2"]  # a small GPT for the checks that compare runs
BF16_TOLERANCE = 0.05  # nats: bf16 autocast's training losses against float32's over 20 steps


def synthetic_data(folder, tokens=400_000):
    """Shards of a learnable token stream (mostly the next token is a function of the last)."""
    rng = np.random.default_rng(0)
    stream = rng.integers(0, 50257, tokens).astype(np.uint16)
    follow = rng.random(tokens) < 0.8
    stream[1:][follow[1:]] = (stream[:-1][follow[1:]].astype(np.int64) * 7 + 3) % 50257
    os.makedirs(folder, exist_ok=True)
    write_shard(os.path.join(folder, "fineweb_val_000000.bin"), stream[:tokens // 4])
    write_shard(os.path.join(folder, "fineweb_train_000001.bin"), stream[tokens // 4:])
    return folder


def run(command, timeout=900, env=None):
    """(exit status, output) of a command run from the repository."""
    p = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})
    return p.returncode, p.stdout + p.stderr


def train_command(nproc, *args):
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc else []
    return [sys.executable, *launcher, "train.py", *args]


def result_of(out_dir):
    with open(os.path.join(out_dir, "result.json")) as f:
        return json.load(f)


def check_smoke(ctx, nproc):
    """3 steps of GPT-2-124M under torchrun: compiled, DDP, the dtype's autocast."""
    out = os.path.join(ctx.tmp, f"smoke{nproc}")
    code, output = run(train_command(nproc, "configs/pace.py", f"--data_dir={ctx.data}", f"--out_dir={out}",
                                     f"--device={ctx.device}", "--compile=True", "--batch_size=2",
                                     f"--total_batch_size={2 * 1024 * nproc}", "--max_steps=3", "--eval_interval=3",
                                     "--eval_tokens=8192", "--warmup_steps=1"))
    if code != 0:
        return f"exit {code}: {output.strip().splitlines()[-1][:120] if output.strip() else ''}", "completes", False
    summary = result_of(out)["summary"]
    return (f"{summary['status']}, val loss {summary['final_val_loss']:.3f}", "completed, finite loss",
            summary["status"] == "completed" and np.isfinite(summary["final_val_loss"]))


def check_optimizer(ctx):
    """PACE's compiled step, compiled with an empty cache, against fused AdamW (bench/optimizer.py);
    and the sizes the Triton kernels were compiled for, which set their block sizes."""
    cache = tempfile.mkdtemp(dir=ctx.tmp)
    code, output = run([sys.executable, "-m", "bench.optimizer", "--device", ctx.device, "--repeats", "5"],
                       env={"TORCHINDUCTOR_CACHE_DIR": cache})
    match = re.search(r"^\s+PACE fused\s+[\d.]+ ms\s+[\d.]+ ms\s+([\d.]+)x", output, re.M)
    if code != 0 or not match:
        return f"exit {code}: {output.strip().splitlines()[-1][:120] if output.strip() else ''}", "<= 1.5x", False
    hints = [int(h) for path in glob.glob(os.path.join(cache, "**", "*.py"), recursive=True)
             for h in re.findall(r"size_hints=\{'x': (\d+)", open(path, errors="replace").read())]
    smallest = min(hints) if hints else None
    value = f"{float(match.group(1)):.2f}x fused AdamW; smallest kernel size hint {smallest}"
    return value, "<= 1.5x; hints >= 131072", float(match.group(1)) <= 1.5 and (smallest is None or smallest >= 2 ** 17)


def check_loss_chunk(ctx):
    """Training throughput at GPT-2 sizes with model.py's loss chunk and its neighbours."""
    import model
    chosen = model.LOSS_CHUNK["cuda"]
    speeds = {}
    for chunk in (chosen // 2, chosen, chosen * 2):
        code, output = run([sys.executable, "-m", "bench.training", f"--loss_chunk={chunk}", "--steps=5", "--warmup=2",
                            "configs/gpu80gb.py", "--total_batch_size=65536", f"--device={ctx.device}"])
        match = re.search(r"^pace\s+([\d,]+) tokens/s", output, re.M)
        if code != 0 or not match:
            return f"chunk {chunk}: exit {code}", "runs", False
        speeds[chunk] = float(match.group(1).replace(",", ""))
    best = max(speeds.values())
    value = ", ".join(f"{c}: {s:,.0f} tok/s" for c, s in speeds.items())
    return value, f"{chosen} within 3% of the best", speeds[chosen] >= 0.97 * best


def memory_estimate(batch_size=64, block_size=1024, n_layer=12, n_embd=768, vocab=50304, params=124.5e6,
                    loss_chunk=8192):
    """Peak GPU memory of a training step, in GB, by arithmetic (docs/gpus.md): bf16 activations of
    ~34 bytes x n_embd per token and layer; the fused loss's chunk (float32 logits and probabilities,
    8 bytes a logit, and the bf16 product) and its two kept gradients (float32); weights, gradients
    and PACE's state (m, v, EMA) at 4 + 4 + 12 bytes per parameter."""
    tokens = batch_size * block_size
    activations = tokens * n_layer * 34 * n_embd
    loss = loss_chunk * vocab * 10 + (tokens * n_embd + vocab * n_embd) * 4
    return (activations + loss + params * 20) / 1e9


def check_memory(ctx):
    """Peak memory of one 64 x 1,024 micro-batch step of GPT-2-124M with PACE, against memory_estimate()."""
    code, output = run([sys.executable, "-m", "bench.training", "--steps=1", "--warmup=1", "configs/gpu80gb.py",
                        "--total_batch_size=65536", f"--device={ctx.device}", "--methods=pace"])
    match = re.search(r"peak memory ([\d.]+) GiB", output)
    if code != 0 or not match:
        return f"exit {code}", "runs", False
    peak, estimate = float(match.group(1)) * 2 ** 30 / 1e9, memory_estimate()
    return f"{peak:.1f} GB (estimate {estimate:.1f} GB)", "within 25% of the estimate", abs(peak - estimate) <= 0.25 * estimate


def check_bf16(ctx):
    """20 steps of a small GPT in bfloat16 autocast against float32: the training losses."""
    losses = {}
    for dtype in ("float32", "bfloat16"):
        out = os.path.join(ctx.tmp, f"dtype_{dtype}")
        code, output = run(train_command(0, *SMALL, f"--data_dir={ctx.data}", f"--out_dir={out}", f"--device={ctx.device}",
                                         f"--dtype={dtype}", "--max_steps=20",
                                         "--eval_interval=20", "--log_interval=1", "--lr=1e-3"))
        if code != 0:
            return f"{dtype}: exit {code}", "runs", False
        losses[dtype] = [s["loss"] for s in result_of(out)["step_logs"]]
    gap = max(abs(a - b) for a, b in zip(*losses.values()))
    return (f"largest gap {gap:.4f} nats (float32 {losses['float32'][-1]:.3f} at step 20)",
            f"<= {BF16_TOLERANCE} nats at every step", gap <= BF16_TOLERANCE)


def check_cpu_checkpoint(ctx):
    """A run stopped on the CPU after its first checkpoint, resumed on this device."""
    out = os.path.join(ctx.tmp, "from_cpu")
    common = [*SMALL, f"--data_dir={ctx.data}", f"--out_dir={out}", "--max_steps=12", "--eval_interval=12",
              "--ckpt_interval=2", "--optimizer=pace"]
    cpu = subprocess.Popen(train_command(0, *common, "--device=cpu"), cwd=REPO, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    while cpu.poll() is None and not os.path.exists(os.path.join(out, "ckpt.pt")):
        time.sleep(0.05)
    cpu.terminate()  # a preempted run: it stops after the step in flight
    cpu.wait()
    stopped_at = torch.load(os.path.join(out, "ckpt.pt"), weights_only=True)["step"]
    code, output = run(train_command(0, *common, f"--device={ctx.device}", "--resume=True"))
    if code != 0:
        return f"exit {code}: {output.strip().splitlines()[-1][:120] if output.strip() else ''}", "resumes", False
    summary = result_of(out)["summary"]
    return (f"{summary['status']} at step {summary['steps']}, from step {stopped_at}", "completed at step 12",
            summary["status"] == "completed" and summary["steps"] == 12)


def check_stop_flag(ctx):
    """The cost per step of agreeing on a stop signal (preemption) over NCCL, 2 processes."""
    code, output = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                        "bench.stop_flag", f"--device={ctx.device}"])
    match = re.search(r"adds (-?\d+) us per step", output)
    if code != 0 or not match:
        return f"exit {code}", "runs", False
    return f"{match.group(1)} us per step", "< 200 us per step", int(match.group(1)) < 200


CHECKS = {  # name -> (function, needs a GPU)
    "smoke": (lambda ctx: check_smoke(ctx, 1), False),
    "smoke2": (lambda ctx: check_smoke(ctx, 2), True),
    "stop_flag": (check_stop_flag, True),
    "optimizer": (check_optimizer, True),
    "loss_chunk": (check_loss_chunk, True),
    "memory": (check_memory, True),
    "bf16": (check_bf16, False),
    "cpu_checkpoint": (check_cpu_checkpoint, False),
}


def table(rows):
    """The rows {check, value, expectation, result} as a markdown table."""
    lines = ["| check | value | expectation | result |", "|---|---|---|---|"]
    lines += [f"| {r['check']} | {r['value']} | {r['expectation']} | {r['result']} |" for r in rows]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0], allow_abbrev=False)
    parser.add_argument("--only", help=f"comma list of checks (default: all): {', '.join(CHECKS)}")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="(default: %(default)s)")
    parser.add_argument("--out", default="gpu_check.json", help="the table as JSON (default: %(default)s)")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else list(CHECKS)
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        parser.error(f"--only: unknown check(s) {', '.join(unknown)}; the checks: {', '.join(CHECKS)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check.py: no CUDA GPU here (torch.cuda.is_available() is False): nothing to check")
        return 0
    gpus = torch.cuda.device_count() if args.device == "cuda" else 0
    with tempfile.TemporaryDirectory() as tmp:
        ctx = argparse.Namespace(tmp=tmp, device=args.device, data=synthetic_data(os.path.join(tmp, "data")))
        rows = []
        for name in names:
            check, needs_gpu = CHECKS[name]
            start = time.time()
            two = name in ("smoke2", "stop_flag")
            if (needs_gpu and not gpus) or (two and gpus < 2):
                value, expectation, result = "needs " + ("2 GPUs" if two else "a GPU"), "-", "skipped"
            else:
                value, expectation, passed = check(ctx)
                result = "pass" if passed else "FAIL"
            rows.append({"check": name, "value": value, "expectation": expectation, "result": result,
                         "seconds": round(time.time() - start, 1)})
            print(f"{name}: {result} ({value})", flush=True)
    device = torch.cuda.get_device_name() if gpus else "cpu"
    print(f"\n{device}, {gpus} GPU(s), torch {torch.__version__}\n\n" + table(rows))
    with open(args.out, "w") as f:
        json.dump({"device": device, "gpus": gpus, "torch": torch.__version__, "checks": rows}, f, indent=1)
    print(f"\nwritten to {args.out}")
    return int(any(r["result"] == "FAIL" for r in rows))


if __name__ == "__main__":
    sys.exit(main())
