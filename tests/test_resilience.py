"""train.py starts from anything and stops at any moment: init_from (a Hugging Face GPT-2 folder, another
run), preemption (SIGTERM to a run and to torchrun's agent), a worker lost under torchrun --max_restarts,
and a checkpoint write that fails half way."""

import signal
import sys
import time

import pytest
import torch

import train
from checkpoint import load_model, with_shape
from conftest import (COMMON, STEPS, SUBPROCESS_ENV, all_exit, args_for, assert_resumes_exactly, error_of, finish,
                      read_result, run, signal_after_first_checkpoint, start, start_ranks, torchrun, with_fault,
                      without_timings)
from processes import EXIT_PREEMPTED, Processes
from settings import Settings, given_settings
from tools import export_hf

pytestmark = pytest.mark.usefixtures("one_thread")
SECONDS = 30  # a signalled run exits within this of the step in flight


def opened(data_dir, out_dir, *extra):
    """train.py's Run for these settings, opened as for its first step (model, optimizer, data)."""
    return train.open_run(given_settings(args_for(data_dir, out_dir, *extra)), Processes())


@pytest.mark.usefixtures("gpt2_encoding")  # export_hf.py writes the tokenizer too
def test_a_run_from_a_hugging_face_folder_has_the_logits_of_transformers(tiny_run, data_dir, tmp_path):
    transformers = pytest.importorskip("transformers")
    hf_dir = tmp_path / "hf"
    export_hf.main([f"--out_dir={tiny_run}", f"--hf_dir={hf_dir}"])
    # tiny_run's shape (2 layers, 32 wide, 32 positions) comes from the folder; the vocabulary is padded back
    gpt = opened(data_dir, tmp_path / "out", f"--init_from={hf_dir}", "--n_layer=2", "--vocab_size=50304").raw_model.eval()
    hf = transformers.GPT2LMHeadModel.from_pretrained(hf_dir).eval()
    tokens = torch.randint(0, 50257, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = gpt(tokens)[0], hf(tokens).logits
    assert (gpt.config.n_layer, gpt.config.n_embd, gpt.config.block_size) == (2, 32, 32)
    torch.testing.assert_close(ours[..., :50257], theirs, rtol=0, atol=1e-4)
    assert torch.equal(ours[..., 50257:], torch.zeros_like(ours[..., 50257:]))  # the padding rows start at zero


@pytest.mark.parametrize("which", ["returned", "last"])
def test_a_run_from_another_run_starts_at_its_returned_model_or_last_iterate(tiny_run, data_dir, tmp_path, which):
    source, _ = load_model(tiny_run, which)
    run_ = opened(data_dir, tmp_path / "out", f"--init_from={tiny_run}", f"--init_weights={which}", "--block_size=16",
                  "--vocab_size=50304")
    for name, tensor in source.state_dict().items():
        expected = tensor[:16] if name == "transformer.wpe.weight" else tensor  # block_size 16 crops it
        assert torch.equal(run_.raw_model.state_dict()[name], expected), name
    assert run_.config["init_from"] == str(tiny_run) and run_.config["block_size"] == 16


def test_the_ema_starts_from_the_loaded_weights(tiny_run, data_dir, tmp_path):
    source = load_model(tiny_run, "returned")[0]
    loaded = {k: v.clone() for k, v in source.state_dict().items()}
    out = tmp_path / "out"
    run(data_dir, out, f"--init_from={tiny_run}", "--optimizer=ema", "--ema_kappa=None", "--beta_ema=0.5",
        "--max_steps=1", "--vocab_size=50304")
    ckpt = torch.load(out / "ckpt.pt")
    # the optimizer's parameters in order: the matrices, then the vectors (GPT.optim_groups)
    names = [n for dims in (lambda d: d >= 2, lambda d: d < 2) for n, p in source.named_parameters() if dims(p.dim())]
    for i, name in enumerate(names):  # beta_ema 0.5: the EMA after step 1 is the mean of the loaded and the new weights
        expected = (loaded[name] + ckpt["model"][name]) / 2
        torch.testing.assert_close(ckpt["optimizer"]["state"][i]["ema"], expected, rtol=0, atol=1e-6)


def test_a_shape_that_contradicts_the_weights_is_one_line_naming_both(tiny_run, data_dir, tmp_path):
    message = error_of(train.main, args_for(data_dir, tmp_path / "a", f"--init_from={tiny_run}", "--n_layer=3",
                                            "--vocab_size=50304"))
    assert message == f"train.py: error: n_layer is 3 but init_from={tiny_run} has 2"
    message = error_of(train.main, args_for(data_dir, tmp_path / "b", f"--init_from={tiny_run}", "--block_size=64",
                                            "--vocab_size=50304"))
    assert message.startswith(f"train.py: error: block_size is 64 but init_from={tiny_run} has 32 (block_size may be smaller")
    message = error_of(train.main, args_for(data_dir, tmp_path / "c", "--init_from=nowhere"))
    assert message.startswith("train.py: error: init_from=nowhere: not scratch, one of gpt2, gpt2-medium")
    assert not any((tmp_path / d).exists() for d in "abc")


def test_the_shape_of_the_weights_makes_new_settings():
    given = {"n_layer": 2, "block_size": 16}
    cfg = Settings(**given)
    shape = {"n_layer": 2, "n_head": 4, "n_embd": 64, "block_size": 32, "vocab_size": 512}
    shaped = with_shape(cfg, given, shape, "init_from=x")
    assert (shaped.n_layer, shaped.n_head, shaped.n_embd, shaped.block_size, shaped.vocab_size) == (2, 4, 64, 16, 512)
    assert cfg == Settings(**given)  # the checked settings stay as they were given


def test_gpt2_without_transformers_is_one_line(data_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers fails, as when it is not installed
    message = error_of(train.main, args_for(data_dir, tmp_path / "out", "--init_from=gpt2", "--vocab_size=50304"))
    assert message == "train.py: error: init_from=gpt2 needs transformers: pip install transformers"


def test_a_run_from_weights_resumes_like_any_other(tiny_run, data_dir, tmp_path):
    common = [f"--init_from={tiny_run}", "--vocab_size=50304", "--max_steps=4", "--eval_interval=2", "--ckpt_interval=2"]
    first = run(data_dir, tmp_path / "out", *common)
    again = run(data_dir, tmp_path / "out", *common, "--resume=True")
    assert without_timings(again) == without_timings(first) and first["config"]["n_layer"] == 2


# preemption and lost workers

@pytest.mark.parametrize("launcher, signum", [(["python"], signal.SIGTERM), (["torchrun"], signal.SIGTERM),
                                              (["python"], signal.SIGUSR1)], ids=["SIGTERM", "SIGTERM-torchrun", "SIGUSR1"])
def test_a_signalled_run_stops_after_its_step_with_a_checkpoint_and_resumes_exactly(data_dir, tmp_path, launcher, signum,
                                                                                    uninterrupted):
    launcher = [sys.executable] if launcher == ["python"] else torchrun()
    stopped = tmp_path / "stopped"
    proc = start(tmp_path / "stopped.log", *launcher, "train.py", *args_for(data_dir, stopped, *COMMON))
    sent = signal_after_first_checkpoint(proc, stopped, signum)
    proc.wait(SECONDS)
    assert time.time() - sent < SECONDS
    output = open(proc.log).read()
    if launcher[0] == sys.executable and len(launcher) == 1:
        assert proc.returncode == EXIT_PREEMPTED, output[-2000:]
    result = read_result(stopped)
    assert result["summary"]["status"] == "preempted" and 8 <= result["summary"]["steps"] < STEPS, output[-2000:]
    assert torch.load(stopped / "ckpt.pt")["step"] == result["summary"]["steps"] == result["step_logs"][-1]["step"]
    assert_resumes_exactly(data_dir, tmp_path, stopped, [*launcher, "train.py"], uninterrupted)


def test_a_worker_killed_under_max_restarts_is_restarted_and_the_run_ends_exactly(data_dir, tmp_path, uninterrupted):
    env = dict(SUBPROCESS_ENV)
    command = with_fault("kill@1:12", env)  # rank 1 is SIGKILLed in step 12, once
    out = tmp_path / "lost"
    finish(start(tmp_path / "lost.log", *torchrun("--max_restarts=1"), *command[1:],
                 *args_for(data_dir, out, *COMMON, "--resume=True"), env=env), timeout=600)
    assert (out / "killed_rank1").exists() and read_result(out)["summary"]["status"] == "completed"
    assert_resumes_exactly(data_dir, tmp_path, out, [*torchrun(), "train.py"], uninterrupted)


def test_a_checkpoint_write_that_fails_half_way_keeps_the_previous_one(data_dir, tmp_path, uninterrupted):
    out = tmp_path / "out"
    args = args_for(data_dir, out, *COMMON)
    all_exit(start_ranks(tmp_path, (args, {}), (args, {}), fault="save@2"), 1, timeout=60)  # every rank stops
    summary = read_result(out)["summary"]
    assert summary["status"] == "failed" and summary["error"] == "OSError: [Errno 28] No space left on device"
    assert torch.load(out / "ckpt.pt")["step"] == 8 and not (out / "ckpt.pt.tmp").exists()
    assert_resumes_exactly(data_dir, tmp_path, out, [*torchrun(), "train.py"], uninterrupted)

