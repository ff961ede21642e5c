"""gpu_check.py, as far as a CPU goes: the no-GPU line, and the table and its JSON from the checks a CPU can run."""

import json
import re

import pytest
import torch

import gpu_check


def test_without_a_gpu_it_says_so_in_one_line(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--out", str(tmp_path / "t.json")]) == 0
    assert capsys.readouterr().out == "gpu_check.py: no CUDA GPU here (torch.cuda.is_available() is False): nothing to check\n"
    assert not (tmp_path / "t.json").exists()


def test_the_checks_a_cpu_can_run_make_the_table_and_its_json(capsys, tmp_path):
    out = tmp_path / "check.json"
    assert gpu_check.main(["--device=cpu", "--only=cpu_checkpoint,memory", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| check | value | expectation | result |\n|---|---|---|---|\n" in printed
    assert re.search(r"\| cpu_checkpoint \| completed at step 12, from step \d+ \| completed at step 12 \| pass \|", printed)
    assert "| memory | needs a GPU | - | skipped |" in printed
    record = json.loads(out.read_text())
    assert record["gpus"] == 0 and [r["check"] for r in record["checks"]] == ["cpu_checkpoint", "memory"]
    assert record["checks"][0]["result"] == "pass" and record["checks"][0]["seconds"] > 0


def test_an_unknown_check_is_named(capsys):
    with pytest.raises(SystemExit):
        gpu_check.main(["--only=smoke,nope"])
    assert "--only: unknown check(s) nope" in capsys.readouterr().err


def test_the_memory_estimate_is_the_arithmetic_of_the_docs():
    # 65,536 tokens x 12 layers x 34 bytes x 768 of activations; a chunk of 8,192 tokens x 50,304 x 10 bytes
    # and the two kept gradients; 124.5M parameters x 20 bytes
    expected = (65536 * 12 * 34 * 768 + 8192 * 50304 * 10 + (65536 + 50304) * 768 * 4 + 124.5e6 * 20) / 1e9
    assert gpu_check.memory_estimate() == pytest.approx(expected)
