"""Child processes of a run (GPAW workers, VASP under custodian, SevenNet's trainer) end when the
run is interrupted.

The CLI turns SIGTERM (a kill, a scheduler's time limit) into the KeyboardInterrupt of Ctrl-C, so
an interruption reaches the parent as an exception; a child started with ``subprocess.Popen`` does
not get it. Measured on 2026-12-05: a ``carrierflow run --learn`` killed during its fine-tuning left
SevenNet's trainer running for 12 CPU minutes, at full load on one of the two cores, slowing the
next training on the machine sixfold (3 min per epoch against 30 s) until it was found and killed.
custodian, which starts VASP for atomate2's jobs, does not end VASP either when its caller is
interrupted: the children are found by the process tree, not by the ``Popen`` that made them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psutil


@contextlib.contextmanager
def children_ended(grace_s: float = 30.0) -> Iterator[None]:
    """If the block is left by an exception (Ctrl-C and SIGTERM included), terminate every
    process it started that still runs, with their own children (mpirun's ranks), kill those
    left after ``grace_s``, and re-raise. Processes started before the block, and a block that
    ends normally, are left alone."""
    me = psutil.Process()
    before = {child.pid for child in me.children(recursive=True)}
    try:
        yield
    except BaseException:
        started = [child for child in me.children(recursive=True) if child.pid not in before]
        for child in started:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.terminate()
        _, alive = psutil.wait_procs(started, timeout=grace_s)
        for child in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        psutil.wait_procs(alive, timeout=grace_s)
        raise
