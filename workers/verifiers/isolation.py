"""The OS boundary around sandboxed programs: bubblewrap namespaces, proven usable by a real probe.

The candidate runs in new user, PID, network, IPC, UTS, mount and (where possible) cgroup
namespaces, as uid/gid 65534 inside, with every capability dropped, no further user namespaces
(``--disable-userns``) and a parent-death signal (``--die-with-parent``). Its filesystem holds only
read-only binds of ``/usr`` and the interpreter's prefix, a fresh ``/proc`` of its own PID namespace,
a minimal ``/dev``, its program (read-only, ``/sandbox``) and a size-capped private tmpfs ``/tmp``.
So the host's files, the worker's environment and processes, and the network are out of reach
whatever the program does inside its own interpreter. rlimits are set by ``prlimit`` before bwrap
starts. A worker running as root first drops to uid 65534 with ``setpriv`` (the kernel never applies
RLIMIT_NPROC to real root, so only an unprivileged real uid makes the process cap bind); the sandbox
then uses an interpreter that uid can read (the worker's own when world-readable, else the system one).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

SANDBOX_UID = 65534
PROGRAM_DIR = "/sandbox"  # where the program's files are bound (read-only) inside the sandbox
HOME_DIR = "/tmp"  # the private tmpfs: cwd and HOME of the program

@dataclass(frozen=True)
class Isolation:
    """Whether the OS sandbox can run here, with which tool, and if not, why not."""

    available: bool
    tool: str | None
    reason: str


SYSTEM_PYTHON = "/usr/bin/python3"


def _base_interpreter() -> str:
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


def _world_readable(path: str, executable: bool = True) -> bool:
    """Every directory on the way is searchable, and the file readable (and executable), by any uid."""
    current = Path(path)
    need = 0o005 if executable else 0o004
    try:
        if (current.stat().st_mode & need) != need:
            return False
        return all(parent.stat().st_mode & 0o001 for parent in current.parents)
    except OSError:
        return False


def drops_to_nobody() -> bool:
    """Root workers run bwrap as uid 65534 (so RLIMIT_NPROC binds), when an interpreter that uid can run exists."""
    return os.geteuid() == 0 and shutil.which("setpriv") is not None and _world_readable(interpreter())


def interpreter() -> str:
    """The base interpreter (not a virtualenv shim): the sandbox binds its prefix and nothing else of Python.

    As root, an interpreter uid 65534 cannot read (say under a 0700 /root) is swapped for the system one.
    """
    base = _base_interpreter()
    if os.geteuid() == 0 and not _world_readable(base) and _world_readable(os.path.realpath(SYSTEM_PYTHON)):
        return os.path.realpath(SYSTEM_PYTHON)
    return base


def _system_binds() -> list[str]:
    """/usr read-only, and the merged-/usr symlinks (or real dirs on older layouts) for the loader and libc."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("lib", "lib64", "lib32", "bin", "sbin"):
        path = Path("/", name)
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    return args


def _interpreter_binds(python: str) -> list[str]:
    prefix = str(Path(python).parent.parent)
    if prefix == "/usr" or prefix.startswith("/usr/"):
        return []
    return ["--ro-bind", prefix, prefix]


def prlimit_prefix(cpu_s: int, memory_mb: int, file_size_mb: int, max_processes: int) -> list[str]:
    """rlimits applied before the sandbox starts (inherited by everything inside)."""
    mb = 1024 * 1024
    return ["prlimit", f"--cpu={cpu_s}:{cpu_s + 1}", f"--as={memory_mb * mb}", f"--fsize={file_size_mb * mb}",
            "--nofile=64", "--core=0", f"--nproc={max_processes}", "--"]


# Kernel interfaces a test program never needs and that widen the attack surface of the shared kernel:
# debugging other processes, modules, mounts and namespaces, keyrings, eBPF, perf, io_uring, userfaultfd.
DENIED_SYSCALLS = (
    "ptrace", "process_vm_readv", "process_vm_writev", "kexec_load", "kexec_file_load", "init_module",
    "finit_module", "delete_module", "mount", "umount2", "pivot_root", "chroot", "swapon", "swapoff", "reboot",
    "bpf", "perf_event_open", "keyctl", "add_key", "request_key", "userfaultfd", "unshare", "setns",
    "io_uring_setup", "io_uring_enter", "io_uring_register", "personality", "acct", "quotactl", "syslog",
    "name_to_handle_at", "open_by_handle_at", "ioperm", "iopl", "fanotify_init", "move_mount", "open_tree",
    "fsopen", "fsmount", "fsconfig", "fspick",
)


@functools.lru_cache(maxsize=1)
def seccomp_program() -> bytes | None:
    """A compiled cBPF filter (EPERM for ``DENIED_SYSCALLS``, allow the rest) for ``bwrap --seccomp``, or
    None when libseccomp (via pyseccomp) is not available: the namespaces and rlimits still apply."""
    try:
        import pyseccomp as seccomp
    except (ImportError, OSError):
        return None
    import errno

    try:
        program = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
        for name in DENIED_SYSCALLS:
            with contextlib.suppress(Exception):  # a name this architecture or libseccomp does not know
                program.add_rule(seccomp.ERRNO(errno.EPERM), name)
        fd = os.memfd_create("seccomp", 0)
        try:
            with os.fdopen(os.dup(fd), "wb") as out:
                program.export_bpf(out)
            os.lseek(fd, 0, os.SEEK_SET)
            size = os.fstat(fd).st_size
            return os.read(fd, size)
        finally:
            os.close(fd)
    except Exception:  # noqa: BLE001 - any libseccomp failure means: no filter, never a broken sandbox
        return None


