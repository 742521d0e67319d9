"""`bob ... | head`: a reader that closes the pipe early ends `bob` quietly with 141 (128 + SIGPIPE),
with no BrokenPipeError traceback, also at the interpreter's final flush."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys


def test_a_reader_that_leaves_early_gets_exit_141_and_no_traceback():
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)  # smaller than the output: the writer must block
    proc = subprocess.Popen(
        [sys.executable, "-m", "bobench.cli", "backbones", "list", "--json"],
        stdout=write_end,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        assert reader.read(10)  # what `head -c 10` reads before it exits
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err
