"""evaluate.py: a run's returned model and last iterate scored on one half of the validation shard."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import evaluate
import sample
from prepare_fineweb import read_shard

pytestmark = pytest.mark.usefixtures("one_thread")


def loss_by_hand(model, tokens, block_size):
    """Mean cross-entropy over the whole sequences of tokens, through the model's unfused logits."""
    n_seq = (len(tokens) - 1) // block_size
    x = torch.from_numpy(tokens[:n_seq * block_size].astype(np.int64)).view(n_seq, block_size)
    y = torch.from_numpy(tokens[1:n_seq * block_size + 1].astype(np.int64)).view(n_seq, block_size)
    with torch.no_grad():
        logits, _ = model(x)
    return F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1)).item()


@pytest.mark.parametrize("part", evaluate.PARTS)
def test_each_half_scores_its_own_tokens(tiny_run, part):
    record = evaluate.score(tiny_run, part, "cpu")
    tokens = read_shard(str(record["val_file"]))  # 2,000 tokens: the halves are 0-999 and 1,000-1,999
    first = {"tuning": 0, "test": 1000}[part]
    half = tokens[first:first + 1000]
    assert record["first_token"] == first and record["tokens"] == 31 * 32  # whole sequences of 32, targets inside
    for which in ("returned", "last"):
        model, cfg = sample.load_model(tiny_run, which)
        assert record[which] == pytest.approx(loss_by_hand(model, half, cfg.block_size), rel=1e-5)
    assert record["returned"] != record["last"]  # the EMA, not the iterate


def test_main_writes_one_file_per_run_and_part(tiny_run, capsys):
    assert evaluate.main([str(tiny_run), "--part", "test", "--device", "cpu"]) == 0
    record = json.loads((tiny_run / "eval_test.json").read_text())
    assert record == evaluate.score(tiny_run, "test", "cpu")
    assert not (tiny_run / "eval_tuning.json").exists()
    assert "test half, 992 tokens" in capsys.readouterr().out


def test_a_run_without_checkpoint_is_a_one_line_error(tmp_path):
    with pytest.raises(SystemExit) as e:
        evaluate.main([str(tmp_path), "--part", "tuning"])
    assert str(tmp_path / "ckpt.pt") in str(e.value.code) and "\n" not in str(e.value.code)


def test_a_run_whose_validation_shard_is_gone_is_a_one_line_error(tiny_run, tmp_path):
    ckpt = torch.load(tiny_run / "ckpt.pt", weights_only=True)
    ckpt["config"]["data_dir"] = str(tmp_path / "moved")
    torch.save(ckpt, tmp_path / "ckpt.pt")
    with pytest.raises(SystemExit) as e:
        evaluate.main([str(tmp_path), "--part", "test", "--device", "cpu"])
    message = str(e.value.code)
    assert str(tmp_path / "moved" / "fineweb_val_000000.bin") in message and "\n" not in message
    assert not (tmp_path / "eval_test.json").exists()
