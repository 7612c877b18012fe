"""Run untrusted Python behind an OS boundary, with capped output and no leftovers.

The boundary is bubblewrap (``workers/verifiers/isolation.py``): namespaces, an unprivileged uid, a
filesystem of read-only system binds plus a private tmpfs, rlimits from ``prlimit``. Around it:
- output is streamed and capped: at most ``max_output_bytes`` of stdout and of stderr are read, then
  the process is killed (a program printing gigabytes costs the worker nothing);
- the program's files reach bwrap as in-memory files (memfd), so an isolated run leaves nothing on disk;
- the program runs in its own session; on timeout, on cancellation of the awaiting task and on every
  exit path its process group is SIGKILLed; bwrap's ``--die-with-parent`` (unisolated: ``setpriv
  --pdeathsig``) takes it down when the worker itself dies, and ``clean_stale_workdirs`` removes the
  directories unisolated runs of dead workers left behind;
- a Python audit hook inside the candidate's interpreter (refusing sockets, subprocesses, ctypes,
  reads outside the interpreter's path) is defence in depth only: code in the same interpreter can
  switch it off, so it is never what keeps the host safe.

``isolated=False`` (the operator's explicit ``allow_unisolated``) drops bwrap and keeps the older
layers: rlimits, and as root a network namespace and the ``nobody`` user.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workers.verifiers.isolation import PROGRAM_DIR, bwrap_command, interpreter, prlimit_prefix, sandbox_fds

NOBODY_UID = 65534
WORKDIR_PREFIX = "weaver-sandbox-"
_WORKDIR_NAME = re.compile(rf"^{WORKDIR_PREFIX}(\d+)-")
_CHUNK = 64 * 1024

_HARNESS = r'''
import sys, os
_ROOT = os.path.realpath(os.getcwd())
# reads: its own directory plus the interpreter's module path (stdlib, lib-dynload); nothing else on the host
_READABLE = (tuple(os.path.realpath(p) for p in sys.path if p) + ("/dev/null", "/dev/urandom", "/dev/zero")
             + (os.path.dirname(os.path.abspath(__file__)),))
_BLOCKED_PREFIXES = ("socket.", "subprocess.", "os.fork", "os.exec", "os.posix_spawn", "os.spawn", "os.system",
                     "os.kill", "os.killpg", "ctypes.", "os.forkpty", "pty.", "_posixsubprocess")
_PATH_EVENTS = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.link",
                "os.symlink", "os.truncate", "os.utime", "shutil.rmtree", "shutil.copyfile", "shutil.move"}

def _readable(path):
    real = os.path.realpath(path)
    return _inside(path) or any(real == r or real.startswith(r + os.sep) for r in _READABLE)

def _inside(path):
    try:
        real = os.path.realpath(os.fsdecode(path) if not isinstance(path, int) else "")
    except Exception:
        return False
    return real == _ROOT or real.startswith(_ROOT + os.sep)

def _hook(event, args):
    if event.startswith(_BLOCKED_PREFIXES):
        raise PermissionError(f"sandbox: {event} is not allowed")
    if event == "import" and args and str(args[0]).split(".")[0] in ("ctypes", "_ctypes", "socket", "_socket",
                                                                    "subprocess", "multiprocessing"):
        raise PermissionError(f"sandbox: importing {args[0]} is not allowed")
    if event == "open" and args and not isinstance(args[0], int):
        path = os.fsdecode(args[0])
        mode = args[1] if len(args) > 1 and isinstance(args[1], str) else "r"
        flags = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
        writing = any(c in mode for c in "wax+") or flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
        if os.path.realpath(path).startswith("/proc"):
            raise PermissionError("sandbox: /proc is not readable")
        if writing and not _inside(path):
            raise PermissionError(f"sandbox: writing outside the sandbox directory: {path}")
        if not writing and not _readable(path):
            raise PermissionError(f"sandbox: reading outside the sandbox directory: {path}")
    if event in _PATH_EVENTS:
        for arg in args[:2]:
            if isinstance(arg, (str, bytes, os.PathLike)) and not _inside(arg):
                raise PermissionError(f"sandbox: {event} outside the sandbox directory")

sys.addaudithook(_hook)
del _hook
_source = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "candidate.py"), encoding="utf-8").read()
_code = compile(_source, "candidate.py", "exec")
del _source
exec(_code, {"__name__": "__main__", "__builtins__": __builtins__})
'''


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 5.0  # wall clock
    cpu_s: int = 5
    memory_mb: int = 256  # address space
    file_size_mb: int = 16  # also the size of the private tmpfs
    max_processes: int = 16  # RLIMIT_NPROC, counted inside the sandbox's own user namespace
    max_output_bytes: int = 1 << 20  # per stream; past it the program is killed
    isolate_network: bool = True  # unisolated mode only: new network namespace when running as root
    drop_privileges: bool = True  # unisolated mode only: run as nobody when running as root


@dataclass(frozen=True)
class SandboxResult:
    returncode: int | None  # None when killed for the timeout or the output cap
    stdout: str
    stderr: str
    timed_out: bool
    duration_s: float
    output_truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and not self.output_truncated

    def reason(self) -> str:
        if self.timed_out:
            return "killed: wall-clock timeout"
        if self.output_truncated:
            return "killed: output over the limit"
        if self.returncode is not None and self.returncode < 0:
            try:
                name = signal.Signals(-self.returncode).name
            except ValueError:
                name = ""
            return f"killed by signal {-self.returncode} {name}".strip()
        tail = self.stderr.strip().splitlines()[-1:] if self.stderr.strip() else []
        return f"exit {self.returncode}" + (f": {tail[0][:200]}" if tail else "")


def _launcher(limits: SandboxLimits) -> list[str]:
    """Unisolated mode: rlimits, and as root a network namespace plus the ``nobody`` user (util-linux tools)."""
    prefix: list[str] = []
    if _privileged() and limits.isolate_network and shutil.which("unshare"):
        prefix += ["unshare", "--net", "--"]
    if shutil.which("prlimit"):
        prefix += prlimit_prefix(limits.cpu_s, limits.memory_mb, limits.file_size_mb, limits.max_processes)
    if _privileged() and limits.drop_privileges and shutil.which("setpriv"):
        prefix += ["setpriv", f"--reuid={NOBODY_UID}", f"--regid={NOBODY_UID}", "--clear-groups", "--"]
    if shutil.which("setpriv"):  # the program dies with the worker (its own children are killed by group)
        prefix += ["setpriv", "--pdeathsig", "KILL", "--"]
    return prefix


def _privileged() -> bool:
    return os.geteuid() == 0


def sandbox_features(limits: SandboxLimits | None = None, isolated: bool = True) -> dict[str, bool]:
    """Which isolation layers a run would use on this host (for readiness and diagnostics)."""
    if isolated:
        return {"bubblewrap": True, "network_namespace": True, "pid_namespace": True, "mount_namespace": True,
                "rlimits": True, "unprivileged_user": True, "audit_hook": True, "process_group_kill": True}
    prefix = _launcher(limits or SandboxLimits())
    return {"bubblewrap": False, "network_namespace": "unshare" in prefix, "pid_namespace": False,
            "mount_namespace": False, "rlimits": "prlimit" in prefix, "unprivileged_user": "setpriv" in prefix,
            "audit_hook": True, "process_group_kill": True}


def _kill_group(pid: int) -> None:
    """SIGKILL the session the program was started in (bwrap, and in unisolated mode every child)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def clean_stale_workdirs(root: str | None = None) -> list[str]:
    """Remove sandbox directories left by workers that died (their pid is gone). Returns what was removed."""
    removed = []
    base = Path(root or tempfile.gettempdir())
    for entry in base.glob(f"{WORKDIR_PREFIX}*"):
        match = _WORKDIR_NAME.match(entry.name)
        if match is None or _alive(int(match.group(1))):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(str(entry))
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Capped:
    """Reads one stream up to ``cap`` bytes; past it sets ``overflow`` (the caller then kills the program)."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.data = bytearray()
        self.overflow = asyncio.Event()

    async def drain(self, stream: asyncio.StreamReader) -> None:
        while True:
            chunk = await stream.read(_CHUNK)
            if not chunk:
                return
            room = self.cap - len(self.data)
            self.data += chunk[:room]
            if len(chunk) > room:
                self.overflow.set()
                return


async def _feed(process: asyncio.subprocess.Process, data: bytes) -> None:
    assert process.stdin is not None
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        process.stdin.write(data)
        await process.stdin.drain()
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        process.stdin.close()


async def _until_exit_or_overflow(process: asyncio.subprocess.Process, out: _Capped, err: _Capped,
                                  stdin: bytes) -> bool:
    """Run until the program exits and both streams are drained, or a stream overflows. True on overflow."""
    assert process.stdout is not None and process.stderr is not None
    done: asyncio.Future[Any] = asyncio.gather(_feed(process, stdin), out.drain(process.stdout),
                                               err.drain(process.stderr), process.wait())
    overflow = asyncio.ensure_future(_first(out.overflow, err.overflow))
    try:
        finished, _ = await asyncio.wait({done, overflow}, return_when=asyncio.FIRST_COMPLETED)
        if overflow in finished:
            return True
        done.result()
        return False
    finally:
        for task in (done, overflow):
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


async def _first(*events: asyncio.Event) -> None:
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


async def _reap(process: asyncio.subprocess.Process) -> int | None:
    """Kill the group, read the pipes to EOF (asyncio reports the exit only once they close), collect the status."""
    _kill_group(process.pid)
    assert process.stdout is not None and process.stderr is not None
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(5):
            await asyncio.gather(_discard(process.stdout), _discard(process.stderr))
            await process.wait()
    return process.returncode


async def _discard(stream: asyncio.StreamReader) -> None:
    while await stream.read(_CHUNK):
        pass


async def run_python_async(source: str, stdin: str = "", limits: SandboxLimits | None = None, *,
                           isolated: bool = True, audit_hook: bool = True) -> SandboxResult:
    """Run ``source`` as a program in the sandbox; never raises for anything the program does.

    Cancelling the awaiting task kills the program's process group (and removes its directory).
    ``audit_hook=False`` leaves only the OS layers (tests use it to show that those hold alone).
    """
    limits = limits or SandboxLimits()
    entry = "harness.py" if audit_hook else "candidate.py"
    files = {"candidate.py": source.encode("utf-8", "surrogatepass"), "harness.py": _HARNESS.encode()}
    if isolated:
        fds = sandbox_fds(files)
        prefix = prlimit_prefix(limits.cpu_s, limits.memory_mb, limits.file_size_mb, limits.max_processes)
        command = [*prefix, *bwrap_command(fds.files, limits.file_size_mb, seccomp_fd=fds.seccomp), "-I", "-S",
                   f"{PROGRAM_DIR}/{entry}"]
        try:
            return await _run(command, "/", stdin, limits, fds.all())
        finally:
            fds.close()
    workdir = tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-")
    try:
        for name, data in files.items():
            Path(workdir, name).write_bytes(data)
        os.chmod(workdir, 0o755)
        command = [*_launcher(limits), interpreter(), "-I", "-S", entry]
        if "--reuid" in " ".join(command):
            os.chown(workdir, NOBODY_UID, NOBODY_UID)
        return await _run(command, workdir, stdin, limits, ())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def _run(command: list[str], cwd: str, stdin: str, limits: SandboxLimits, fds: tuple[int, ...]
               ) -> SandboxResult:
    home = cwd if cwd != "/" else "/tmp"
    env = {"PATH": "/usr/bin:/bin", "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8",
           "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0"}
    start = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        *command, cwd=cwd, env=env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, start_new_session=True, close_fds=True, pass_fds=fds)
    try:
        out, err = _Capped(limits.max_output_bytes), _Capped(limits.max_output_bytes)
        timed_out = truncated = False
        try:
            async with asyncio.timeout(limits.timeout_s):
                truncated = await _until_exit_or_overflow(process, out, err, stdin.encode("utf-8", "replace"))
        except TimeoutError:
            timed_out = True
        returncode = await _reap(process)
        return SandboxResult(
            None if timed_out or truncated else returncode, out.data.decode("utf-8", "replace"),
            err.data.decode("utf-8", "replace"), timed_out, time.perf_counter() - start, truncated)
    finally:
        _kill_group(process.pid)  # also on cancellation: nothing outlives the awaiting task


def run_python(source: str, stdin: str = "", limits: SandboxLimits | None = None, *, isolated: bool = True,
               audit_hook: bool = True) -> SandboxResult:
    """Blocking form of ``run_python_async`` (scripts and tests; the verifier awaits the async form)."""
    return asyncio.run(run_python_async(source, stdin, limits, isolated=isolated, audit_hook=audit_hook))
