"""settings.py: config files and --key=value arguments, a run's config read back, their checks, the shipped
configs, dtype and loss auto resolved, the schedule."""

import json
from dataclasses import asdict

import pytest

from conftest import REPO, error_of
from settings import Settings, check_settings, get_lr, load_settings, resolve_auto, settings_of


def test_settings_from_files_and_arguments(tmp_path):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("import math as _math\nlr = 1\nn_layer = 3\nout_dir = 'out/a'\n")
    b.write_text("lr = 2e-3\nbetas = [0.8, 0.9]\n")
    cfg = load_settings([str(a), str(b), "--n_layer=5", "--out_dir=out/x", "--compile=False",
                               "--ema_kappa=None", "--weight_decay=0", "--optimizer='ema'"])
    assert (cfg.lr, cfg.n_layer, cfg.out_dir, cfg.betas) == (2e-3, 5, "out/x", (0.8, 0.9))
    assert (cfg.compile, cfg.ema_kappa, cfg.weight_decay, cfg.optimizer) == (False, None, 0.0, "ema")
    assert type(cfg.weight_decay) is float and load_settings([str(a)]).lr == 1.0
    assert load_settings(["--out_dir=1e3"]).out_dir == "1e3"  # a string setting takes the text as it is


def test_shipped_configs_compose(monkeypatch):
    monkeypatch.chdir(REPO)
    gpt2 = load_settings(["configs/pace.py"])  # the defaults are the GPT-2-124M recipe
    assert (gpt2.n_layer, gpt2.n_embd, gpt2.block_size, gpt2.total_batch_size) == (12, 768, 1024, 524288)
    assert (gpt2.optimizer, gpt2.lambda_pullback, gpt2.ema_kappa) == ("pace", 0.15, 0.2)
    assert 18_000 <= gpt2.max_steps * gpt2.total_batch_size / 524288 <= 20_000
    for method in ("adamw", "ema", "pace"):
        cfg = load_settings(["configs/cpu.py", f"configs/{method}.py"])
        check_settings(cfg)
        assert cfg.optimizer == method and cfg.n_layer == 4 and cfg.total_batch_size % (cfg.batch_size * cfg.block_size) == 0
    assert load_settings(["configs/pace.py", "configs/adamw.py"]).optimizer == "adamw"


@pytest.mark.parametrize("args, message", [
    (["--nope=1"], "unknown setting 'nope' (--nope=1); valid settings: data_dir, out_dir, resume"),
    (["--lr=fast"], "lr must be float, got 'fast'"),
    (["--n_layer=2.5"], "n_layer must be int, got 2.5"),
    (["--compile=1"], "compile must be bool | None, got 1"),
    (["--betas=(0.9,)"], "betas must be tuple[float, float], got (0.9,)"),
    (["--lr"], "--lr: expected --key=value"),
    (["no/such/config.py"], "config file no/such/config.py not found"),
    (["--optimizer=sgd"], "optimizer must be one of adamw, ema, pace, got 'sgd'"),
    (["--schedule=linear"], "schedule must be one of const, cos, wsd"),
    (["--n_head=5"], "n_embd (768) must be a multiple of n_head (5)"),
    (["--max_steps=0"], "max_steps must be positive"),
    (["--grad_clip=-1"], "grad_clip must not be negative, got -1.0"),
    (["--decay_frac=0"], "decay_frac must be in (0, 1], got 0.0"),
    (["--optimizer=pace", "--lambda_pullback=0"], "optimizer=pace needs lambda_pullback > 0"),
])
def test_settings_errors(args, message):
    assert message in error_of(lambda: check_settings(load_settings(args)))


def test_config_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("learning_rate = 1e-3\n")
    assert f"unknown setting 'learning_rate' ({bad})" in error_of(load_settings, [str(bad)])
    bad.write_text("max_steps = '100'\n")
    assert f"max_steps must be int, got '100' ({bad})" in error_of(load_settings, [str(bad)])


def test_learning_rate_schedules():
    cfg = Settings(lr=1.0, warmup_steps=10, max_steps=110, min_lr_ratio=0.1, decay_frac=0.5)
    lrs = {s: [get_lr(t, Settings(**{**cfg.__dict__, "schedule": s})) for t in range(110)]
           for s in ("const", "cos", "wsd")}
    for lr in lrs.values():
        assert lr[:10] == pytest.approx([(t + 1) / 10 for t in range(10)])
    assert lrs["const"][10:] == [1.0] * 100
    assert lrs["cos"][10] == 1.0 and lrs["cos"][60] == pytest.approx(0.55) and 0.1 < lrs["cos"][-1] < 0.101
    assert lrs["wsd"][10:55] == [1.0] * 45 and lrs["wsd"][55] == 1.0 and lrs["wsd"][-1] == pytest.approx(0.1 + 0.9 / 55)
    assert all(a >= b for a, b in zip(lrs["wsd"][10:], lrs["wsd"][11:]))


def test_gpu80gb_config_runs_64_sequences_of_1024(monkeypatch):
    monkeypatch.chdir(REPO)
    cfg = load_settings(["configs/gpu80gb.py", "configs/pace.py"])
    check_settings(cfg)
    assert (cfg.batch_size, cfg.block_size, cfg.total_batch_size) == (64, 1024, 524288)
    assert cfg.total_batch_size // (cfg.batch_size * cfg.block_size * 8) == 1  # one micro-batch per step on 8 GPUs


def test_auto_is_resolved_into_new_settings_and_a_run_keeps_its_choice():
    given = Settings(out_dir="out/x")
    cfg, notes = resolve_auto(given, "cpu")
    assert (cfg.dtype, cfg.loss) == ("float32", "chunked") and notes == []
    assert (given.dtype, given.loss) == ("auto", "auto")  # the checked settings stay as they were given
    kept, notes = resolve_auto(given, "cpu", {"dtype": "bfloat16", "loss": "auto"})
    assert (kept.dtype, kept.loss) == ("bfloat16", "chunked")
    assert notes == ["dtype=bfloat16, as the run in out/x started (dtype=auto would choose float32 on cpu)"]


def test_a_run_s_config_gives_back_its_settings_as_they_were():
    cfg = Settings(lr=3e-3, betas=(0.8, 0.99), ema_kappa=None, out_dir="1e3", compile=False, wandb_run_name=None)
    config = json.loads(json.dumps(asdict(cfg)))  # as result.json holds it: betas a list
    assert settings_of(config) == cfg and settings_of({"lr": 1}).lr == 1.0
    assert error_of(settings_of, {"learning_rate": 1e-3}).startswith("unknown setting 'learning_rate' (the run's config)")
