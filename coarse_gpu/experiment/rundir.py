"""The run folder: one job at a time, a rerun resumes or is refused, a complete result is replaced only by one.

``prepare_run_dir(run_dir, config, overwrite, job)`` is called by ``coarse-gpu`` before anything is
written into the folder. It

1. takes an exclusive lock (``fcntl.flock`` on ``<run dir>/.coarse_gpu.lock``, which then holds the
   job's pid, host, start time and command). A second job on the same folder fails at once with a
   message naming the first. The kernel drops the lock when the holder exits, even by SIGKILL, so a
   killed job never leaves the folder locked.
2. compares the job's resolved config with the earlier run's (``results.json``'s ``config``, else
   ``config.yaml``), ignoring ``IGNORED`` keys (where and how it runs, not what it computes):

   =========  ==========================================  ==========================================
   mode       when                                        writes into
   =========  ==========================================  ==========================================
   new        no earlier run                              the run folder
   resume     same config, earlier run not complete       the run folder (training resumes from
              (failed, interrupted, killed)               ``checkpoints/``)
   rerun      same config, earlier run complete           ``partial/``, swapped in when complete
   replace    another config and ``overwrite=true``       ``partial/``, swapped in when complete;
                                                          the earlier run's other outputs removed
   refused    another config, no ``overwrite=true``       nothing (the message names the keys)
   =========  ==========================================  ==========================================

While a run is staged in ``partial/``, the folder keeps the earlier complete results.json, table,
figures and every policy untouched, whatever happens to the new job (an error, a full disk,
SIGTERM, SIGKILL). ``partial/checkpoints`` links to the run's ``checkpoints/`` (checkpoint names
fingerprint the model and data, so runs share that folder safely), so a staged rerun resumes
training too. ``RunPlan.commit()`` swaps the outputs in one by one (rename, results.json last)
after writing a list of them to ``partial/.complete``; a job killed in the middle of the swap leaves
that list, and the next job on the folder finishes the swap before anything else.
"""
from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from coarse_gpu.utils.io import atomic_write_json

log = logging.getLogger("coarse_gpu")

LOCK_NAME = ".coarse_gpu.lock"
STAGING = "partial"
COMMIT_LIST = ".complete"
TRASH = ".replaced"
#: What a job writes into its folder (everything a complete rerun replaces). Not listed, so never
#: touched: checkpoints/ (fingerprinted), wandb/ and cli.log (logs), the lock, the user's own files.
OUTPUTS = ("policies", "results.json", "table.txt", "config.yaml", "run.json", "share_vs_k.png",
           "training_curves.png", ".hydra")
OUTPUT_GLOBS = ("treatments_k*.png",)
#: Config keys (and key prefixes) that do not change what a run computes.
IGNORED = ("quiet", "logger", "launcher", "experiment", "overwrite", "debug", "model.checkpoint")


class RunFolderError(RuntimeError):
    """The run folder cannot take this job: locked by another job, or it holds another config's run."""


class RunFolderBusy(RunFolderError):
    """Another job holds the run folder's lock."""


