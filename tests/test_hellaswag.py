"""hellaswag.py: completion-style scoring against a computation by hand, on items written here."""

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import checkpoint
from conftest import REPO
from tools import hellaswag

pytestmark = pytest.mark.usefixtures("one_thread")

# items in HellaSwag's schema; endings of very different lengths, so that the summed and the
# mean cross-entropy can pick different endings; the last context is longer than the model's
# block_size (32 tokens), so it is cut from the left
ITEMS = [
    {"ind": 0, "activity_label": "Cooking", "ctx_a": "A man stands in a kitchen.", "ctx_b": "he",
     "ctx": "A man stands in a kitchen. he", "split": "val", "split_type": "indomain", "label": 2,
     "source_id": "fixture-0",
     "endings": ["cuts an onion.", "sings.", "puts the pan on the stove and turns up the heat slowly.",
                 "walks out of the room without saying a word to anyone who is there."]},
    {"ind": 1, "activity_label": "Running", "ctx_a": "Two women jog along a beach at sunrise.", "ctx_b": "they",
     "ctx": "Two women jog along a beach at sunrise. they", "split": "val", "split_type": "zeroshot", "label": 0,
     "source_id": "fixture-1",
     "endings": ["stop to drink water.", "fly.", "laugh and keep running side by side until the sun is high.",
                 "turn around."]},
    {"ind": 2, "activity_label": "Gardening", "ctx_a": "A child kneels in the garden with a trowel.",
     "ctx_b": "the child", "ctx": "A child kneels in the garden with a trowel. the child", "split": "val",
     "split_type": "indomain", "label": 1, "source_id": "fixture-2",
     "endings": ["eats the trowel and then the flowers and then the whole garden fence.",
                 "digs a small hole.", "vanishes.", "plants three seeds, waters them, and smiles."]},
    {"ind": 3, "activity_label": "Reading", "ctx_a": "An old man sits in a library, turning the pages "
     "of a heavy book about the history of ships, maps and the sea, while rain taps on the tall windows.",
     "ctx_b": "he", "ctx": "An old man sits in a library, turning the pages of a heavy book about the history "
     "of ships, maps and the sea, while rain taps on the tall windows. he", "split": "val",
     "split_type": "indomain", "label": 3, "source_id": "fixture-3",
     "endings": ["closes the book.", "runs.", "reads on, tracing a coastline with his finger as he goes.",
                 "looks up at the rain."]},
]


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "hellaswag_val.jsonl"
    path.write_text("".join(json.dumps(item) + "\n" for item in ITEMS))
    return path


def by_hand(model, enc, item, block_size):
    """The summed and the mean cross-entropy of each ending, one token at a time."""
    summed, mean = [], []
    for ending in item["endings"]:
        tokens = enc.encode(item["ctx"]) + enc.encode(" " + ending)
        n = len(enc.encode(" " + ending))
        tokens = tokens[-(block_size + 1):]
        with torch.no_grad():
            logits, _ = model(torch.tensor([tokens[:-1]]))
        logp = F.log_softmax(logits[0].double(), dim=-1)
        losses = [-logp[j - 1, tokens[j]].item() for j in range(len(tokens) - n, len(tokens))]
        summed.append(sum(losses))
        mean.append(sum(losses) / n)
    return summed, mean


def test_scores_match_a_hand_computation(tiny_run, gpt2_encoding, data_file, capsys):
    hellaswag.main([f"--out_dir={tiny_run}", f"--data_file={data_file}", "--device=cpu"])
    result = json.loads((tiny_run / "hellaswag.json").read_text())
    model, cfg = checkpoint.load_model(tiny_run, "returned")
    assert len(gpt2_encoding.encode(ITEMS[3]["ctx"])) > cfg.block_size
    preds, preds_norm = [], []
    for item in ITEMS:
        summed, mean = by_hand(model, gpt2_encoding, item, cfg.block_size)
        rows, lengths = hellaswag.render(gpt2_encoding, item, cfg.block_size)
        got_summed, got_mean = hellaswag.ending_losses(model, rows, lengths, "cpu")
        torch.testing.assert_close(got_summed.double(), torch.tensor(summed, dtype=torch.double), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got_mean.double(), torch.tensor(mean, dtype=torch.double), rtol=1e-5, atol=1e-5)
        preds.append(min(range(4), key=summed.__getitem__))
        preds_norm.append(min(range(4), key=mean.__getitem__))
    assert preds != preds_norm  # the fixture tells the two scores apart
    labels = [item["label"] for item in ITEMS]
    assert result == {
        "n": 4, "model": "returned", "pred_norm": preds_norm,
        "acc": sum(p == y for p, y in zip(preds, labels)) / 4,
        "acc_norm": sum(p == y for p, y in zip(preds_norm, labels)) / 4,
    }
    assert f"acc {result['acc']:.4f}, acc_norm {result['acc_norm']:.4f}" in capsys.readouterr().out


def test_limit_and_last_model(tiny_run, gpt2_encoding, data_file):
    hellaswag.main([f"--out_dir={tiny_run}", f"--data_file={data_file}", "--device=cpu", "--limit=2", "--model=last"])
    result = json.loads((tiny_run / "hellaswag.json").read_text())
    model, cfg = checkpoint.load_model(tiny_run, "last")
    assert result["n"] == 2 and result["model"] == "last"
    assert result["pred_norm"] == [min(range(4), key=by_hand(model, gpt2_encoding, item, cfg.block_size)[1].__getitem__)
                                   for item in ITEMS[:2]]


def test_bad_data_file_is_a_one_line_error(tiny_run, gpt2_encoding, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(ITEMS[0]) + "\n" + json.dumps({**ITEMS[1], "endings": ITEMS[1]["endings"][:3]}) + "\n")
    with pytest.raises(SystemExit) as e:
        hellaswag.main([f"--out_dir={tiny_run}", f"--data_file={bad}", "--device=cpu"])
    assert e.value.code == f"hellaswag.py: error: {bad}, line 2: not a HellaSwag item (ctx, 4 endings, label 0-3)"


def test_two_processes_split_the_items(tiny_run, gpt2_encoding, data_file, tmp_path):
    hellaswag.main([f"--out_dir={tiny_run}", f"--data_file={data_file}", "--device=cpu"])
    one = json.loads((tiny_run / "hellaswag.json").read_text())
    (tiny_run / "hellaswag.json").unlink()
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    result = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "tools.hellaswag", f"--out_dir={tiny_run}",
                             f"--data_file={data_file}", "--device=cpu"], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tiny_run / "hellaswag.json").read_text()) == one
