"""Under torchrun every process opens the same run or every one stops with the failing one's message;
an error on any process during the run stops every process, and result.json says the run failed.
The processes are started as torchrun starts them (conftest.py's start_ranks), some with a
fault planted by tests/train_with_fault.py; a process left waiting fails the test (all_exit's timeout)."""

import re
import shutil
import sys

import numpy as np
import pytest
import torch

import pace
import processes
from conftest import all_exit, args_for, finish, read_result, run, start, start_ranks
from data import read_shard, shard_path, shard_pattern, write_shard

pytestmark = pytest.mark.usefixtures("one_thread")

SECONDS = 60  # every process exits within this, where gloo's own timeout would wait 30 minutes


def test_a_check_failing_on_one_rank_stops_every_rank(data_dir, tmp_path):
    # rank 1 is on a node whose copy of the data is missing
    out, missing = tmp_path / "out", tmp_path / "missing"
    procs = start_ranks(tmp_path, (args_for(data_dir, out, "--max_steps=2"), {}), (args_for(missing, out, "--max_steps=2"), {}))
    for output in all_exit(procs, 1):
        assert f"train.py: error: rank 1: no training shards {shard_pattern(missing)}" in output
    assert not out.exists()


@pytest.mark.parametrize("rank_1_sees", ["no checkpoint", "another checkpoint"])
def test_resume_stops_when_the_ranks_load_different_states(data_dir, tmp_path, rank_1_sees):
    # rank 1 is on a node whose out_dir is not the shared one: empty, or holding another run's checkpoint
    common = ["--max_steps=4", "--eval_interval=4", "--ckpt_interval=2"]
    shared, local = tmp_path / "shared", tmp_path / "local"
    first = run(data_dir, shared, *common)
    if rank_1_sees == "another checkpoint":
        shutil.copytree(shared, local)
        ckpt = torch.load(local / "ckpt.pt")
        ckpt["model"]["lm_head.weight"][0, 0] += 1e-3
        torch.save(ckpt, local / "ckpt.pt")
    before = (shared / "ckpt.pt").read_bytes()
    resume = [*common, "--resume=True"]
    procs = start_ranks(tmp_path, (args_for(data_dir, shared, *resume), {}), (args_for(data_dir, local, *resume), {}))
    for output in all_exit(procs, 1):
        message = output.split("train.py: error: ")[1]
        assert message.startswith("the processes do not hold the same run (")
        assert "out_dir must be on a file system they all share" in message
        assert re.search(r"weights checksum: rank 0: '[0-9a-f]{8}'; rank 1: ", message)
        assert ("step: rank 0: 4; rank 1: 0" in message) == (rank_1_sees == "no checkpoint")
    assert (shared / "ckpt.pt").read_bytes() == before and read_result(shared) == first


def test_a_compile_failure_on_one_rank_sends_every_rank_to_foreach(data_dir, tmp_path):
    if pace.fused_error("cpu") is not None:
        pytest.skip(f"the fused step does not compile on this machine either: {pace.fused_error('cpu')}")
    # rank 1 is on a node without a C++ compiler (and with an empty compile cache)
    no_compiler = {"CXX": str(tmp_path / "no" / "g++"), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "cache")}
    args = args_for(data_dir, tmp_path / "out", "--optimizer=pace", "--max_steps=2")
    rank_0, rank_1 = all_exit(start_ranks(tmp_path, (args, {}), (args, no_compiler)), 0)
    assert rank_0.count("the optimizer's fused step does not compile on rank 1 (") == 1
    assert "No working C++ compiler" in rank_0 and "does not compile" not in rank_1
    assert read_result(tmp_path / "out")["summary"]["status"] == "completed"


def test_settings_that_fail_on_one_rank_stop_every_rank(data_dir, tmp_path):
    # rank 1 is on a node without the config file: it joins the others all the same, to stop with them
    config, out = tmp_path / "config.py", tmp_path / "out"
    config.write_text("max_steps = 2\n")
    procs = start_ranks(tmp_path, (args_for(data_dir, out, str(config)), {}),
                        (args_for(data_dir, out, str(tmp_path / "elsewhere.py")), {}))
    for output in all_exit(procs, 1, timeout=SECONDS):
        assert f"train.py: error: rank 1: config file {tmp_path / 'elsewhere.py'} not found" in output
    assert not out.exists()


def test_each_process_reads_its_settings_once(data_dir, tmp_path):
    reads, config = tmp_path / "reads", tmp_path / "config.py"
    config.write_text(f"_f = open({str(reads)!r}, 'a')\n_f.write('read\\n')\n_f.close()\nmax_steps = 1\n")
    args = args_for(data_dir, tmp_path / "out", str(config))
    all_exit(start_ranks(tmp_path, (args, {}), (args, {})), 0, timeout=SECONDS)
    assert reads.read_text() == "read\n" * 2  # a config file runs once in each process


