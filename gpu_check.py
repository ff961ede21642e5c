"""
The first command on a machine with GPUs: within a time budget, it checks what no CPU can (the
compiled GPT-2-124M step and its speed, the loss settings, memory, the optimizer's kernels, bf16,
NCCL, a CPU checkpoint resumed on the GPU, deterministic resumption) and leaves a table of rows
(check, result, value, expectation).

    python gpu_check.py --budget=540 --out=gpu_check_out     # every check: docs/gpus.md says what each row means
    python gpu_check.py --only=memory,bf16                    # some of them

The checks run one at a time, the most informative first, each in processes of its own, on
synthetic data in a temporary folder. A check starts only if the time it usually takes is left of
the budget (else its row says it was skipped) and is stopped at its cap or at the budget's end,
whichever comes first; its row then says so, as it says an exception: the command ends within the
budget plus 15 seconds, whatever hangs. After each check, --out holds the table so far (table.md,
table.json) and each check's whole output (CHECK.log); a SIGTERM stops the check in flight and
leaves the rows finished. The exit status is 1 when a check failed or erred. Without a GPU it says
so in one line; --device=cpu runs on the CPU the checks a CPU can, at small sizes (the tests do).
"""

import time

START = time.monotonic()  # the budget counts from here

import argparse  # noqa: E402 (after START: importing torch takes seconds of the budget)
import glob  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from checkpoint import save_atomically, save_json  # noqa: E402
from data import shard_path, write_shard  # noqa: E402

REPO = os.path.dirname(os.path.abspath(__file__))
CHECK_COMMAND = [sys.executable, os.path.abspath(__file__)]  # what runs one check: this script, in a process of its own
ROW_PREFIX = "gpu_check row: "  # the line of a check's output that holds its row
MARGIN = 15  # seconds: the command ends within --budget + MARGIN
SMALL_VOCAB = 512  # the small GPT's tokens: its output layer costs little even on a CPU
SMALL = ["--n_layer=2", "--n_head=2", "--n_embd=128", "--block_size=128", f"--vocab_size={SMALL_VOCAB}", "--batch_size=8",
         "--eval_tokens=4096", "--total_batch_size=1024", "--warmup_steps=2"]  # a small GPT for the checks that compare runs
BF16_TOLERANCE = 0.05  # nats: bf16 autocast's training losses against float32's over 20 steps
RESUME_TOLERANCE = 0.01  # nats: a float32 CPU run resumed on a GPU (TF32 products) against the CPU run, per step
SYNC_FREE_STEPS = ["--warmup=3", "--steps=5"]  # bench.train_step: steps 4-8 measured, after compilation


