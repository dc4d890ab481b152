"""SIGTERM and SIGINT end a job the way Ctrl-C does: as an exception the pipeline records as "interrupted".

A cluster stops a job with SIGTERM (SLURM at its time limit or on preemption, then SIGKILL after a
grace period); Python's default for SIGTERM is to die on the spot, leaving results.json at
"running". ``stop_on_signals()`` turns SIGTERM (and SIGINT) into ``Terminated``, a
``KeyboardInterrupt``, so the pipeline's handler writes ``status: "interrupted"`` with what finished,
training keeps its last per-epoch checkpoint, and the same command resumes. A second signal during
that clean-up is ignored (the clean-up is a few atomic writes); a third stops at once.
"""
from __future__ import annotations

import contextlib
import logging
import signal
import threading
from typing import Iterator

log = logging.getLogger("coarse_gpu")

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Terminated(KeyboardInterrupt):
    """The job received ``signum`` (SIGTERM or SIGINT)."""

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        super().__init__(f"received {signal.Signals(signum).name}")


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, SIGTERM / SIGINT raise ``Terminated``; the previous handlers come back after.

    Only the main thread can install signal handlers; elsewhere (a job run in a thread) the block
    runs with the handlers it has.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def handler(signum, frame):  # noqa: ARG001 - the signal module's signature
        received.append(signum)
        if len(received) == 1:
            raise Terminated(signum)
        if len(received) == 2:
            log.warning("%s received again: finishing the clean-up (send it once more to stop at once)",
                        signal.Signals(signum).name)
            return
        raise Terminated(signum)

    previous = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


__all__ = ["Terminated", "stop_on_signals"]
