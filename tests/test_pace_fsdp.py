"""PACE on a model sharded with FSDP2 (fully_shard, 2 gloo processes on CPU) equals
PACE on the same model unsharded, for every implementation, with shards even, uneven
and empty; eval()/train() and the distributed optimizer state dict work on the shards."""

import copy
import os
import socket
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing

import pace
from pace import PACE

fsdp = pytest.importorskip("torch.distributed.fsdp", exc_type=ImportError)
if not hasattr(fsdp, "fully_shard"):
    pytest.skip("this torch has no torch.distributed.fsdp.fully_shard (2.6+)", allow_module_level=True)

from torch.distributed.checkpoint.state_dict import (  # noqa: E402
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)

PATHS = {"single": dict(foreach=False, fused=False), "foreach": dict(foreach=True, fused=False),
         "fused": dict(fused=True)}
HYPER = dict(lr=3e-2, weight_decay=0.1, lambda_pullback=50.0, ema_kappa=0.5, use_ema_eval=True)
FLOAT32 = dict(rtol=1e-5, atol=1e-6)  # the same arithmetic, possibly in another order
TIMEOUT = 300  # seconds for both processes; a hang fails the test


def make_model():
    # Over 2 ranks the first layer's rows split evenly (8), the second's do not (3: 2 + 1),
    # and the last layer (1 row) leaves rank 1 an empty shard.
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3), torch.nn.Tanh(),
                               torch.nn.Linear(3, 1))


def shard(model):
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fsdp.fully_shard(layer)
    fsdp.fully_shard(model)
    return model


def train(model, opt, batches):
    for x in batches:
        model(x).sin().mean().backward()
        opt.step()
        opt.zero_grad()


def check_against_unsharded(path):
    pace.FUSED_CHUNK = 2  # the few tensors go through chunks and the padded last call
    hyper = dict(HYPER, **PATHS[path])
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randn(16, 6, generator=gen) for _ in range(8)]  # the same on both ranks
    reference = make_model()
    sharded = shard(copy.deepcopy(reference))
    reference_opt, opt = PACE(reference.parameters(), **hyper), PACE(sharded.parameters(), **hyper)
    train(reference, reference_opt, batches)
    train(sharded, opt, batches)
    rows = {p.to_local().shape[0] for p in sharded.parameters()}
    assert rows == ({4, 2, 1} if dist.get_rank() == 0 else {4, 1, 0})  # even, uneven and empty shards
    pairs = list(zip(sharded.parameters(), reference.parameters()))
    for p, q in pairs:
        torch.testing.assert_close(p.full_tensor(), q.detach(), **FLOAT32)
        torch.testing.assert_close(opt.state[p]["ema"].full_tensor(), reference_opt.state[q]["ema"], **FLOAT32)

    last = [p.to_local().clone() for p in sharded.parameters()]
    emas = [opt.state[p]["ema"].to_local().clone() for p in sharded.parameters()]
    opt.eval()
    reference_opt.eval()
    for (p, q), ema in zip(pairs, emas):
        assert torch.equal(p.to_local(), ema)
        torch.testing.assert_close(p.full_tensor(), q.detach(), **FLOAT32)  # both hold their EMA
    with torch.no_grad():  # the forward pass gathers the EMA from the shards
        torch.testing.assert_close(sharded(batches[0]), reference(batches[0]), **FLOAT32)
    opt.train()
    reference_opt.train()
    assert all(torch.equal(p.to_local(), w) for p, w in zip(sharded.parameters(), last))

    # the optimizer state through torch.distributed.checkpoint's state dict, into a fresh model
    saved = copy.deepcopy(get_optimizer_state_dict(sharded, opt))  # its tensors are the optimizer's own state
    resumed = shard(make_model())
    resumed.load_state_dict(sharded.state_dict())
    resumed_opt = PACE(resumed.parameters(), **hyper)
    set_optimizer_state_dict(resumed, resumed_opt, saved)
    for p, q in zip(sharded.parameters(), resumed.parameters()):
        assert opt.state[p]["step"] == resumed_opt.state[q]["step"]
        for key in ("exp_avg", "exp_avg_sq", "ema"):
            assert torch.equal(opt.state[p][key].to_local(), resumed_opt.state[q][key].to_local())
    train(sharded, opt, batches[:2])
    train(resumed, resumed_opt, batches[:2])
    assert all(torch.equal(p.to_local(), q.to_local()) for p, q in zip(sharded.parameters(), resumed.parameters()))


def worker(rank, port, path):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        check_against_unsharded(path)
    finally:
        dist.destroy_process_group()
    # a normal exit can abort in gloo's thread destructors (SIGABRT) after the check passed: leave at once
    os._exit(0)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("path", [
    "single", "foreach",
    pytest.param("fused", marks=pytest.mark.skipif(pace._fused_unsupported() is not None,
                                                   reason=str(pace._fused_unsupported())))])
def test_sharded_equals_unsharded(path):
    processes = torch.multiprocessing.spawn(worker, args=(free_port(), path), nprocs=2, join=False)
    deadline = time.monotonic() + TIMEOUT
    while not processes.join(timeout=max(deadline - time.monotonic(), 0.1)):  # raises if a process failed
        if time.monotonic() > deadline:
            for process in processes.processes:
                process.kill()
            pytest.fail(f"the two processes still run after {TIMEOUT} s")
