"""File I/O shared by every command: atomic writes (a reader never sees a half-written output,
and an interrupted run leaves the previous version, or nothing, in place) and strict YAML reading."""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import yaml


# host (dots made safe for file names) and pid of this process, in the names of its temporary files
_HOST = socket.gethostname().replace(".", "_")
_OWNER = f"{_HOST}-{os.getpid()}"


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **open_kwargs) -> Iterator[Any]:
    """Open a temporary file beside ``path`` and move it into place only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the writer's host and pid in the name: a later run can tell a killed writer's leftovers
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_OWNER}.", suffix=".tmp")
    # mkstemp makes the file private (0600); outputs and caches are shared, so follow the umask.
    os.chmod(tmp, 0o666 & ~current_umask())
    try:
        with os.fdopen(fd, mode, **open_kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_write(path) as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a mapping that names a key twice (PyYAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} appears twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml(path: Path, error: type[ValueError]):
    """A YAML file as data, every problem (missing, not UTF-8, invalid, a repeated key) one
    ``error`` naming the file."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except IsADirectoryError:
        raise error(f"{path}: is a folder, not a YAML file") from None
    except UnicodeDecodeError as err:
        raise error(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8") from None
    except yaml.YAMLError as err:
        raise error(f"{path}: not valid YAML: {err}") from None


class OutputError(ValueError):
    """An output folder that cannot take the results; found before any work is done."""


def prepare_output_dir(out: str | os.PathLike, names=()) -> Path:
    """Create ``out`` and check, before hours of scoring, that files can be written there and
    that none of ``names`` (the files the command will write) is a folder."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        raise OutputError(f"{out}: cannot write results there ({err.strerror or err})") from None
    for name in names:
        if (out / name).is_dir():
            raise OutputError(f"{out / name}: is a folder, where clipft writes a file; remove or rename it")
    return out


def os_error_message(err: OSError) -> str:
    """One line for an operating-system failure while writing: the file, the reason, what to do."""
    where = f"{err.filename}: " if err.filename else ""
    advice = {errno.ENOSPC: "free some disk space (or write elsewhere) and run again",
              errno.EDQUOT: "free some of your disk quota and run again",
              errno.EROFS: "the file system is read-only: choose a writable folder",
              errno.EACCES: "you may not write there: choose a folder you can write to",
              errno.EPERM: "you may not write there: choose a folder you can write to"}.get(err.errno, "")
    return f"{where}{err.strerror or err}" + (f"; {advice}" if advice else "") + \
        " (finished outputs and the cache are left as they were)"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _dead_owner(name: str) -> bool:
    """Whether a temporary file or staging folder was left by a process of this host that is gone."""
    host, _, pid = name.rpartition("-")
    return host == _HOST and pid.isdigit() and not _alive(int(pid))


def remove_stale_temporaries(folder: Path) -> None:
    """Delete what killed writers left in ``folder`` (``.<name>.<host>-<pid>.<random>.tmp`` files,
    ``.staging-<host>-<pid>`` folders); another live process's files are left alone."""
    for path in folder.glob(".*"):
        parts = path.name.split(".")
        if path.name.startswith(".staging-") and _dead_owner(path.name[len(".staging-"):]):
            shutil.rmtree(path, ignore_errors=True)
        elif path.suffix == ".tmp" and len(parts) >= 4 and _dead_owner(parts[-3]):
            path.unlink(missing_ok=True)


LOCK_FILE = ".clipft.lock"


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold ``folder`` for one run: a second run into it stops with the holder's pid and host.
    An advisory ``flock`` on ``.clipft.lock``: the kernel releases it when its process dies,
    however it dies, so a killed run never leaves the folder locked. The file stays (removing
    it would let two runs lock two different files); what it holds is only for the message."""
    lock = folder / LOCK_FILE
    fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o666 & ~current_umask())
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputError(f"{folder}: in use by another clipft run ({_holder(lock)}); wait for it to finish "
                              f"or choose another --out") from None
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(owner).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _holder(lock: Path) -> str:
    try:
        held = json.loads(lock.read_text(encoding="utf-8"))
        return f"pid {held['pid']} on {held['host']}, since {held['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "it is starting"


INCOMPLETE_FILE = ".clipft.incomplete"


def _publish(stage: Path, out: Path, names) -> None:
    """Move every file of ``stage`` into ``out`` and remove the declared ``names`` this run did not
    write, so that the folder never mixes two runs. The marker names the moment in between."""
    marker = out / INCOMPLETE_FILE
    marker.write_text("a clipft run was moving its outputs in here; run it again\n", encoding="utf-8")
    written = {p.name for p in stage.iterdir()}
    for name in set(names) - written:
        (out / name).unlink(missing_ok=True)
    for name in sorted(written):
        os.replace(stage / name, out / name)
    marker.unlink()


@contextlib.contextmanager
def output_folder(out: str | os.PathLike, names=(), previous=()) -> Iterator[Path]:
    """A command's output folder for one run: checked, locked, cleaned of what killed runs left,
    and written through a staging folder (yielded) whose files all appear in ``out`` together
    when the run succeeds; a failed run leaves ``out`` as it was. ``names``: the files the
    command writes (none may be a folder); ``previous``: glob patterns of files a run writes
    under varying names (``confusion_*.png``), removed before the new ones appear."""
    out = prepare_output_dir(out, names)
    with folder_lock(out):
        remove_stale_temporaries(out)
        stage = out / f".staging-{_OWNER}"
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir()
        try:
            yield stage
            _publish(stage, out, list(names) + [p.name for pattern in previous for p in out.glob(pattern)])
        finally:
            shutil.rmtree(stage, ignore_errors=True)


@contextlib.contextmanager
def rank_output_folder(main: bool, out: str | os.PathLike, names=(), previous=()) -> Iterator[Path]:
    """:func:`output_folder` on the process that writes (rank 0); the other ranks of a distributed
    run get a throwaway folder, so that only one process ever touches ``out``."""
    if main:
        with output_folder(out, names, previous) as stage:
            yield stage
    else:
        with tempfile.TemporaryDirectory(prefix="clipft-rank-") as scratch:
            yield Path(scratch)
