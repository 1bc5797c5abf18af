"""Child processes of a run (GPAW workers, SevenNet's trainer) end when the run is interrupted.

The CLI turns SIGTERM (a kill, a scheduler's time limit) into the KeyboardInterrupt of Ctrl-C, so
an interruption reaches the parent as an exception; a child started with ``subprocess.Popen`` does
not get it. Measured on 2026-12-05: a ``carrierflow run --learn`` killed during its fine-tuning left
SevenNet's trainer running for 12 CPU minutes, at full load on one of the two cores, slowing the
next training on the machine sixfold (3 min per epoch against 30 s) until it was found and killed.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator


@contextlib.contextmanager
def ended_with_caller(process: subprocess.Popen, grace_s: float = 30.0) -> Iterator[None]:
    """Terminate ``process`` (then kill it after ``grace_s``) if the block is left by an
    exception, Ctrl-C included, and re-raise; a child that finishes normally is left alone."""
    try:
        yield
    except BaseException:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        raise