def bwrap_command(files: dict[str, int], tmpfs_mb: int, python: str | None = None,
                  seccomp_fd: int | None = None) -> list[str]:
    """The bubblewrap command line up to (and including) the interpreter; append its arguments.

    ``files`` maps names to open file descriptors (pass them to the child): each becomes a read-only file
    ``/sandbox/<name>``, so the program never touches a host directory. ``seccomp_fd`` (also passed to the
    child) holds ``seccomp_program()``.
    """
    python = python or interpreter()
    drop = ["setpriv", f"--reuid={SANDBOX_UID}", f"--regid={SANDBOX_UID}", "--clear-groups", "--"]
    return [
        *(drop if drops_to_nobody() else []),
        "bwrap", "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
        "--unshare-cgroup-try", *(["--disable-userns"] if _bwrap_at_least(0, 8) else []),
        "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID),
        "--cap-drop", "ALL", "--die-with-parent", "--new-session", "--hostname", "sandbox",
        *_system_binds(), *_interpreter_binds(python),
        "--proc", "/proc", "--dev", "/dev",
        "--size", str(tmpfs_mb * 1024 * 1024), "--tmpfs", HOME_DIR,
        *[arg for name, fd in files.items() for arg in ("--ro-bind-data", str(fd), f"{PROGRAM_DIR}/{name}")],
        *(["--seccomp", str(seccomp_fd)] if seccomp_fd is not None else []),
        "--chdir", HOME_DIR,
        "--clearenv", "--setenv", "HOME", HOME_DIR, "--setenv", "TMPDIR", HOME_DIR,
        "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "LANG", "C.UTF-8",
        "--setenv", "PYTHONDONTWRITEBYTECODE", "1", "--setenv", "PYTHONHASHSEED", "0",
        "--", python,
    ]


@functools.lru_cache(maxsize=1)
def isolation_status() -> Isolation:
    """Probe once per process: run a trivial program under the real sandbox command line."""
    return _probe()


def refresh_isolation_status() -> Isolation:
    isolation_status.cache_clear()
    return isolation_status()


def _probe() -> Isolation:
    missing = [tool for tool in ("bwrap", "prlimit") if shutil.which(tool) is None]
    if missing:
        return Isolation(False, None, f"{' and '.join(missing)} not found (install the bubblewrap and "
                                      "util-linux packages)")
    version = _version()
    probe = b"import os; print(os.getuid(), os.listdir('/sandbox'), sum(p.isdigit() for p in os.listdir('/proc')) < 5)"
    fds = sandbox_fds({"probe.py": probe})
    try:
        command = [*prlimit_prefix(5, 512, 1, 16), *bwrap_command(fds.files, 1, seccomp_fd=fds.seccomp), "-I", "-S",
                   f"{PROGRAM_DIR}/probe.py"]
        done = subprocess.run(command, capture_output=True, timeout=20, stdin=subprocess.DEVNULL, check=False,
                              pass_fds=fds.all())
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Isolation(False, version, f"bubblewrap probe failed: {exc}")
    finally:
        fds.close()
    if done.returncode != 0:
        why = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        return Isolation(False, version, f"bubblewrap cannot create its namespaces here: {why[0][:300]} (in a "
                                         "container: allow user namespaces, see docs/security.md)")
    if done.stdout.split() != [str(SANDBOX_UID).encode(), b"['probe.py']", b"True"]:
        return Isolation(False, version, f"bubblewrap probe gave unexpected output {done.stdout[:200]!r}")
    seccomp = "seccomp filter on" if seccomp_program() is not None else "no seccomp filter (pyseccomp missing)"
    return Isolation(True, version, f"ok, {seccomp}")


@dataclass
class SandboxFds:
    """The in-memory files one sandbox run reads: its program files and the seccomp filter."""

    files: dict[str, int]
    seccomp: int | None

    def all(self) -> tuple[int, ...]:
        return (*self.files.values(), *([self.seccomp] if self.seccomp is not None else []))

    def close(self) -> None:
        for fd in self.all():
            os.close(fd)


def sandbox_fds(files: dict[str, bytes]) -> SandboxFds:
    program = seccomp_program()
    return SandboxFds({name: memfd(name, data) for name, data in files.items()},
                      memfd("seccomp", program) if program is not None else None)


def memfd(name: str, data: bytes) -> int:
    """An anonymous in-memory file holding ``data``, positioned at its start (no host path, nothing to clean)."""
    fd = os.memfd_create(name, 0)
    try:
        _write_all(fd, data)
        os.lseek(fd, 0, os.SEEK_SET)
    except OSError:
        os.close(fd)
        raise
    return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


@functools.lru_cache(maxsize=1)
def _bwrap_at_least(major: int, minor: int) -> bool:
    numbers = re.findall(r"\d+", _version())
    return len(numbers) >= 2 and (int(numbers[0]), int(numbers[1])) >= (major, minor)


def _version() -> str:
    try:
        out = subprocess.run(["bwrap", "--version"], capture_output=True, timeout=5, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "bubblewrap"
    return out.decode("utf-8", "replace").strip() or "bubblewrap"