# ---- the lock -------------------------------------------------------------------------------------
class RunLock:
    """An exclusive, non-blocking ``flock`` on ``<folder>/.coarse_gpu.lock`` naming its holder."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: Optional[int] = None

    def acquire(self, job: dict) -> None:
        """Take the lock and record ``job`` (pid, host, started, command) in the lock file.

        Raises RunFolderBusy naming the holder when another process has it.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                # A file system without locks (some network mounts): run, but say what is not guaranteed.
                log.warning("run folder %s cannot be locked (%s): a second job on it would not be detected",
                            self.folder, err.strerror)
                self._fd = fd
                return
            os.close(fd)
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise RunFolderBusy(f"run folder {self.folder} is in use by another coarse-gpu job "
                                f"({self._holder()}); wait for it to finish or use another hydra.run.dir") from None
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(job) + "\n").encode())
        os.fsync(fd)
        self._fd = fd

    def _holder(self) -> str:
        try:
            info = json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            info = {}
        if not info.get("pid"):
            return "pid unknown: it is just starting"
        return (f"pid {info['pid']} on host {info.get('host', '?')}, started {info.get('started', '?')}: "
                f"{info.get('command', '?')}")

    def release(self) -> None:
        """Clear the holder's record and drop the lock (the file stays: deleting it would race)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        finally:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            except OSError:  # never locked (a file system without locks)
                pass
            os.close(fd)


# ---- configs ------------------------------------------------------------------------------------
def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict) or not tree:
        return {prefix.rstrip("."): tree} if prefix else {}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
    return out


def _ignored(key: str) -> bool:
    return any(key == p or key.startswith(p + ".") for p in IGNORED)


def config_differences(old: dict, new: dict) -> list[str]:
    """``key: old -> new`` for every result-changing key that differs (IGNORED keys left out)."""
    a, b = _flatten(old), _flatten(new)
    out = []
    for key in sorted(set(a) | set(b)):
        if _ignored(key):
            continue
        va, vb = a.get(key, "<unset>"), b.get(key, "<unset>")
        if va != vb:
            out.append(f"{key}: {va!r} -> {vb!r}")
    return out


@dataclass
class PreviousRun:
    """What the folder holds from an earlier job: its config (None: unreadable) and status."""

    config: Optional[dict]
    status: Optional[str]
    source: str
    problem: Optional[str] = None


def previous_run(run_dir: Path) -> Optional[PreviousRun]:
    """The earlier run in ``run_dir`` from results.json (config + status), else config.yaml; None if neither."""
    res = run_dir / "results.json"
    if res.exists():
        try:
            doc = json.loads(res.read_text(encoding="utf-8"))
            if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict):
                raise ValueError("it has no 'config'")
            return PreviousRun(doc["config"], doc.get("status"), "results.json")
        except (OSError, ValueError) as err:
            return PreviousRun(None, None, "results.json", f"{res} cannot be read ({err})")
    cfg = run_dir / "config.yaml"
    if cfg.exists():
        try:
            doc = yaml.safe_load(cfg.read_text(encoding="utf-8"))
            if not isinstance(doc, dict):
                raise ValueError("not a mapping")
            return PreviousRun(doc, None, "config.yaml")
        except (OSError, ValueError, yaml.YAMLError) as err:
            return PreviousRun(None, None, "config.yaml", f"{cfg} cannot be read ({err})")
    return None


def existing_outputs(folder: Path) -> list[Path]:
    """The job outputs (OUTPUTS, OUTPUT_GLOBS) present in ``folder``."""
    found = [folder / n for n in OUTPUTS if (folder / n).exists()]
    for pattern in OUTPUT_GLOBS:
        found += sorted(folder.glob(pattern))
    return found


# ---- moving outputs -----------------------------------------------------------------------------
def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _move(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``, replacing whatever ``dst`` is (a rename cannot replace a folder)."""
    _remove(dst)
    os.replace(src, dst)


def finish_swap(run_dir: Path) -> bool:
    """Complete a swap that ``partial/.complete`` records (a kill mid-commit); True if there was one.

    Idempotent: each output is moved at most once (what is already moved is no longer in partial/),
    and ``.complete`` goes last, so a job killed here too leaves a swap the next one finishes.
    """
    staging = run_dir / STAGING
    mark = staging / COMMIT_LIST
    if not mark.is_file():
        return False
    items = json.loads(mark.read_text(encoding="utf-8"))["items"]
    trash = run_dir / TRASH
    trash.mkdir(exist_ok=True)
    for name in items:
        src = staging / name
        if not (src.exists() or src.is_symlink()):
            continue  # moved before the kill
        dst = run_dir / name
        if dst.exists() or dst.is_symlink():
            _move(dst, trash / name)
        os.replace(src, dst)
    for old in existing_outputs(run_dir):
        if old.name not in items:  # an earlier config's figure or file this run did not write
            _move(old, trash / old.name)
    shutil.rmtree(trash)
    for p in staging.iterdir():
        if p.name != COMMIT_LIST:
            _remove(p)
    mark.unlink()
    staging.rmdir()
    return True


def _fresh_staging(run_dir: Path) -> Path:
    staging = run_dir / STAGING
    if staging.exists() or staging.is_symlink():
        _remove(staging)
    staging.mkdir()
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    try:  # relative: the run folder can be moved
        os.symlink(os.path.join("..", "checkpoints"), staging / "checkpoints", target_is_directory=True)
    except OSError as err:  # a file system without symlinks: training restarts instead of resuming
        log.warning("could not link %s to the run's checkpoints (%s); a staged rerun trains anew", staging, err)
    return staging


