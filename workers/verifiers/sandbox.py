"""Run untrusted Python in a constrained subprocess.

Layers (each one alone is not enough; together they stop the usual hostile programs):
- a fresh interpreter in isolated mode (``-I -S``) with a scrubbed environment (no secrets), cwd and
  HOME in a private temporary directory that is deleted afterwards;
- rlimits: CPU seconds, address space (memory), file size, open files, process count;
- its own session / process group, killed as a group (SIGKILL) on timeout, so fork bombs die too;
- when running as root: a new network namespace (only a down loopback) and the unprivileged
  ``nobody`` user, so it can neither reach the network nor write outside its directory;
- a Python audit hook (installed before the candidate runs, and not removable from Python) that
  refuses sockets, subprocesses, forks, ctypes, writes outside the temp dir and reads of /proc.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

NOBODY_UID = 65534

_HARNESS = r'''
import sys, os
_ROOT = os.path.realpath(os.getcwd())
_BLOCKED_PREFIXES = ("socket.", "subprocess.", "os.fork", "os.exec", "os.posix_spawn", "os.spawn", "os.system",
                     "os.kill", "os.killpg", "ctypes.", "os.forkpty", "pty.", "_posixsubprocess")
_PATH_EVENTS = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.link",
                "os.symlink", "os.truncate", "os.utime", "shutil.rmtree", "shutil.copyfile", "shutil.move"}

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
    if event in _PATH_EVENTS:
        for arg in args[:2]:
            if isinstance(arg, (str, bytes, os.PathLike)) and not _inside(arg):
                raise PermissionError(f"sandbox: {event} outside the sandbox directory")

sys.addaudithook(_hook)
del _hook
_source = open("candidate.py", encoding="utf-8").read()
_code = compile(_source, "candidate.py", "exec")
del _source
exec(_code, {"__name__": "__main__", "__builtins__": __builtins__})
'''


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 5.0  # wall clock
    cpu_s: int = 5
    memory_mb: int = 256  # address space
    file_size_mb: int = 16
    max_processes: int = 16  # per-user, applies when the sandbox user is unprivileged
    isolate_network: bool = True  # new network namespace when running as root
    drop_privileges: bool = True  # run as nobody when running as root


@dataclass(frozen=True)
class SandboxResult:
    returncode: int | None  # None when killed for the timeout
    stdout: str
    stderr: str
    timed_out: bool
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def reason(self) -> str:
        if self.timed_out:
            return "killed: wall-clock timeout"
        if self.returncode is not None and self.returncode < 0:
            try:
                name = signal.Signals(-self.returncode).name
            except ValueError:
                name = ""
            return f"killed by signal {-self.returncode} {name}".strip()
        tail = self.stderr.strip().splitlines()[-1:] if self.stderr.strip() else []
        return f"exit {self.returncode}" + (f": {tail[0][:200]}" if tail else "")


def _launcher(limits: SandboxLimits) -> list[str]:
    """The command prefix that applies namespaces, rlimits and the unprivileged user before Python starts.

    As root: ``unshare --net`` (new network namespace), ``prlimit`` (rlimits, set while still root so
    RLIMIT_NPROC binds the unprivileged user), ``setpriv`` (become nobody). These are util-linux tools
    and run without the thread-unsafe ``preexec_fn``.
    """
    mb = 1024 * 1024
    prlimit = ["prlimit", f"--cpu={limits.cpu_s}:{limits.cpu_s + 1}", f"--as={limits.memory_mb * mb}",
               f"--fsize={limits.file_size_mb * mb}", "--nofile=64", "--core=0", f"--nproc={limits.max_processes}",
               "--"]
    prefix: list[str] = []
    if _privileged() and limits.isolate_network and shutil.which("unshare"):
        prefix += ["unshare", "--net", "--"]
    if shutil.which("prlimit"):
        prefix += prlimit
    if _privileged() and limits.drop_privileges and shutil.which("setpriv"):
        prefix += ["setpriv", f"--reuid={NOBODY_UID}", f"--regid={NOBODY_UID}", "--clear-groups", "--"]
    return prefix


def _privileged() -> bool:
    return os.geteuid() == 0


def sandbox_features(limits: SandboxLimits | None = None) -> dict[str, bool]:
    """Which isolation layers are active on this host (for readiness and diagnostics)."""
    prefix = _launcher(limits or SandboxLimits())
    return {"network_namespace": "unshare" in prefix, "rlimits": "prlimit" in prefix,
            "unprivileged_user": "setpriv" in prefix, "audit_hook": True, "process_group_kill": True}


def _kill_tree(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the child's process group, then any stragglers that left it (descendants by parent id)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    for pid in _descendants(process.pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def run_python(source: str, stdin: str = "", limits: SandboxLimits | None = None,
               max_output_bytes: int = 1 << 20, audit_hook: bool = True) -> SandboxResult:
    """Run ``source`` as a program in the sandbox; never raises for anything the program does.

    ``audit_hook=False`` leaves only the OS layers (used by tests to check that those hold alone).
    """
    limits = limits or SandboxLimits()
    workdir = tempfile.mkdtemp(prefix="weaver-sandbox-")
    try:
        Path(workdir, "candidate.py").write_text(source, encoding="utf-8")
        Path(workdir, "harness.py").write_text(_HARNESS, encoding="utf-8")
        entry = "harness.py" if audit_hook else "candidate.py"
        command = [*_launcher(limits), sys.executable, "-I", "-S", entry]
        if "setpriv" in command:
            os.chown(workdir, NOBODY_UID, NOBODY_UID)
        env = {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8",
               "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0"}
        start = time.perf_counter()
        process = subprocess.Popen(
            command, cwd=workdir, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True, close_fds=True,
        )
        timed_out = False
        try:
            out, err = process.communicate(stdin.encode(), timeout=limits.timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_tree(process)
            out, err = process.communicate()
        finally:
            _kill_tree(process)  # anything it left behind in its group
        return SandboxResult(
            None if timed_out else process.returncode,
            out[:max_output_bytes].decode("utf-8", "replace"), err[-max_output_bytes:].decode("utf-8", "replace"),
            timed_out, time.perf_counter() - start)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