def synthetic_data(folder, vocab, tokens=400_000):
    """Shards of a learnable stream of tokens below vocab (mostly the next token is a function of the last)."""
    rng = np.random.default_rng(0)
    stream = rng.integers(0, vocab, tokens).astype(np.uint16)
    follow = rng.random(tokens) < 0.8
    stream[1:][follow[1:]] = (stream[:-1][follow[1:]].astype(np.int64) * 7 + 3) % vocab
    os.makedirs(folder, exist_ok=True)
    write_shard(shard_path(folder, 0), stream[:tokens // 4])  # the validation shard
    write_shard(shard_path(folder, 1), stream[tokens // 4:])


def data(ctx, small=False):
    """The data folder of GPT-2's tokens, or of the small GPT's."""
    return os.path.join(ctx.tmp, "data_small" if small else "data")


# Helpers of the checks, which run in a check's own process: its output is the check's log.

def run(command):
    """(exit status, output) of a command run from the repository; the output goes to the log as it comes."""
    print("$ " + " ".join(command), flush=True)
    lines = []
    with subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as p:
        for line in p.stdout:
            print(line, end="", flush=True)
            lines.append(line)
    return p.returncode, "".join(lines)


def last_line(output):
    lines = output.strip().splitlines()
    return lines[-1][:200] if lines else ""


def python(nproc, *args):
    """A Python command, under torchrun with nproc processes (0: without torchrun)."""
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc else []
    return [sys.executable, *launcher, *args]


def result_of(out_dir):
    with open(os.path.join(out_dir, "result.json")) as f:
        return json.load(f)


def row(value, expectation, passed):
    return {"value": value, "expectation": expectation, "result": "pass" if passed else "FAIL"}


# The checks: each takes the context (device, gpus, tmp: where the data is) and returns row(...).

def check_env(ctx):
    """What the machine has: GPUs, torch, CUDA, Triton, bf16, liger-kernel."""
    have = lambda name: "yes" if importlib.util.find_spec(name) else "no"
    if ctx.device == "cpu":
        return row(f"cpu, {torch.get_num_threads()} threads, torch {torch.__version__}", "-", True)
    x = torch.randn(256, 256, device="cuda")
    works = torch.allclose((x @ x).cpu(), x.cpu() @ x.cpu(), rtol=1e-2, atol=1e-2)
    return row(f"{torch.cuda.get_device_name()} x {ctx.gpus}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
               f"triton {have('triton')}, bf16 {torch.cuda.is_bf16_supported()}, liger-kernel {have('liger_kernel')}",
               "a GPU computes a product", works)


def smoke_args(ctx, nproc, out):
    """GPT-2-124M (on a CPU, the small GPT) as train.py trains it on the device, compiled, for 12 steps of
    a micro-batch per process, the last of which logs, evaluates and checkpoints."""
    shape, batch, block = ([], 16, 1024) if ctx.device == "cuda" else (SMALL, 8, 128)
    return [*SYNC_FREE_STEPS, "configs/pace.py", *shape, f"--data_dir={data(ctx, small=bool(shape))}", f"--out_dir={out}",
            f"--device={ctx.device}", "--compile=True", f"--batch_size={batch}", f"--total_batch_size={batch * block * nproc}",
            f"--eval_tokens={batch * block}", "--max_steps=12", "--warmup_steps=2", "--log_interval=12",
            "--eval_interval=12", "--ckpt_interval=12"]


def check_smoke(ctx, nproc=1):
    """train.py under torchrun, compiled, DDP, the dtype's autocast: speed, and what slows a step down."""
    out = os.path.join(ctx.tmp, f"smoke{nproc}")
    code, output = run(python(nproc, "-m", "bench.train_step", *smoke_args(ctx, nproc, out)))
    reports = re.findall(r"^train_step: (.*)$", output, re.M)
    if code != 0 or not reports:
        return row(f"exit {code}: {last_line(output)}", "completes", False)
    r, summary = json.loads(reports[-1]), result_of(out)["summary"]
    syncs = r["syncs_per_step"]
    expected_breaks = 0 if r["loss"] == "full" else 1  # the chunked and liger losses run eagerly: one break
    passed = (summary["status"] == "completed" and np.isfinite(summary["final_val_loss"]) and r["fused_optimizer"]
              and r["graph_breaks"] == expected_breaks and r["compiles_in_measured_steps"] == 0 and not any(syncs or []))
    value = (f"{'GPT-2-124M, 16 x 1024' if ctx.device == 'cuda' else 'small GPT, 8 x 128'} tokens a process, "
             f"{nproc} process(es), loss {r['loss']}, {r['dtype']}: {r['tokens_per_s']:,.0f} tok/s"
             + (f", MFU {r['mfu']:.1%}" if r["mfu"] else "") + (f", peak {r['peak_memory'] / 1e9:.1f} GB" if r["peak_memory"] else "")
             + f"; optimizer {'fused' if r['fused_optimizer'] else 'FELL BACK to foreach'}; graph breaks {r['graph_breaks']}"
             + (f" ({'; '.join(r['graph_break_reasons'])})" if r["graph_breaks"] else "")
             + f"; compiles in steps {r['steps']}: {r['compiles_in_measured_steps']}; recompiles in the run "
             f"{len(r['recompile_reasons'])}; syncs per step {syncs if syncs is not None else 'not counted on a CPU'}; "
             f"{summary['status']}, val loss {summary['final_val_loss']:.3f}")
    return row(value, f"completes; fused optimizer; {expected_breaks} graph break(s); no compile or host-device sync in "
                      f"steps {r['steps']}", passed)


def check_loss(ctx):
    """The loss settings' output layer and loss, forward and backward, timed and measured."""
    from bench.loss import fastest, measure
    from model import AUTO_LOSS, LOSSES
    sizes = {"cuda": ((16 * 1024, 64 * 1024), 768), "cpu": ((1024,), 128)}
    tokens, n_embd = sizes[ctx.device]
    print(f"bench.loss.measure({ctx.device!r}, {tokens}, n_embd={n_embd})", flush=True)
    results = measure(ctx.device, tokens, n_embd=n_embd, repeats=5 if ctx.device == "cuda" else 2)
    auto, cells, passed = AUTO_LOSS[ctx.device], [], True
    for n in tokens:
        each = [f"{loss} {r}" if isinstance(r, str) else f"{loss} {r[0] * 1e3:.1f} ms" + (f" {r[1] / 1e9:.1f} GB" if r[1] else "")
                for loss, r in ((loss, results[loss, n]) for loss in LOSSES)]
        cells.append(f"{n:,} tokens: {', '.join(each)}, fastest {fastest(results, n)}")
        timed = {loss: results[loss, n][0] for loss in ("chunked", "full") if not isinstance(results[loss, n], str)}
        passed &= auto in timed and timed[auto] <= 1.05 * min(timed.values())
    value = f"{n_embd} wide, 50,304 tokens; loss=auto picks {auto}; " + "; ".join(cells)
    return row(value, f"{auto} (auto's pick) within 5% of the faster of chunked and full at each size", passed)


def memory_estimate(batch_size=64, block_size=1024, n_layer=12, n_embd=768, vocab=50304, params=124.5e6, loss="full",
                    loss_chunk=8192):
    """Peak GPU memory of a training step, in GB, by arithmetic (docs/gpus.md): bf16 activations of
    ~34 bytes x n_embd per token and layer; the loss: full, the bf16 logits kept for backward and their
    gradient (4 bytes a logit); chunked, a chunk's bf16 logits, float32 probabilities and bf16 gradient
    (8 bytes a logit) and its two kept gradients (float32); weights, gradients and PACE's state (m, v,
    EMA) at 4 + 4 + 12 bytes per parameter."""
    tokens = batch_size * block_size
    activations = tokens * n_layer * 34 * n_embd
    if loss == "full":
        output = tokens * vocab * 4
    else:
        output = loss_chunk * vocab * 8 + (tokens * n_embd + vocab * n_embd) * 4
    return (activations + output + params * 20) / 1e9


def gpt2_training(*args):
    """bench.training on GPT-2-124M (configs/gpu80gb.py: 64 x 1,024 tokens a micro-batch), PACE alone."""
    return [sys.executable, "-m", "bench.training", "configs/gpu80gb.py", "--total_batch_size=65536", "--device=cuda",
            "--methods=pace", *args]


def check_memory(ctx):
    """Peak memory of one 64 x 1,024 micro-batch step of GPT-2-124M with PACE, against memory_estimate()."""
    code, output = run(gpt2_training("--steps=1", "--warmup=1"))
    peak, what = re.search(r"peak memory ([\d.]+) GiB", output), re.search(r"^(GPT of .*)$", output, re.M)
    loss = re.search(r"loss (\w+)", what.group(1)).group(1) if what else None
    if code != 0 or not peak:
        return row(f"exit {code}: {last_line(output)}", "runs", False)
    peak, estimate = float(peak.group(1)) * 2 ** 30 / 1e9, memory_estimate(loss=loss)
    return row(f"{what.group(1)}: {peak:.1f} GB (estimate {estimate:.1f} GB)", "within 25% of the estimate",
               abs(peak - estimate) <= 0.25 * estimate)


def check_loss_chunk(ctx):
    """Training throughput of GPT-2-124M with the chunked loss in model.py's chunks and their neighbours."""
    import model
    chosen, speeds, what = model.LOSS_CHUNK["cuda"], {}, None
    for chunk in (chosen // 2, chosen, chosen * 2):
        code, output = run(gpt2_training("--loss=chunked", f"--loss_chunk={chunk}", "--steps=5", "--warmup=2"))
        match, what = re.search(r"^pace\s+([\d,]+) tokens/s", output, re.M), re.search(r"^(GPT of .*?), on", output, re.M)
        if code != 0 or not match:
            return row(f"chunk {chunk}: exit {code}: {last_line(output)}", "runs", False)
        speeds[chunk] = float(match.group(1).replace(",", ""))
    value = f"{what.group(1) if what else ''}: " + ", ".join(f"chunks of {c}: {s:,.0f} tok/s" for c, s in speeds.items())
    return row(value, f"{chosen} within 3% of the best", speeds[chosen] >= 0.97 * max(speeds.values()))


def check_optimizer(ctx):
    """PACE's compiled step, compiled with an empty cache, against fused AdamW (bench/optimizer.py): the
    GPU's time (CUDA events) and the CPU's launch time; and the sizes its Triton kernels were compiled for."""
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache = tempfile.mkdtemp(dir=ctx.tmp)  # read when a graph compiles
    from bench.optimizer import measure
    from model import GPTConfig
    from statistics import median
    config = GPTConfig() if ctx.device == "cuda" else GPTConfig(n_layer=4, n_head=4, n_embd=128, block_size=256)
    print(f"bench.optimizer.measure({ctx.device!r}, repeats=5, {config}), compile cache {cache}", flush=True)
    results, what = measure(ctx.device, repeats=5, config=config)
    pace = results["PACE fused"]
    ratio = median(pace["ratio"])
    value = (f"{what}: PACE's step {median(pace['time']) * 1e3:.2f} ms, the fused AdamW steps beside it "
             f"{median(pace['beside']) * 1e3:.2f} ms: {ratio:.2f}x (median of the rounds' ratios)")
    if ctx.device == "cpu":  # inductor writes C++ for a CPU: no Triton kernels, no size hints
        return row(value, "<= 1.5x", ratio <= 1.5)
    value += f"; CPU launch {median(pace['launch']) * 1e3:.2f} ms"
    hints = [int(h) for path in glob.glob(os.path.join(cache, "**", "*.py"), recursive=True)
             for h in re.findall(r"size_hints=\{'x': (\d+)", open(path, errors="replace").read())]
    value += f"; smallest Triton kernel size hint {min(hints) if hints else 'none found'}"
    return row(value, "<= 1.5x (GPU time); size hints >= 131072", ratio <= 1.5 and hints and min(hints) >= 2 ** 17)


def check_collectives(ctx):
    """An all-reduce and the stop flag's agreement over NCCL (gloo on a CPU), in one process per GPU (one on one)."""
    nproc = max(ctx.gpus, 1)
    code, output = run(python(nproc, "-m", "bench.stop_flag", f"--device={ctx.device}", "--steps=50", "--rounds=3"))
    cost = re.search(r"adds (-?\d+) us per step", output)
    syncs = re.search(r"synchronizations in \d+ agreements: (\d+)", output)
    if code != 0 or not cost:
        return row(f"exit {code}: {last_line(output)}", "runs", False)
    right = "all-reduce over" in output and ": correct" in output and "as the rule says" in output
    value = (f"{nproc} process(es): all-reduce {'correct' if ': correct' in output else 'WRONG'}; stop "
             f"{'after the same step on every rank' if 'as the rule says' in output else 'WRONG'}; {cost.group(1)} us per step"
             + (f"; {syncs.group(1)} host-device syncs in 50 agreements" if syncs else ""))
    if ctx.device == "cpu":
        return row(value, "correct; stop after the same step", right)
    return row(value, "correct; stop after the same step; no sync; < 200 us per step",
               right and syncs and int(syncs.group(1)) == 0 and int(cost.group(1)) < 200)


def check_bf16(ctx):
    """20 steps of a small GPT in bfloat16 autocast against float32: the training losses."""
    losses = {}
    for dtype in ("float32", "bfloat16"):
        out = os.path.join(ctx.tmp, f"dtype_{dtype}")
        code, output = run(python(0, "train.py", *SMALL, f"--data_dir={data(ctx, small=True)}", f"--out_dir={out}", f"--device={ctx.device}",
                                         f"--dtype={dtype}", "--max_steps=20", "--eval_interval=20", "--log_interval=1",
                                         "--lr=1e-3"))
        if code != 0:
            return row(f"{dtype}: exit {code}: {last_line(output)}", "runs", False)
        losses[dtype] = [s["loss"] for s in result_of(out)["step_logs"]]
    gap = max(abs(a - b) for a, b in zip(*losses.values()))
    return row(f"largest gap {gap:.4f} nats (float32 {losses['float32'][-1]:.3f} at step 20)",
               f"0 < gap <= {BF16_TOLERANCE} nats (0: autocast did nothing)", 0 < gap <= BF16_TOLERANCE)


def stopped_and_resumed(ctx, name, first_device, *settings):
    """(the result of a run of the small GPT stopped (SIGTERM) on first_device after its first checkpoint
    and resumed on ctx's device, the step it stopped at, the result of the run uninterrupted on first_device)."""
    common = [*SMALL, f"--data_dir={data(ctx, small=True)}", "--max_steps=12", "--eval_interval=12", "--ckpt_interval=2",
              "--log_interval=1", "--optimizer=pace", *settings]
    whole, out = os.path.join(ctx.tmp, f"{name}_whole"), os.path.join(ctx.tmp, name)
    code, output = run(python(0, "train.py", *common, f"--out_dir={whole}", f"--device={first_device}"))
    if code != 0:
        raise RuntimeError(f"the uninterrupted run: exit {code}: {last_line(output)}")
    first = subprocess.Popen(python(0, "train.py", *common, f"--out_dir={out}", f"--device={first_device}"), cwd=REPO)
    while first.poll() is None and not os.path.exists(os.path.join(out, "ckpt.pt")):
        time.sleep(0.05)
    first.terminate()  # a preempted run: it stops after the step in flight
    first.wait()
    stopped_at = torch.load(os.path.join(out, "ckpt.pt"), weights_only=True)["step"]
    code, output = run(python(0, "train.py", *common, f"--out_dir={out}", f"--device={ctx.device}", "--resume=True"))
    if code != 0:
        raise RuntimeError(f"the resumed run: exit {code}: {last_line(output)}")
    return result_of(out), stopped_at, result_of(whole)


def compare_resumed(resumed, whole, stopped_at, tolerance):
    """row() of a resumed run's result against the uninterrupted run's: the same dtype, and every step's
    training loss within tolerance (0: bit for bit)."""
    gaps = [abs(a["loss"] - b["loss"]) for a, b in zip(resumed["step_logs"], whole["step_logs"])]
    steps = len(resumed["step_logs"])
    worst = max(range(steps), key=gaps.__getitem__) if gaps else None
    passed = (resumed["summary"]["status"] == "completed" and steps == len(whole["step_logs"])
              and resumed["config"]["dtype"] == whole["config"]["dtype"] and max(gaps, default=1) <= tolerance)
    value = (f"{resumed['summary']['status']} at step {resumed['summary']['steps']}, from step {stopped_at}; dtype "
             f"{resumed['config']['dtype']} (the uninterrupted run's: {whole['config']['dtype']}); largest loss gap "
             f"{max(gaps, default=float('nan')):.2e} (step {worst + 1 if gaps else '-'})")
    return row(value, f"completed; same dtype; every step's loss within {tolerance:g}" if tolerance else
               "completed; same dtype; every step's loss bit for bit", passed)


def check_cpu_checkpoint(ctx):
    """A float32 run stopped on the CPU after its first checkpoint, resumed on this device with dtype=auto:
    it stays float32, and its losses are the CPU run's (TF32 products on a GPU: within RESUME_TOLERANCE)."""
    resumed, stopped_at, whole = stopped_and_resumed(ctx, "from_cpu", "cpu")
    return compare_resumed(resumed, whole, stopped_at, RESUME_TOLERANCE if ctx.device == "cuda" else 0)


def check_deterministic(ctx):
    """deterministic=True: a run stopped and resumed on this device ends bit for bit as the uninterrupted one."""
    resumed, stopped_at, whole = stopped_and_resumed(ctx, "deterministic", ctx.device, "--deterministic=True")
    return compare_resumed(resumed, whole, stopped_at, 0)


@dataclass
class Check:
    function: object
    needs: int  # seconds it usually takes (by reasoning, on an H100 with cold caches): it starts only if that much is left
    cap: int  # seconds it may take at most
    gpus: int = 0  # GPUs it needs: 0, it runs on a CPU too (at small sizes)


CHECKS = {  # in the order they run, the most informative first
    "env": Check(check_env, 10, 60),
    "smoke": Check(check_smoke, 100, 200),
    "loss": Check(check_loss, 60, 150),
    "memory": Check(check_memory, 60, 150, gpus=1),
    "optimizer": Check(check_optimizer, 50, 120),
    "collectives": Check(check_collectives, 20, 60),
    "bf16": Check(check_bf16, 40, 90),
    "cpu_checkpoint": Check(check_cpu_checkpoint, 40, 90),
    "deterministic": Check(check_deterministic, 40, 120),
    "smoke2": Check(lambda ctx: check_smoke(ctx, 2), 100, 200, gpus=2),
    "loss_chunk": Check(check_loss_chunk, 120, 200, gpus=1),
}


def run_one_check(name, device, tmp):
    """Run check `name` in this process (the one the runner started for it); its row is the output's last line."""
    gpus = torch.cuda.device_count() if device == "cuda" else 0
    ctx = argparse.Namespace(device=device, gpus=gpus, tmp=tmp)
    print(ROW_PREFIX + json.dumps(CHECKS[name].function(ctx)), flush=True)
    return 0


# The runner: each check in a process of its own, within the budget.

class Stopped(Exception):
    """SIGTERM or SIGINT to gpu_check.py."""


def descendants(pid):
    """The processes that pid started and theirs, whatever their session (torchrun starts its workers in
    sessions of their own): Linux's /proc."""
    children = {}
    for path in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(path) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # a process that ended meanwhile
        children.setdefault(ppid, []).append(int(path.split("/")[2]))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_tree(proc):
    """SIGKILL a check's process, if it still runs, and every process it started, at once (nothing of
    theirs is kept): those it started in its session, and its descendants in sessions of their own."""
    pids = [proc.pid, *descendants(proc.pid)] if proc.poll() is None else []
    for kill, pid in [(os.killpg, proc.pid)] + [(os.kill, pid) for pid in pids]:
        try:
            kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:  # stuck in the kernel (a GPU driver call): the budget matters more
        pass


def run_check(name, check, args, tmp, deadline):
    """The row of one check, run in a process of its own until its cap or the deadline. A SIGTERM meanwhile
    is raised again (Stopped), with the check's row."""
    limit = min(check.cap, deadline - time.monotonic())
    start, signalled = time.monotonic(), None
    log_path = os.path.join(args.out, f"{name}.log")
    with open(log_path, "w") as log:
        proc = subprocess.Popen([*CHECK_COMMAND, f"--run_check={name}", f"--device={args.device}", f"--tmp={tmp}"],
                                cwd=REPO, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
        try:
            proc.wait(timeout=limit)
            stopped = None
        except subprocess.TimeoutExpired:
            stopped = f"stopped at its cap of {check.cap} s" if limit == check.cap else \
                f"stopped at the end of the budget, after {limit:.0f} s"
        except Stopped as e:
            signalled, stopped = e, f"stopped by {e.args[0]}"
        finally:
            kill_tree(proc)  # and what it left running
    with open(log_path, errors="replace") as f:
        output = f.read()
    rows = [json.loads(line[len(ROW_PREFIX):]) for line in output.splitlines() if line.startswith(ROW_PREFIX)]
    r = {"check": name, **rows[-1]} if rows and not stopped else \
        {"check": name, "result": "error", "value": f"error: {stopped or f'exit {proc.returncode}: {last_line(output)}'}",
         "expectation": "-"}
    r["seconds"] = round(time.monotonic() - start, 1)
    if signalled:
        raise Stopped(signalled.args[0], r)
    return r


def write_table(out, header, rows):
    """out/table.md and out/table.json, each replaced whole."""
    lines = [header, "", "| check | result | value | expectation | seconds |", "|---|---|---|---|---|"]
    lines += [f"| {r['check']} | {r['result']} | {r['value']} | {r['expectation']} | {r['seconds']} |" for r in rows]
    save_atomically(os.path.join(out, "table.md"), lambda f: f.write(("\n".join(lines) + "\n").encode()))
    save_json(os.path.join(out, "table.json"), {"header": header, "checks": rows})
    return "\n".join(lines)


def stop_on_signal(signum, frame):
    raise Stopped(signal.Signals(signum).name)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0], allow_abbrev=False)
    parser.add_argument("--budget", type=float, default=540, help="seconds for everything (default: %(default)s)")
    parser.add_argument("--out", default="gpu_check_out", help="folder for the table and the logs (default: %(default)s)")
    parser.add_argument("--only", help=f"comma list of checks (default: all): {', '.join(CHECKS)}")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="(default: %(default)s)")
    parser.add_argument("--run_check", help=argparse.SUPPRESS)  # the runner's call of one check
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_check:
        return run_one_check(args.run_check, args.device, args.tmp)
    names = args.only.split(",") if args.only else list(CHECKS)
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        parser.error(f"--only: unknown check(s) {', '.join(unknown)}; the checks: {', '.join(CHECKS)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check.py: no CUDA GPU here (torch.cuda.is_available() is False): nothing to check")
        return 0
    gpus = torch.cuda.device_count() if args.device == "cuda" else 0
    deadline = START + args.budget
    os.makedirs(args.out, exist_ok=True)
    header = f"gpu_check.py --device={args.device} --budget={args.budget:g}: {gpus} GPU(s), torch {torch.__version__}"
    rows = []
    previous = {s: signal.signal(s, stop_on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            synthetic_data(os.path.join(tmp, "data"), 50257)
            synthetic_data(os.path.join(tmp, "data_small"), SMALL_VOCAB)
            for name in names:
                check, left = CHECKS[name], deadline - time.monotonic()
                if check.gpus > gpus:
                    r = {"check": name, "result": "skipped", "value": f"needs {check.gpus} GPU(s)", "expectation": "-"}
                elif left < check.needs:
                    r = {"check": name, "result": "skipped", "expectation": "-",
                         "value": f"would not fit: usually takes {check.needs} s, {max(left, 0):.0f} s of the budget left"}
                else:
                    r = run_check(name, check, args, tmp, deadline)
                rows.append({"seconds": 0, **r})
                print(f"{name}: {r['result']} ({r['value']})", flush=True)
                write_table(args.out, header, rows)
    except Stopped as e:
        rows += e.args[1:]  # the row of the check it stopped
        write_table(args.out, header, rows)
        print(f"gpu_check.py: stopped by {e.args[0]}; the rows finished are in {args.out}", flush=True)
        return 128 + getattr(signal, e.args[0]).value
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    print("\n" + write_table(args.out, header, rows) + f"\n\nwritten to {args.out}/table.md, table.json and CHECK.log")
    return int(any(r["result"] in ("FAIL", "error") for r in rows))


if __name__ == "__main__":
    sys.exit(main())
