"""README.md and docs/ name only what exists: in their code blocks every script, module, config file,
make target, train.py setting and command-line flag; in the README's settings table every setting,
and every setting is in it. The results READMEs' tables are what studies/analysis.py prints."""

import glob
import os
import re
import shlex
from dataclasses import fields

import pytest

from conftest import REPO
from settings import Settings
from studies import analysis

DOCS = ["README.md", *sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "docs", "*.md")))]
SETTINGS = {f.name for f in fields(Settings)}
PASS_SETTINGS_ON = {"train.py", "demo.py", "studies/sweep.py", "bench/training.py"}  # take train.py's --key=value too
README_LIMIT = 14_000  # bytes: a README a newcomer reads in ten minutes


def read(path):
    with open(os.path.join(REPO, path), encoding="utf-8") as f:
        return f.read()


def commands(text):
    """The shell commands of a markdown text's shell code blocks (``` or ```bash): continuation
    lines joined, comments dropped."""
    for lang, block in re.findall(r"^```(\w*)\n(.*?)^```", text, re.M | re.S):
        if lang not in ("", "bash"):
            continue
        for line in block.replace("\\\n", " ").splitlines():
            line = re.split(r"\s#\s", line)[0].strip()
            if line:
                yield line


def flags_of(script):
    """The options a script's argparse knows."""
    return set(re.findall(r"add_argument\(\s*\"(--[a-z_]+)\"", read(script)))


def problems(command):
    """What in one command does not exist: scripts, modules, configs, make targets, settings, flags."""
    words = shlex.split(command)
    while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):  # VAR=value prefixes
        words = words[1:]
    if not words:
        return []
    if words[0] == "make":
        targets = set(re.findall(r"^([a-z-]+):", read("Makefile"), re.M))
        return [f"make target {t}" for t in words[1:] if t not in targets]
    if words[0] == "sbatch":
        script = next(w for w in words[1:] if not w.startswith("-"))
        return [] if os.path.isfile(os.path.join(REPO, script)) else [f"job script {script}"]
    if not re.fullmatch(r"(.*/)?(python3?|torchrun)", words[0]):
        return []  # another program (bash, lm_eval, kill)
    rest = words[1:]
    if rest[:2] == ["-m", "torch.distributed.run"] or rest[:1] == ["launch.py"]:  # launch.py takes torchrun's options
        rest = rest[2:] if rest[0] == "-m" else rest[1:]
    while rest and rest[0].startswith("--") and not rest[0].endswith(".py"):  # torchrun's own options
        rest = rest[1:]
    if not rest:
        return []
    if rest[0] == "-m":
        script, rest = rest[1].replace(".", "/") + ".py", rest[2:]
    else:
        script, rest = rest[0], rest[1:]
    if not os.path.isfile(os.path.join(REPO, script)):
        return [f"script {script}"]
    found = []
    known = flags_of(script) | ({f"--{s}" for s in SETTINGS} if script in PASS_SETTINGS_ON else set())
    if script == "train.py":
        known = {f"--{s}" for s in SETTINGS}
    for word in rest:
        if word.startswith("configs/") and not os.path.isfile(os.path.join(REPO, word)):
            found.append(f"config {word}")
        flag = word.split("=")[0]
        if re.fullmatch(r"--[a-z_]+", flag) and flag not in known:
            found.append(f"{script} {flag}")
    return found


@pytest.mark.parametrize("doc", DOCS)
def test_the_commands_name_what_exists(doc):
    text = read(doc)
    found = [(command, p) for command in commands(text) for p in problems(command)]
    assert not found, found
    assert list(commands(text)) or doc != "README.md"  # the parser found the commands


def test_a_wrong_name_is_found():
    assert problems("python train.py configs/cpu.py --lrr=1") == ["train.py --lrr"]
    assert problems("torchrun --standalone --nproc_per_node=8 train.py configs/gpu40gb.py") == ["config configs/gpu40gb.py"]
    assert problems("python -m tools.evaluate out --parts test") == ["tools/evaluate.py --parts"]
    assert problems("python -m tools.evalute out") == ["script tools/evalute.py"]
    assert problems("PACE_DATA_FILES=x make demos") == ["make target demos"]
    assert problems("python -m studies.sweep --config configs/cpu.py --max_steps=3 --lr 1e-3") == []
    assert problems("python launch.py --standalone --nproc_per_node=8 train.py configs/pace.py --lrr=1") == ["train.py --lrr"]
    assert problems("OUT_DIR=out/x sbatch --nodes=4 runs/slurm.batch") == ["job script runs/slurm.batch"]


def test_the_readme_settings_table_is_every_setting_and_only_settings():
    table = read("README.md").split("| setting | default | meaning |")[1].split("\n\n")[0]
    named = {name for row in table.splitlines()[2:] for name in re.findall(r"`(\w+)`", row.split("|")[1])}
    assert named == SETTINGS, (named - SETTINGS, SETTINGS - named)


def test_the_readme_is_short():
    assert len(read("README.md").encode()) <= README_LIMIT


def printed_tables(out):
    return re.findall(r"(?:^\|.*\n)+", out, re.MULTILINE)


@pytest.mark.parametrize("study", ["results/cpu300", "results/schedules300/const", "results/schedules300/wsd"])
def test_the_results_tables_are_what_report_prints(study, capsys):
    assert analysis.main(["report", os.path.join(REPO, study)]) == 0
    tables = printed_tables(capsys.readouterr().out)
    readme = os.path.join("results", study.split("/")[1], "README.md")
    assert tables and all(table in read(readme) for table in tables)


def test_the_schedules_table_is_what_across_prints(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(REPO)  # the column headers name the folders as given
    folders = ["results/cpu300", "results/schedules300/const", "results/schedules300/wsd"]
    assert analysis.main(["across", *folders, "--plot", str(tmp_path / "test_vs_alpha.png")]) == 0
    tables = printed_tables(capsys.readouterr().out)
    assert len(tables) == 2 and all(table in read("results/schedules300/README.md") for table in tables)