def test_ranks_are_grouped_by_what_they_saw():
    assert processes.by_rank(["a", None, "b", "a"]) == "ranks 0, 3: a; rank 2: b"


def test_an_exception_in_one_rank_s_model_construction_stops_every_rank(data_dir, tmp_path):
    args = args_for(data_dir, tmp_path / "out", "--max_steps=2")
    for output in all_exit(start_ranks(tmp_path, (args, {}), (args, {}), fault="model@1"), 1, timeout=SECONDS):
        assert "train.py: error: rank 1: RuntimeError: planted on rank 1" in output
    assert not (tmp_path / "out").exists()


def test_an_exception_in_one_rank_s_checkpoint_load_stops_every_rank(data_dir, tmp_path):
    out, common = tmp_path / "out", ["--max_steps=4", "--eval_interval=2", "--ckpt_interval=2"]
    first = run(data_dir, out, *common)
    args = args_for(data_dir, out, *common, "--max_steps=4", "--resume=True")
    for output in all_exit(start_ranks(tmp_path, (args, {}), (args, {}), fault="load@1"), 1, timeout=SECONDS):
        assert "train.py: error: rank 1: RuntimeError: planted on rank 1" in output
    assert read_result(out) == first  # nothing written


@pytest.mark.parametrize("failing_rank", [0, 1])
def test_an_exception_during_training_on_any_rank_fails_the_run_everywhere(data_dir, tmp_path, failing_rank):
    out = tmp_path / "out"
    args = args_for(data_dir, out, "--max_steps=20", "--eval_interval=2", "--ckpt_interval=2")
    outputs = all_exit(start_ranks(tmp_path, (args, {}), (args, {}), fault=f"step@{failing_rank}:5"), 1, timeout=SECONDS)
    assert "RuntimeError: planted on rank" in outputs[failing_rank]
    summary = read_result(out)["summary"]
    assert summary["status"] == "failed" and summary["steps"] == 4
    # the master knows the error when it is its own; otherwise it knows a peer is gone
    assert summary["error"] == "RuntimeError: planted on rank 0" if failing_rank == 0 else "RuntimeError" in summary["error"]
    assert torch.load(out / "ckpt.pt")["step"] == 4


def test_ranks_whose_copies_of_the_data_differ_stop(data_dir, tmp_path):
    other = tmp_path / "other_data"
    shutil.copytree(data_dir, other)
    tokens = np.array(read_shard(shard_path(other, 2)))
    tokens[100] = (tokens[100] + 1) % 64  # one token of the second shard
    write_shard(shard_path(other, 2), tokens)
    out = tmp_path / "out"
    procs = start_ranks(tmp_path, (args_for(data_dir, out, "--max_steps=2"), {}), (args_for(other, out, "--max_steps=2"), {}))
    for output in all_exit(procs, 1, timeout=SECONDS):
        message = output.split("train.py: error: ")[1]
        assert message.startswith("the processes do not hold the same run (training data: rank 0: ")
        assert re.search(r"rank 0: '60000 tokens in 2 shards, checksum [0-9a-f]{8}'; rank 1: '60000 tokens in 2 "
                         r"shards, checksum [0-9a-f]{8}'\)", message)
    assert not out.exists()


@pytest.mark.parametrize("gpus", [True, False])
def test_nccl_connects_at_once_on_the_process_s_gpu(monkeypatch, gpus):
    # what start_processes asks of torch.distributed, with torch.cuda saying there are GPUs or none
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    monkeypatch.setattr(processes.dist, "rendezvous", lambda url: iter([(processes.dist.HashStore(), 1, 2)]))
    calls = []
    monkeypatch.setattr(processes.dist, "init_process_group", lambda **kwargs: calls.append(kwargs))
    procs = processes.start_processes("auto")
    assert (procs.rank, procs.local_rank, procs.world_size) == (1, 1, 2)
    assert calls[0]["backend"] == ("nccl" if gpus else "gloo")
    assert calls[0]["device_id"] == (torch.device("cuda", 1) if gpus else None)


def test_the_stop_flag_and_an_all_reduce_over_two_processes(tmp_path):
    # bench.stop_flag, gpu_check's collectives row: SIGUSR1 to rank 1 in step 2 stops both ranks after step 3
    output = finish(start(tmp_path / "log", sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node=2", "-m", "bench.stop_flag", "--steps=5", "--rounds=1"))
    assert "all-reduce over 2 process(es) (gloo): 3, expected 3: correct" in output
    assert "the ranks stopped after steps [3, 3]: every rank after step 3, as the rule says" in output
