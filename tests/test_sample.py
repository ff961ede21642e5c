"""sample.py: the model a run returns, reproducible samples, and one-line errors for a bad run."""

import subprocess
import sys

import pytest
import torch

import checkpoint
import sample
from conftest import REPO, error_of

pytestmark = pytest.mark.usefixtures("one_thread")


def test_returned_model_is_the_ema_and_last_the_iterate(tiny_run):
    ckpt = torch.load(tiny_run / "ckpt.pt", weights_only=True)
    returned, cfg = checkpoint.load_model(tiny_run, "returned")
    last, _ = checkpoint.load_model(tiny_run, "last")
    assert cfg.optimizer == "pace" and not returned.training
    # the optimizer's state is indexed by the parameters in the order of model.optim_groups
    params = [name for group in last.optim_groups(0.0) for p in group["params"]
              for name, q in last.named_parameters() if q is p]
    for i, name in enumerate(params):
        ema, iterate = ckpt["optimizer"]["state"][i]["ema"], ckpt["model"][name]
        assert torch.equal(returned.get_parameter(name), ema) and torch.equal(last.get_parameter(name), iterate)
        assert not torch.equal(ema, iterate)


def test_adamw_returns_its_iterate(tiny_run, tmp_path):
    ckpt = torch.load(tiny_run / "ckpt.pt", weights_only=True)
    ckpt["config"]["optimizer"] = "adamw"  # an adamw checkpoint holds no EMA
    for state in ckpt["optimizer"]["state"].values():
        del state["ema"]
    for group in ckpt["optimizer"]["param_groups"]:
        group["use_ema_eval"], group["lambda_pullback"] = False, 0.0
    torch.save(ckpt, tmp_path / "ckpt.pt")
    returned, _ = checkpoint.load_model(tmp_path, "returned")
    for name, tensor in ckpt["model"].items():
        assert torch.equal(returned.state_dict()[name], tensor)


def samples(capsys, run, *args):
    sample.main([f"--out_dir={run}", "--device=cpu", "--max_new_tokens=12", *args])
    return capsys.readouterr().out


def test_same_seed_same_text(tiny_run, gpt2_encoding, capsys):
    prompt = "The answer is"
    first = samples(capsys, tiny_run, f"--start={prompt}", "--num_samples=3", "--seed=7")
    assert samples(capsys, tiny_run, f"--start={prompt}", "--num_samples=3", "--seed=7") == first
    assert samples(capsys, tiny_run, f"--start={prompt}", "--num_samples=3", "--seed=8") != first
    texts = first.split("---------------\n")
    assert len(texts) == 4 and texts[-1] == ""
    assert all(t.startswith(prompt) and len(t) > len(prompt) + 1 for t in texts[:3])
    assert len(set(texts[:3])) == 3  # the samples continue one random stream


def test_prompt_from_file_and_last_model(tiny_run, gpt2_encoding, capsys, tmp_path):
    (tmp_path / "prompt.txt").write_text("def main(")
    returned = samples(capsys, tiny_run, f"--start=FILE:{tmp_path / 'prompt.txt'}", "--num_samples=1")
    last = samples(capsys, tiny_run, f"--start=FILE:{tmp_path / 'prompt.txt'}", "--num_samples=1", "--model=last")
    assert returned.startswith("def main(") and last.startswith("def main(") and returned != last
    assert str(tmp_path / "missing.txt") in error_of(samples, capsys, tiny_run, f"--start=FILE:{tmp_path / 'missing.txt'}")


def test_bad_runs_are_one_line_errors(tiny_run, tmp_path):
    missing = tmp_path / "missing"
    assert f"{missing / 'ckpt.pt'} not found" in error_of(checkpoint.load_model, missing)
    def ckpt_in(name):
        (tmp_path / name).mkdir()
        return tmp_path / name / "ckpt.pt"

    good = (tiny_run / "ckpt.pt").read_bytes()
    ckpt_in("truncated").write_bytes(good[:len(good) // 2])
    ckpt_in("foreign").write_bytes(b"not a checkpoint at all")
    torch.save({"model": {}, "config": {}}, ckpt_in("keys"))
    # a pickled object whose loading would run code: weights_only refuses it
    torch.save({"model": {}, "optimizer": {}, "config": {}, "x": subprocess.CompletedProcess([], 0)}, ckpt_in("code"))
    for name in ("truncated", "foreign", "keys", "code"):
        message = error_of(checkpoint.load_model, tmp_path / name)
        assert str(tmp_path / name / "ckpt.pt") in message, message
    assert "lacks optimizer" in error_of(checkpoint.load_model, tmp_path / "keys")
    # a checkpoint whose weights do not fit the config it holds
    ckpt = torch.load(tiny_run / "ckpt.pt", weights_only=True)
    ckpt["config"]["n_embd"] = 64
    torch.save(ckpt, ckpt_in("mismatch"))
    assert str(tmp_path / "mismatch" / "ckpt.pt") in error_of(checkpoint.load_model, tmp_path / "mismatch")


def test_missing_run_exits_with_one_line(tmp_path):
    result = subprocess.run([sys.executable, "sample.py", f"--out_dir={tmp_path / 'nothing'}"], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == f"sample.py: error: {tmp_path / 'nothing' / 'ckpt.pt'} not found\n"


def test_load_checkpoint_reads_what_train_writes(tiny_run):
    ckpt = checkpoint.load_checkpoint(str(tiny_run / "ckpt.pt"))
    assert ckpt["step"] == 6 and ckpt["config"]["optimizer"] == "pace"


def test_a_tokenizer_that_cannot_load_is_one_line_in_sample_py_s_name(tiny_run, monkeypatch):
    tiktoken = pytest.importorskip("tiktoken")

    def offline(name):
        raise OSError("no network")
    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    message = error_of(sample.main, [f"--out_dir={tiny_run}", "--device=cpu"])
    assert message.startswith("sample.py: error: cannot load the GPT-2 tokenizer (tiktoken r50k_base): no network.")
