"""Fixtures shared by several test files."""

import builtins

import numpy as np
import pytest
import torch

import train
from data import shard_path, write_shard


@pytest.fixture(scope="session")
def gpt2_encoding():
    """tiktoken's GPT-2 encoding; offline it needs TIKTOKEN_CACHE_DIR (CI sets it)."""
    import tiktoken
    try:
        return tiktoken.get_encoding("r50k_base")
    except Exception as e:
        pytest.skip(f"the GPT-2 tokenizer cannot be loaded offline (set TIKTOKEN_CACHE_DIR): {type(e).__name__}")


@pytest.fixture(scope="module")
def one_thread():
    """The models here are tiny: on shared cores a second thread only adds waiting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def train_tiny(tmp_path_factory, name, *settings):
    """The folder of a finished run of a tiny GPT with GPT-2's padded vocabulary, trained for 6 steps
    on random tokens below 512, with these train.py settings on top."""
    data = tmp_path_factory.mktemp(f"{name}_data")
    rng = np.random.default_rng(0)
    write_shard(shard_path(data, 0), rng.integers(0, 512, 2_000).astype(np.uint16))
    write_shard(shard_path(data, 1), rng.integers(0, 512, 5_000).astype(np.uint16))
    out_dir = tmp_path_factory.mktemp(name) / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the model is tiny: on shared cores a second thread only adds waiting
    try:
        train.main([f"--data_dir={data}", f"--out_dir={out_dir}", "--n_layer=2", "--n_head=2", "--n_embd=32",
                    "--block_size=32", "--batch_size=4", "--total_batch_size=128", "--max_steps=6", "--lr=1e-2",
                    "--warmup_steps=2", "--eval_interval=6", "--eval_tokens=1024", "--ckpt_interval=6", *settings])
    finally:
        torch.set_num_threads(threads)
    return out_dir


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A PACE run with a fixed EMA decay: its EMA (the returned model) and last iterate differ."""
    return train_tiny(tmp_path_factory, "tiny_run", "--optimizer=pace", "--ema_kappa=None", "--beta_ema=0.3")


@pytest.fixture(scope="session")
def tiny_run_with_stats(tmp_path_factory):
    """A PACE run with the decaying EMA schedule whose last step (the 6th) recorded PACE's telemetry
    in step_logs; its vocabulary is the 512 tokens of its data, so that the token embedding, whose rows
    of unseen tokens have no gradient and clamped gains, does not make up most of the parameters."""
    return train_tiny(tmp_path_factory, "tiny_run_with_stats", "--optimizer=pace", "--ema_kappa=0.5",
                      "--stats_interval=3", "--vocab_size=512")


@pytest.fixture
def no_matplotlib(monkeypatch):
    """Imports of matplotlib fail, as on a machine without it."""
    real_import = builtins.__import__

    def import_without_matplotlib(name, *args, **kwargs):
        if name.split(".")[0] == "matplotlib":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", import_without_matplotlib)
