"""The run directory: one folder per stage, each closed by a `manifest.json`.

A stage is complete when its manifest exists (it is written last, atomically). A rerun
skips a stage whose config hash and input fingerprints equal the manifest's. Downstream
stages take an upstream stage's `fingerprint` as their input, so a changed upstream
reruns everything after it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import platform
import tempfile
import time
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from .errors import UserError

__all__ = [
    "atomic_write_text",
    "atomic_write_json",
    "atomic_output",
    "fsync_tree",
    "write_error",
    "config_hash",
    "hash_files",
    "library_versions",
    "read_manifest",
    "StageRun",
    "prepare_run_dir",
    "upstream_fingerprint",
]

MANIFEST = "manifest.json"
_VERSIONED = ("bonito_adapt", "torch", "transformers", "datasets", "trl", "peft", "accelerate",
              "bitsandbytes", "lm_eval", "vllm")


# Errors of the machine rather than the program: reported in one line (UserError), not as a traceback.
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR}


def write_error(path: Path, error: OSError) -> UserError | None:
    """The one-line error for a failed write of `path`, or None for an OSError that is a bug."""
    if error.errno not in _ENVIRONMENT_ERRNOS:
        return None
    reason = error.strerror or os.strerror(error.errno)
    fix = ("free some disk space" if error.errno in (errno.ENOSPC, errno.EDQUOT)
           else "make it writable or choose another output_dir")
    return UserError(f"cannot write {str(path)!r} ({reason}); {fix}, then rerun the same command to resume "
                     "(finished work is kept)")


def _fsync_path(path: Path | str) -> None:
    """fsync a file (or folder) that is already written and closed."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable; some filesystems cannot fsync a folder, which is fine."""
    with contextlib.suppress(OSError):
        _fsync_path(folder)


def fsync_tree(folder: Path) -> None:
    """fsync every file under `folder` (written by a library that does not), before it is renamed into place."""
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            _fsync_path(path)
    _fsync_dir(Path(folder))


def _new_file_mode() -> int:
    """The mode `open()` gives a new file under the process's umask (read without changing it for long)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def follow_umask(folder: Path) -> None:
    """Give the files under `folder` the mode of a new file under the umask: libraries that write through
    their own temp files (safetensors) leave them 0600, unreadable to the group that serves or shares them."""
    mode = _new_file_mode()
    for path in Path(folder).rglob("*"):
        if path.is_file() and not path.is_symlink() and path.stat().st_mode & 0o777 != mode:
            path.chmod(mode)


@contextlib.contextmanager
def atomic_output(path: Path):
    """Yield a temp path beside `path` (same suffix) for a writer that wants a file name (e.g. savefig);
    on success it is fsynced and renamed onto `path`, on failure removed."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
        # mkstemp makes the file 0600; the renamed file gets the mode any new file gets (0644 under umask 022).
        os.fchmod(fd, _new_file_mode())
        os.close(fd)
    except OSError as error:
        raise (write_error(path, error) or error) from None
    try:
        yield Path(tmp)
        _fsync_path(tmp)
        os.replace(tmp, path)
    except OSError as error:
        Path(tmp).unlink(missing_ok=True)
        raise (write_error(path, error) or error) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file in the same folder, fsync, then rename: readers never see half a file.

    A full disk or a read-only folder is a one-line UserError; the temp file is removed and the
    previous version of `path` (if any) stays as it was.
    """
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def config_hash(config: Any) -> str:
    """A stable hash of a config (pydantic model or plain data)."""
    if hasattr(config, "model_dump"):
        config = config.model_dump(mode="json")
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def hash_files(paths: Iterable[Path]) -> str:
    """Content hash of files (sorted by path), for fingerprinting local inputs."""
    digest = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        digest.update(str(path).encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            continue
    return versions


def read_manifest(stage_dir: Path) -> dict[str, Any] | None:
    path = Path(stage_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def prepare_run_dir(run_dir: Path) -> Path:
    """Create the run directory or explain in one line why it cannot be used."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"output_dir {str(run_dir)!r} is a file; set output_dir to a folder path")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write_test.{os.getpid()}"  # per process: ranks of `accelerate launch` probe at once
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise UserError(
            f"output_dir {str(run_dir)!r} is not writable ({error.strerror}); choose a folder you can write to"
        ) from None
    return run_dir


class StageRun:
    """Bookkeeping for one stage in a run directory.

    Usage inside a stage's `run`::

        stage = StageRun(run_dir, "generate", config=cfg, inputs={"corpus": "ab12..."})
        if stage.is_current() and not force:
            return stage.dir
        ...work, writing into stage.dir...
        stage.finish(counts={...}, outputs={...})
    """

    def __init__(self, run_dir: Path, name: str, config: Any, inputs: Mapping[str, str],
                 execution: Mapping[str, Any] | None = None):
        """`config`: a recipe section (split into result and execution settings) or the result settings as a
        dict, with `execution` beside it. Only the result settings and `inputs` make the fingerprint."""
        from ._schema import split_settings

        self.run_dir = prepare_run_dir(Path(run_dir))
        self.name = name
        self.dir = self.run_dir / name
        if hasattr(config, "model_dump"):
            self.config, split_execution = split_settings(config)
            execution = {**split_execution, **(execution or {})}
        else:
            self.config = config
        self.execution = dict(execution or {})
        self.config_hash = config_hash(self.config)
        self.inputs = dict(inputs)
        self.fingerprint = config_hash({"config": self.config_hash, "inputs": self.inputs})
        self._started = time.time()

    def is_current(self) -> bool:
        """True when a complete manifest with the same config and inputs exists."""
        manifest = read_manifest(self.dir)
        return bool(manifest) and manifest.get("fingerprint") == self.fingerprint

    def start(self) -> Path:
        """Mark the stage as running again: the old manifest goes, partial artifacts stay (for resume).

        Temp files of writes cut short by a kill (`.NAME.*.tmp*`) are removed; the files they were
        meant to replace are intact, since a write only lands by rename.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / MANIFEST).unlink(missing_ok=True)
        for leftover in self.dir.rglob(".*.tmp*"):
            if leftover.is_file() and ".tmp" in leftover.name:
                leftover.unlink(missing_ok=True)
        self._started = time.time()
        return self.dir

    def finish(self, counts: Mapping[str, Any] | None = None, outputs: Mapping[str, Any] | None = None,
               extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        finished = time.time()
        manifest = {
            "stage": self.name,
            "fingerprint": self.fingerprint,
            "config_hash": self.config_hash,
            "config": self.config,
            "execution": self.execution,  # how it was computed; not part of the fingerprint
            "inputs": self.inputs,
            "counts": dict(counts or {}),
            "outputs": dict(outputs or {}),
            "versions": library_versions(),
            "timings": {
                "started": datetime.fromtimestamp(self._started, timezone.utc).isoformat(),
                "finished": datetime.fromtimestamp(finished, timezone.utc).isoformat(),
                "seconds": round(finished - self._started, 3),
            },
        }
        manifest.update(extra or {})
        atomic_write_json(self.dir / MANIFEST, manifest)
        return manifest


def upstream_fingerprint(run_dir: Path, stage: str) -> str:
    """The fingerprint of a completed upstream stage; a one-line error if it has not run."""
    manifest = read_manifest(Path(run_dir) / stage)
    if manifest is None:
        raise UserError(
            f"stage {stage!r} has not completed in {str(run_dir)!r}; run it first "
            f"(python -m bonito_adapt run RECIPE --stages {stage})"
        )
    return manifest["fingerprint"]
