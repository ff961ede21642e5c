"""evaluate.py: a run's returned model and last iterate scored on one half of the validation shard."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import checkpoint
from data import read_shard, val_shard_path, write_shard
from tools import evaluate

# every record counts the bytes of its targets with GPT-2's tokenizer
pytestmark = pytest.mark.usefixtures("one_thread", "gpt2_encoding")


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
        model, cfg = checkpoint.load_model(tiny_run, which)
        assert record[which] == pytest.approx(loss_by_hand(model, half, cfg.block_size), rel=1e-5)
    assert record["returned"] != record["last"]  # the EMA, not the last iterate


def test_main_writes_one_file_per_run_and_part(tiny_run, capsys):
    assert evaluate.main([str(tiny_run), "--part", "test", "--device", "cpu"]) == 0
    record = json.loads((tiny_run / "eval_test.json").read_text())
    assert record == evaluate.score(tiny_run, "test", "cpu")
    assert not (tiny_run / "eval_tuning.json").exists()
    assert "test half, 992 tokens, " in capsys.readouterr().out


def test_a_run_without_checkpoint_is_a_one_line_error(tmp_path):
    with pytest.raises(SystemExit) as e:
        evaluate.main([str(tmp_path), "--part", "tuning"])
    assert e.value.code == f"evaluate.py: error: {tmp_path / 'ckpt.pt'} not found"


def test_a_run_whose_validation_shard_is_gone_is_a_one_line_error(tiny_run, tmp_path):
    ckpt = torch.load(tiny_run / "ckpt.pt", weights_only=True)
    ckpt["config"]["data_dir"] = str(tmp_path / "moved")
    torch.save(ckpt, tmp_path / "ckpt.pt")
    with pytest.raises(SystemExit) as e:
        evaluate.main([str(tmp_path), "--part", "test", "--device", "cpu"])
    message = str(e.value.code)
    assert val_shard_path(tmp_path / "moved") in message and "\n" not in message
    assert not (tmp_path / "eval_test.json").exists()


def run_as(run, tmp_path, **config):
    """A copy of run's ckpt.pt in tmp_path with these config values changed (None: the key removed)."""
    ckpt = torch.load(run / "ckpt.pt", weights_only=True)
    for key, value in config.items():
        if value is None:
            del ckpt["config"][key]
        else:
            ckpt["config"][key] = value
    torch.save(ckpt, tmp_path / "ckpt.pt")
    return tmp_path


def test_blends_run_from_the_last_iterate_to_the_returned_model(tiny_run):
    record = evaluate.score(tiny_run, "tuning", "cpu")
    blends = record["blends"]
    assert list(blends) == ["0", "0.25", "0.5", "0.75", "1"]
    assert blends["0"] == record["last"] and blends["1"] == record["returned"]  # the same passes, not new ones
    # the blend by hand: the EMA from the returned model (sample.py, through opt.eval()), the last iterate
    # from the last iterate, mixed parameter by parameter and scored through the unfused logits
    ema, cfg = checkpoint.load_model(tiny_run, "returned")
    tokens = read_shard(str(record["val_file"]))[:1000]
    for alpha in (0.25, 0.5, 0.75):
        blend = checkpoint.load_model(tiny_run, "last")[0]
        with torch.no_grad():
            for p, e in zip(blend.parameters(), ema.parameters()):
                p.copy_(alpha * e + (1 - alpha) * p)
        assert blends[f"{alpha:g}"] == pytest.approx(loss_by_hand(blend, tokens, cfg.block_size), rel=1e-5), alpha
    assert len(set(blends.values())) == len(blends)  # five models


@pytest.mark.parametrize("optimizer", ["adamw", "ema"])
def test_only_pace_has_gains_and_adamw_no_blends(tiny_run, tmp_path, optimizer):
    record = evaluate.score(run_as(tiny_run, tmp_path, optimizer=optimizer), "test", "cpu")
    assert "last_step_gains" not in record
    assert ("blends" in record) == (optimizer == "ema")
    if optimizer == "adamw":
        assert record["returned"] == record["last"]