# ---- the plan -----------------------------------------------------------------------------------
@dataclass
class RunPlan:
    """Where this job writes (``out_dir``), why (``mode``), and the lock it holds until ``release()``."""

    run_dir: Path
    out_dir: Path
    mode: str
    previous_status: Optional[str] = None
    lock: Optional[RunLock] = field(default=None, repr=False)

    @property
    def staged(self) -> bool:
        return self.out_dir != self.run_dir

    def commit(self) -> None:
        """A staged run completed: swap its outputs into the run folder (results.json last)."""
        if not self.staged:
            return
        names = [p.name for p in self.out_dir.iterdir() if p.name not in ("checkpoints", COMMIT_LIST)]
        names.sort(key=lambda n: n == "results.json")
        atomic_write_json(self.out_dir / COMMIT_LIST, {"items": names})
        finish_swap(self.run_dir)
        self.out_dir = self.run_dir

    def kept(self) -> str:
        """What the folder still holds, for error messages ('' when nothing earlier is protected)."""
        if not self.staged:
            return ""
        return (f"the earlier run's outputs in {self.run_dir} are unchanged (this run's partial outputs are in "
                f"{self.out_dir})")

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def _decide(run_dir: Path, config: dict, overwrite: bool) -> tuple[str, Optional[str]]:
    """(mode, previous status) for a job with ``config``; raises RunFolderError when it must refuse."""
    prev = previous_run(run_dir)
    if prev is None:
        leftovers = existing_outputs(run_dir) + ([run_dir / STAGING] if (run_dir / STAGING).exists() else [])
        if not leftovers:
            return "new", None
        if not overwrite:
            raise RunFolderError(
                f"run folder {run_dir} holds outputs of an earlier run ({', '.join(p.name for p in leftovers)}) "
                "but no results.json or config.yaml to compare configs with; pass overwrite=true to replace "
                "them, or use another hydra.run.dir")
        return "replace", None
    if prev.config is None:
        if not overwrite:
            raise RunFolderError(f"run folder {run_dir}: {prev.problem}; pass overwrite=true to replace that run, "
                                 "or use another hydra.run.dir")
        return "replace", None
    diffs = config_differences(prev.config, config)
    if not diffs:
        return ("rerun" if prev.status == "complete" else "resume"), prev.status
    if not overwrite:
        shown = "; ".join(diffs[:6]) + (f"; and {len(diffs) - 6} more" if len(diffs) > 6 else "")
        raise RunFolderError(
            f"run folder {run_dir} holds a {prev.status or 'started'} run with another config ({shown}); "
            "rerun with that config to resume it, use another hydra.run.dir, or pass overwrite=true to replace it "
            "(its outputs stay until the new run completes)")
    return "replace", prev.status


def prepare_run_dir(run_dir: str | os.PathLike, config: dict, overwrite: bool = False,
                    job: Optional[dict] = None) -> RunPlan:
    """Lock ``run_dir`` and decide where this job writes (module docstring). Call ``release()`` at the end.

    config : the job's resolved config (a plain dict, as results.json stores it).
    overwrite : replace an earlier run with another config.
    job : what the lock file records about this job (pid, host, started, command).
    Raises RunFolderBusy / RunFolderError before anything in the folder is changed.
    """
    run_dir = Path(run_dir)
    lock = RunLock(run_dir)
    lock.acquire(job or {"pid": os.getpid()})
    try:
        if finish_swap(run_dir):
            log.info("finished swapping in the outputs of a completed rerun in %s (its job was stopped mid-swap)",
                     run_dir)
        mode, status = _decide(run_dir, config, overwrite)
        staging = run_dir / STAGING
        if mode in ("rerun", "replace"):
            out_dir = _fresh_staging(run_dir)
            log.info("run folder %s holds a %s run%s: this job writes into %s and replaces the outputs only when "
                     "it completes", run_dir, status or "earlier",
                     " with another config (overwrite=true)" if mode == "replace" else " with the same config", out_dir)
        else:
            out_dir = run_dir
            if staging.exists():  # an unfinished rerun of another config: never complete, nothing to keep
                log.warning("removing %s, the partial outputs of an unfinished rerun with another config", staging)
                _remove(staging)
            if mode == "resume":
                log.info("run folder %s holds a %s run with the same config: resuming it", run_dir, status or "started")
    except BaseException:
        lock.release()
        raise
    return RunPlan(run_dir, out_dir, mode, status, lock)


__all__ = ["IGNORED", "OUTPUTS", "RunFolderBusy", "RunFolderError", "RunLock", "RunPlan", "config_differences",
           "finish_swap", "prepare_run_dir", "previous_run"]
