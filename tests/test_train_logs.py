"""What train.py records besides the losses: PACE's telemetry in step_logs (stats_interval) and the
same numbers in Weights & Biases (wandb_log), here through a stand-in wandb module."""

import json
import sys
import types

import pytest
import torch

import train
from conftest import args_for, error_of, run

pytestmark = pytest.mark.usefixtures("one_thread")

TELEMETRY = ("lambda_mean", "lambda_max", "lambda_clip_fraction", "adamw_update_norm", "pullback_norm", "ema_distance_norm")
COMMON = ["--max_steps=6", "--eval_interval=3", "--vanilla_eval_interval=3", "--ckpt_interval=6"]


def test_telemetry_at_its_steps_leaves_training_unchanged(data_dir, tmp_path):
    runs = {(method, interval): run(data_dir, tmp_path / f"{method}{interval}", f"--optimizer={method}", *COMMON,
                                    f"--stats_interval={interval}")
            for method, interval in (("pace", 0), ("pace", 1), ("pace", 3), ("pace", 7), ("ema", 3), ("adamw", 3),
                                     ("adamw", 0))}
    for (method, interval), result in runs.items():
        for entry in result["step_logs"]:
            recorded = method != "adamw" and interval > 0 and entry["step"] % interval == 0
            assert list(entry) == ["step", "lr", "loss", "grad_norm", *(TELEMETRY if recorded else ())], (method, entry)
            if recorded:
                assert 0 <= entry["lambda_mean"] <= entry["lambda_max"] <= 1  # clamp_pullback=True
                assert 0 <= entry["lambda_clip_fraction"] <= 1
                assert entry["adamw_update_norm"] > 0 and entry["ema_distance_norm"] >= 0
                if method == "ema" or entry["step"] == 1:  # the EMA baseline does not pull; at first the EMA is the weights
                    assert entry["pullback_norm"] == 0
                else:
                    assert entry["pullback_norm"] > 0
    # telemetry is read-only: losses and weights are bit for bit those of a run that records nothing
    untouched = lambda result: ([{k: e[k] for k in ("loss", "grad_norm")} for e in result["step_logs"]], result["eval_logs"])
    for method, intervals in (("pace", (1, 3, 7)), ("adamw", (3,))):
        weights = torch.load(tmp_path / f"{method}0" / "ckpt.pt")["model"]
        for interval in intervals:
            assert untouched(runs[method, interval]) == untouched(runs[method, 0]), (method, interval)
            other = torch.load(tmp_path / f"{method}{interval}" / "ckpt.pt")["model"]
            assert all(torch.equal(weights[k], other[k]) for k in weights), (method, interval)
    # the EMA baseline trains exactly as AdamW, telemetry steps included
    assert [e["loss"] for e in runs["ema", 3]["step_logs"]] == [e["loss"] for e in runs["adamw", 3]["step_logs"]]
    assert [e["vanilla_val_loss"] for e in runs["ema", 3]["eval_logs"]] == [e["val_loss"] for e in runs["adamw", 3]["eval_logs"]]
    # each entry holds its own step's values: those of a run that records every step
    every_step = {e["step"]: e for e in runs["pace", 1]["step_logs"]}
    for entry in runs["pace", 3]["step_logs"][2::3]:
        assert {k: entry[k] for k in TELEMETRY} == {k: every_step[entry["step"]][k] for k in TELEMETRY}
    assert every_step[3]["lambda_mean"] != pytest.approx(every_step[2]["lambda_mean"], rel=1e-2)  # so that this tells steps apart
    # so a resumed run may change stats_interval
    resumed = run(data_dir, tmp_path / "pace3", "--optimizer=pace", *COMMON, "--stats_interval=2", "--resume=True")
    assert resumed["summary"]["status"] == "completed" and resumed["config"]["stats_interval"] == 2


class FakeWandb(types.ModuleType):
    """The part of wandb's module interface train.py uses, recording what it is given."""

    def __init__(self):
        super().__init__("wandb")
        self.inits, self.logs, self.summary, self.finishes = [], [], {}, []

    def init(self, **kwargs):
        self.inits.append(kwargs)

    def log(self, data, step):
        self.logs.append((step, data))

    def finish(self, exit_code):
        self.finishes.append(exit_code)


def test_wandb_receives_what_result_json_holds(data_dir, tmp_path, monkeypatch):
    wandb = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    out = tmp_path / "pace_run"
    settings = ["--optimizer=pace", *COMMON, "--vanilla_eval_interval=6", "--stats_interval=2"]
    result = run(data_dir, out, *settings, "--wandb_log=True", "--wandb_project=p")
    [init] = wandb.inits
    assert init.keys() == {"project", "name", "config"} and (init["project"], init["name"]) == ("p", "pace_run")
    assert json.loads(json.dumps(init["config"])) == result["config"]  # the settings, as result.json holds them
    steps = [step for step, _ in wandb.logs]
    assert steps == sorted(steps)  # wandb refuses steps that go back
    logged = [(step, data) for step, data in wandb.logs if "loss" in data]
    assert logged == [(e["step"], {k: v for k, v in e.items() if k != "step"}) for e in result["step_logs"]]
    logged = [(step, data) for step, data in wandb.logs if "val_loss" in data]
    assert logged == [(e["step"], {k: v for k, v in e.items() if k != "step" and v is not None}) for e in result["eval_logs"]]
    assert len(wandb.logs) == 6 + 2 and result["eval_logs"][0]["vanilla_val_loss"] is None  # not sent
    assert wandb.summary == result["summary"] and wandb.finishes == [0]
    # wandb settings do not change what is computed: a resumed run may change them
    assert run(data_dir, out, *settings, "--resume=True")["summary"]["status"] == "completed"
    assert len(wandb.inits) == 1  # and wandb_log=False logs nothing


def test_wandb_is_imported_only_when_on(data_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError, as when it is not installed
    assert run(data_dir, tmp_path / "off", "--max_steps=1")["summary"]["status"] == "completed"
    message = error_of(train.main, args_for(data_dir, tmp_path / "on", "--max_steps=1", "--wandb_log=True"))
    assert message == "train.py: error: wandb_log=True but wandb is not installed: pip install wandb, or set wandb_log=False"
    assert not (tmp_path / "on").exists()