def test_last_step_gains_are_the_telemetry_of_that_step(tiny_run_with_stats):
    gains = evaluate.score(tiny_run_with_stats, "test", "cpu")["last_step_gains"]
    logged = json.loads((tiny_run_with_stats / "result.json").read_text())["step_logs"][-1]
    assert gains["step"] == logged["step"] == 6 and "lambda_mean" in logged
    model, cfg = checkpoint.load_model(tiny_run_with_stats, "last")
    # the token embedding is the output layer's weight too, counted once; the other matrices; the vectors
    numel = {"token embedding": cfg.vocab_size * cfg.n_embd,
             "other matrices": sum(p.numel() for n, p in model.named_parameters() if p.dim() >= 2 and "wte" not in n),
             "vectors": sum(p.numel() for p in model.parameters() if p.dim() < 2)}
    assert {name: gains[name]["numel"] for name in evaluate.GAIN_GROUPS} == numel
    total = sum(numel.values())
    mean = sum(gains[name]["mean_gain"] * numel[name] for name in numel) / total
    clamped = sum(gains[name]["clamped_share"] * numel[name] for name in numel) / total
    assert mean == pytest.approx(logged["lambda_mean"], rel=1e-5)
    assert clamped == pytest.approx(logged["lambda_clip_fraction"], rel=1e-5)
    assert 0 < gains["other matrices"]["clamped_share"] < 1  # both kinds of coordinates are there to count


def test_bytes_are_the_utf8_length_of_the_scored_targets(tiny_run, gpt2_encoding):
    record = evaluate.score(tiny_run, "test", "cpu")
    tokens = read_shard(str(record["val_file"]))
    targets = tokens[1001:1001 + record["tokens"]].tolist()  # what the 31 sequences of the test half predict
    assert record["bytes"] == len(gpt2_encoding.decode_bytes(targets))


def bytes_only_run(folder, shard, block_size, **scores):
    """A run folder as an older study left it: result.json and an eval_test.json without "bytes", no ckpt.pt."""
    (folder / "data").mkdir(parents=True)
    write_shard(val_shard_path(folder / "data"), np.array(shard, dtype=np.uint16))
    (folder / "result.json").write_text(json.dumps({"config": {"data_dir": str(folder / "data"),
                                                               "block_size": block_size}}))
    (folder / "eval_test.json").write_text(json.dumps({"part": "test", **scores, "returned": 3.0, "last": 3.1}))
    return folder


def test_bytes_only_adds_the_count_to_an_older_eval_file(tmp_path, gpt2_encoding, capsys):
    # documents as prepare_fineweb.py writes them: each after the end-of-text token, which is no text
    documents = ["Grüße, naïve café 🙂 — def f(x): return x ** 2\n" * 2, "ok", "Zürich\t\t 💡 " * 3] * 2
    tokens = [t for doc in documents for t in [gpt2_encoding.eot_token] + gpt2_encoding.encode(doc)]
    half = len(tokens) // 2
    n_seq = (len(tokens) - half - 1) // 8
    run = bytes_only_run(tmp_path / "run", tokens, 8, first_token=half, tokens=n_seq * 8)
    before = json.loads((run / "eval_test.json").read_text())
    assert evaluate.main([str(run), "--part", "test", "--bytes_only"]) == 0
    after = json.loads((run / "eval_test.json").read_text())
    targets = tokens[half + 1:half + 1 + n_seq * 8]
    assert gpt2_encoding.eot_token in targets
    text = [t for t in targets if t != gpt2_encoding.eot_token]
    assert after == {**before, "bytes": len(gpt2_encoding.decode_bytes(text))}
    assert f"{after['bytes']:,} bytes" in capsys.readouterr().out


def test_bytes_only_refuses_an_eval_file_of_other_tokens(tmp_path, gpt2_encoding):
    run = bytes_only_run(tmp_path / "run", list(range(300, 400)), 8, first_token=50, tokens=40)
    with pytest.raises(SystemExit) as e:
        evaluate.main([str(run), "--part", "test", "--bytes_only"])
    assert str(run / "eval_test.json") in str(e.value.code) and "\n" not in str(e.value.code)
    assert "bytes" not in json.loads((run / "eval_test.json").read_text())


def test_a_padding_token_in_the_data_is_a_one_line_error_naming_the_file(tmp_path):
    run = bytes_only_run(tmp_path / "run", [300] * 60 + [50257] + [300] * 39, 8, first_token=50, tokens=48)
    with pytest.raises(SystemExit) as e:
        evaluate.main([str(run), "--part", "test", "--bytes_only"])
    message = str(e.value.code)
    assert val_shard_path(run / "data") in message and "50257" in message and "\n" not in message


def test_a_checkpoint_whose_config_lacks_a_newer_setting_still_scores(tiny_run, tmp_path):
    # a checkpoint of an older train.py has no key for a setting added since: the default fills it
    old = run_as(tiny_run, tmp_path, stats_interval=None, decay_frac=None)
    assert "stats_interval" not in torch.load(old / "ckpt.pt", weights_only=True)["config"]
    model, cfg = checkpoint.load_model(old, "returned")
    assert cfg.stats_interval == 250 and cfg.decay_frac == 0.2
    assert evaluate.score(old, "test", "cpu") == evaluate.score(tiny_run, "test", "cpu")
