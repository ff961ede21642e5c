"""Runs pace.py's tests and train.py's compiled runs (one process; two under torchrun with
DDP and bf16 autocast; float16) under each torch release, one virtual environment at a
time, and prints a markdown table: the tests' results and whether pace.py's fused path runs.

    python -m tools.torch_versions                   # the newest patch of every minor, 2.4 .. 2.15
    python -m tools.torch_versions 2.6.0 2.15.0      # chosen releases
    python -m tools.torch_versions --keep            # keep each venv (DIR/venv-VERSION)

Each release comes from the package registry with its dependencies (on Linux a CUDA
build: several GB). The next release downloads while the tests of this one run; the
downloads stay in DIR/wheels for the next run, and each venv is deleted after its
tests unless --keep. pace.py and its tests are copied first, so editing them while
this runs changes nothing.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

RELEASES = ["2.4.1", "2.5.1", "2.6.0", "2.7.1", "2.8.0", "2.9.1", "2.10.0", "2.11.0", "2.12.1", "2.13.0",
            "2.14.1", "2.15.0"]
# what the tests need besides torch, pytest, numpy and tqdm: the training code and its tests
FILES = ["pace.py", "model.py", "train.py", "settings.py", "checkpoint.py", "processes.py", "data.py", "errors.py",
         "provenance.py", "pytest.ini", "configs", "tests"]
TESTS = ["tests/test_pace.py", "tests/test_compile_and_dtype.py"]
PROBE = "import pace, torch; print(torch.__version__); print(pace.fused_error('cpu') or 'yes')"


def download(version, wheels):
    """Starts fetching torch==version and pytest into the shared wheel folder."""
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--dest", wheels, f"torch=={version}", "pytest",
               "numpy", "tqdm"]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def last_line(text):
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def test_release(version, fetch, work, src, keep):
    """(torch version, tests, fused path) for one release."""
    output = fetch.communicate()[0]
    if fetch.returncode != 0:
        return version, f"download failed: {last_line(output)}", "-", "-"
    venv = os.path.join(work, f"venv-{version}")
    python = os.path.join(venv, "bin", "python")
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", venv], check=True)
        install = subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-index", "--find-links",
                                  os.path.join(work, "wheels"), f"torch=={version}", "pytest", "numpy", "tqdm"],
                                 capture_output=True, text=True)
        if install.returncode != 0:
            return version, f"install failed: {last_line(install.stderr)}", "-", "-"
        probe = subprocess.run([python, "-c", PROBE], cwd=src, capture_output=True, text=True)
        if probe.returncode != 0:
            return version, f"import failed: {last_line(probe.stderr)}", "-", "-"
        installed, fused = probe.stdout.strip().splitlines()[-2:]
        results = []
        for test_file in TESTS:
            tests = subprocess.run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", test_file],
                                   cwd=src, capture_output=True, text=True)
            results.append(last_line(tests.stdout).strip("= "))
        return installed, *results, fused
    finally:
        if not keep:
            shutil.rmtree(venv, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("versions", nargs="*", default=RELEASES, help="torch releases to test")
    parser.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "pace-torch-versions"),
                        help="where the downloads and the venvs go")
    parser.add_argument("--keep", action="store_true", help="keep each venv after its tests")
    args = parser.parse_args()

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    src = os.path.join(args.dir, "src")
    shutil.rmtree(src, ignore_errors=True)
    os.makedirs(src)
    for name in FILES:
        copy = shutil.copytree if os.path.isdir(os.path.join(repo, name)) else shutil.copy
        copy(os.path.join(repo, name), os.path.join(src, name))
    wheels = os.path.join(args.dir, "wheels")
    rows = []
    fetch = download(args.versions[0], wheels)
    for i, version in enumerate(args.versions):
        current = fetch
        if i + 1 < len(args.versions):
            fetch = download(args.versions[i + 1], wheels)
        rows.append(test_release(version, current, args.dir, src, args.keep))
        print(f"torch {rows[-1][0]}: " + "; ".join(rows[-1][1:]), file=sys.stderr, flush=True)

    print(f"\n| torch | {' | '.join(TESTS)} | fused path runs |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"\n(downloads kept in {wheels}; delete it when done)", file=sys.stderr)


if __name__ == "__main__":
    main()
