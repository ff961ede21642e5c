"""
Benchmark prepare_fineweb.py: its tokens/s with one process and with all of them, against a plain
single-process loop of encode_ordinary over the same documents (already in memory).

    TIKTOKEN_CACHE_DIR=../shared/tiktoken_cache python -m bench.prepare --data_files '../shared/corpus/pydocs/*.parquet'

The script's rate is the one it prints: from its first document to its last shard written. Its
startup (imports, opening the files, starting the workers) does not grow with the dataset and is
shown apart, in the wall time. On a shared or virtual machine the speed of a core drifts by tens
of percent from minute to minute, so each script run is compared with plain loops run just before
and just after it, and the median of these ratios over --repeats runs is reported.
"""

import argparse
import multiprocessing
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import prepare_fineweb

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "prepare_fineweb.py")


def count_tokens(texts):
    """The plain loop: one process, encode_ordinary one document after another."""
    return sum(1 + len(prepare_fineweb.enc.encode_ordinary(text)) for text in texts)


def plain_loop(texts):
    t0 = time.perf_counter()
    return count_tokens(texts) / (time.perf_counter() - t0)


def plain_loops_in_parallel(pool, texts, n):
    """The plain loop in n independent processes, each over 1/n of the documents: no reading, no
    writing, no ordering, so what this machine's cores give when they all work at once."""
    t0 = time.perf_counter()
    return sum(pool.map(count_tokens, [texts[i::n] for i in range(n)])) / (time.perf_counter() - t0)


def script(data_files, num_proc, out_dir):
    """Run prepare_fineweb.py; return (tokens, the tokens/s it reports, wall time including startup)."""
    t0 = time.perf_counter()
    cmd = [sys.executable, SCRIPT, "--data_files", data_files, "--out_dir", out_dir, "--overwrite",
           "--num_proc", str(num_proc)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    wall = time.perf_counter() - t0
    ntok, rate = re.search(r"wrote ([\d,]+) tokens .* \(([\d,]+) tokens/s\)", out).groups()
    return int(ntok.replace(",", "")), int(rate.replace(",", "")), wall


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--data_files", required=True, metavar="GLOB")
    parser.add_argument("--num_proc", type=int, default=os.cpu_count(), help="the 'all processes' run")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.num_proc < 2:
        parser.error("--num_proc must be at least 2: it is compared with the run on 1 process")

    # the documents exactly as the script reads them
    batches = prepare_fineweb.load_documents(argparse.Namespace(data_files=args.data_files))
    texts = [text or "" for batch in batches for text in batch]
    prepare_fineweb.init_worker()  # the tokenizer, for the plain loops run in this process
    ntok = count_tokens(texts)
    print(f"{len(texts):,} documents, {ntok:,} tokens from {args.data_files}; {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.2f} before the runs")

    names = ["plain encode_ordinary loop", "prepare_fineweb.py --num_proc 1",
             f"prepare_fineweb.py --num_proc {args.num_proc}",
             f"plain loop split over {args.num_proc} processes"]
    rates = {name: [] for name in names}
    ratios = {name: [] for name in names}
    walls = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as out_dir, multiprocessing.Pool(args.num_proc, prepare_fineweb.init_worker) as pool:
        for _ in range(args.repeats):
            before = plain_loop(texts)
            for name, num_proc in zip(names[1:3], [1, args.num_proc]):
                n, rate, wall = script(args.data_files, num_proc, out_dir)
                assert n == ntok, f"the script wrote {n} tokens, expected {ntok}"
                rates[name].append(rate)
                walls[name].append(wall)
            rates[names[3]].append(plain_loops_in_parallel(pool, texts, args.num_proc))
            after = plain_loop(texts)
            rates[names[0]] += [before, after]
            # compare with plain loops run just before and just after, at about the same speed of the machine
            for name in names[1:]:
                ratios[name].append(rates[name][-1] / statistics.mean([before, after]))
    ratios[names[0]] = [1.0]

    print(f"{args.repeats} runs each; load average now {os.getloadavg()[0]:.2f}")
    print(f"{'':<38} {'tokens/s: median':>16} {'(min-max)':>23}  {'vs plain: median':>16} {'(min-max)':>13}")
    for name in names:
        line = (f"{name:<38} {statistics.median(rates[name]):>16,.0f} "
                f"{f'({min(rates[name]):,.0f}-{max(rates[name]):,.0f})':>23}  {statistics.median(ratios[name]):>15.2f}x "
                f"{f'({min(ratios[name]):.2f}-{max(ratios[name]):.2f})':>13}")
        if walls[name]:
            line += f"   wall time with startup {statistics.median(walls[name]):.1f}s"
        print(line)


if __name__ == "__main__":
    main()
