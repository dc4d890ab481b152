"""Errors a person can read: one line on stderr naming the problem, the traceback only on request.

``coarse-gpu`` prints ``coarse-gpu: <one line>`` for any error and exits non-zero (1; 128 + the
signal number when stopped by SIGTERM / SIGINT). The line is the error's own message, flattened
(a data check that found several problems lists them separated by "; "); an error the code did not
anticipate (not a config, data, file or run-folder error) also names the source line it came from.
The full traceback is always written to the run's ``cli.log``, and printed as well when the user
asks for it: ``COARSE_GPU_DEBUG=1``, ``HYDRA_FULL_ERROR=1`` (set by the user) or ``debug=true``.
"""
from __future__ import annotations

import errno
import logging
import os
import re
import signal
import traceback
from pathlib import Path
from typing import Optional, Sequence

log = logging.getLogger("coarse_gpu")

DEBUG_ENV = ("COARSE_GPU_DEBUG", "HYDRA_FULL_ERROR")
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_PACKAGE = str(Path(__file__).resolve().parents[1])


class ConfigValueError(ValueError):
    """Config values out of range or inconsistent. ``problems`` lists each one, naming its key."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("config error: " + "; ".join(self.problems))


class JobFailed(Exception):
    """A job's error as the line to print and the exit code; the original is its ``__cause__``.

    Raised from a job of a sweep: Hydra records the job as failed and runs the others.
    """

    def __init__(self, line: str, exit_code: int = 1) -> None:
        self.line = line
        self.exit_code = int(exit_code)
        super().__init__(line)


class JobExit(SystemExit):
    """``JobFailed`` for a single run (or an error every job of a sweep would have: a config error).

    A SystemExit passes Hydra's job runner, which would otherwise print its own "Error executing job
    with overrides" report, straight to ``coarse-gpu``'s main, which prints ``line``.
    """

    def __init__(self, line: str, exit_code: int = 1) -> None:
        self.line = line
        self.exit_code = int(exit_code)
        super().__init__(self.exit_code)


def _truthy(value: Optional[str]) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def debug_requested(environ: Optional[dict] = None, argv: Sequence[str] = ()) -> bool:
    """True when the user asked for tracebacks (DEBUG_ENV variables, or a ``debug=true`` override)."""
    env = os.environ if environ is None else environ
    if any(_truthy(env.get(name)) for name in DEBUG_ENV):
        return True
    return any(re.fullmatch(r"\+*debug=(1|true|yes|on)", a.strip().lower()) for a in argv)


def _flat(text: str) -> str:
    """A multi-line message as one line: the head, then each "- item" joined by "; "."""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    if not lines:
        return ""
    head, items = lines[0], [ln.lstrip("-* ").strip() for ln in lines[1:]]
    if not items:
        return head
    return head + (" " if head.endswith(":") else ": ") + "; ".join(items)


def _origin(err: BaseException) -> str:
    """``coarse_gpu/<file>.py:<line> in <function>``: the innermost frame in this package."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename.startswith(_PACKAGE)]
    if not frames:
        return ""
    f = frames[-1]
    return f"{os.path.relpath(f.filename, Path(_PACKAGE).parent)}:{f.lineno} in {f.name}"


def _known(err: BaseException) -> bool:
    from omegaconf.errors import OmegaConfBaseException  # here: only when an error is being reported

    # here: rundir.py loads torch (utils), and errors.py is imported by the torch-free config check
    from coarse_gpu.experiment.rundir import RunFolderError

    try:
        from hydra.errors import HydraException  # here: hydra loads only when an error is being reported
    except ImportError:  # pragma: no cover
        HydraException = ()  # type: ignore[assignment,misc]
    return isinstance(err, (ValueError, OSError, RunFolderError, OmegaConfBaseException, HydraException))


def one_line(err: BaseException) -> str:
    """The error as one readable line (module docstring)."""
    if isinstance(err, KeyboardInterrupt):
        signum = getattr(err, "signum", signal.SIGINT)
        return f"interrupted by {signal.Signals(signum).name}"
    if isinstance(err, OSError) and err.filename is not None:
        what = err.strerror or str(err)
        if err.errno in DISK_FULL:
            return f"disk full ({what}): {err.filename} was not written"
        return f"{what}: {err.filename}"
    text = _flat(str(err)) or type(err).__name__
    if _known(err):
        return text
    where = _origin(err)
    return f"{type(err).__name__}: {text}" + (f" (at {where})" if where else "")


def exit_code(err: BaseException) -> int:
    """128 + the signal number for an interruption (the shell's convention), else 1."""
    if isinstance(err, KeyboardInterrupt):
        return 128 + int(getattr(err, "signum", signal.SIGINT))
    return 1


def log_traceback(err: BaseException, where: str = "") -> None:
    """Write ``err``'s full traceback to the log files only (the console gets one line)."""
    root = logging.getLogger()
    files = [h for h in root.handlers if isinstance(h, logging.FileHandler)]
    if not files:
        return
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "job failed%s: %s", (where, one_line(err)),
                            (type(err), err, err.__traceback__))
    for h in files:
        if record.levelno >= h.level:
            h.handle(record)


__all__ = ["ConfigValueError", "DEBUG_ENV", "JobExit", "JobFailed", "debug_requested", "exit_code", "log_traceback", "one_line"]
