"""
How the scripts stop on bad input. The code that finds a bad setting, file or folder raises
Error with one line that names it; the script the user ran prints that line after its own
name, as argparse does ("sample.py: error: /x/ckpt.pt not found"), and exits with status 1,
without a traceback. Each script's main names itself once: `with script_errors("sample.py"):`
(train.py through processes.ending, which also stops the other processes of a torchrun run).
"""

import sys
from contextlib import contextmanager


class Error(Exception):
    """A failed check: its message is one line that says what is wrong and names the argument, key or file."""


def first_line(error):
    """The first line of an exception's message, or the name of its type when it has none."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def error_line(script, error):
    """What the script prints for an Error: "script: error: message"."""
    return f"{script}: error: {error}"


@contextmanager
def script_errors(script):
    """An Error raised in the block stops the script: error_line on stderr, exit status 1 (SystemExit)."""
    try:
        yield
    except Error as error:
        sys.exit(error_line(script, error))
