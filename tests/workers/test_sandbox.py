"""code_tests and its sandbox: hostile programs are stopped, scored 0 with a reason; the worker survives."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest

from workers.config import VerifierSpec, WorkerConfig
from workers.contract import Job
from workers.entry import Worker
from workers.verifiers.base import PairItem
from workers.verifiers.code_tests import CodeTestsVerifier, extract_program
from workers.verifiers.sandbox import SandboxLimits, run_python, sandbox_features

TESTS = ["assert add(2, 3) == 5", "assert add(-1, 1) == 0", "assert add(10, 5) == 15"]


def score(candidate: str, tests: list[object] | None = None, timeout_s: float = 3.0) -> tuple[float, str]:
    verifier = CodeTestsVerifier("code_tests", test_timeout_s=timeout_s, memory_mb=256)
    result = verifier.score_sync([PairItem("write add(a, b)", candidate, {"tests": tests or TESTS})])[0]
    return result.value, result.note or ""  # type: ignore[union-attr]


def test_correct_program_passes_every_test() -> None:
    assert score("```python\ndef add(a, b):\n    return a + b\n```") == (1.0, "3/3 tests passed")


def test_partially_correct_program_gets_its_pass_rate() -> None:
    value, note = score("def add(a, b):\n    return abs(a) + b")
    assert value == pytest.approx(2 / 3) and "AssertionError" in note


def test_stdin_stdout_tests() -> None:
    tests = [{"input": "2 3\n", "output": "5"}, {"input": "1 1\n", "output": "2"}, {"input": "0 0", "output": "1"}]
    value, note = score("a, b = map(int, input().split())\nprint(a + b)", tests)  # type: ignore[arg-type]
    assert value == pytest.approx(2 / 3) and "wrong output" in note


def test_infinite_loop_is_killed() -> None:
    start = time.perf_counter()
    value, note = score("def add(a, b):\n    while True:\n        pass", ["assert add(1, 2) == 3"], timeout_s=1.0)
    assert value == 0.0 and ("timeout" in note or "signal" in note)
    assert time.perf_counter() - start < 10


def test_unbounded_allocation_is_stopped() -> None:
    value, note = score("blocks = []\nwhile True:\n    blocks.append(bytearray(50_000_000))", ["pass"])
    assert value == 0.0 and ("memory" in note.lower() or "signal" in note)


def test_socket_is_refused() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    accepted: list[object] = []
    server.settimeout(3)
    thread = threading.Thread(target=lambda: accepted.append(_accept(server)), daemon=True)
    thread.start()
    program = f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\ns.sendall(b'leak')"
    value, note = score(program, ["pass"])
    thread.join(5)
    server.close()
    assert value == 0.0 and note
    assert accepted == [None]  # nothing ever connected


def _accept(server: socket.socket) -> object:
    try:
        conn, _ = server.accept()
        conn.close()
        return "connected"
    except OSError:
        return None


def test_writing_outside_the_temp_dir_is_refused(tmp_path: Path) -> None:
    target = tmp_path / f"escaped-{uuid.uuid4().hex}.txt"
    value, note = score(f"open({str(target)!r}, 'w').write('pwned')", ["pass"])
    assert value == 0.0 and "outside" in note
    assert not target.exists()


def test_writing_inside_its_own_dir_is_fine() -> None:
    value, _ = score("open('scratch.txt', 'w').write('ok')\nassert open('scratch.txt').read() == 'ok'", ["pass"])
    assert value == 1.0


def test_fork_bomb_is_contained() -> None:
    program = "import os\nwhile True:\n    os.fork()"
    start = time.perf_counter()
    value, note = score(program, ["pass"], timeout_s=2.0)
    assert value == 0.0 and note
    assert time.perf_counter() - start < 15


def test_fork_bomb_without_the_audit_hook_is_capped_and_killed() -> None:
    """The OS layers alone: RLIMIT_NPROC caps the forks, and children that leave the group still die."""
    marker = f"weaver-bomb-{uuid.uuid4().hex}"
    program = (
        "import os, sys, time\n"
        f"sys.argv[0] = {marker!r}\n"
        "forks = 0\n"
        "for _ in range(200):\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError:\n"
        "        break\n"
        "    if pid == 0:\n"
        "        os.setsid()\n"
        "        time.sleep(60)\n"
        "        os._exit(0)\n"
        "    forks += 1\n"
        "print(forks, flush=True)\n"
        "time.sleep(60)\n"
    )
    limits = SandboxLimits(timeout_s=2.0, cpu_s=2, max_processes=16)
    result = run_python(program, limits=limits, audit_hook=False)
    assert result.timed_out
    if os.geteuid() == 0:  # RLIMIT_NPROC binds only the unprivileged sandbox user
        assert 0 < int(result.stdout.split()[0]) < 200
    time.sleep(0.2)
    survivors = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _cmdline_has(p, "weaver-sandbox-")
                 and _sleeping_child_of_bomb(p)]
    assert survivors == []


def _cmdline_has(proc: Path, needle: str) -> bool:
    try:
        return needle in (proc / "cwd").resolve().as_posix()
    except OSError:
        return False


def _sleeping_child_of_bomb(proc: Path) -> bool:
    try:
        return b"candidate.py" in (proc / "cmdline").read_bytes()  # "/sandbox/candidate.py" under bwrap
    except OSError:
        return False


def test_environment_secrets_are_not_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = f"sk-test-{uuid.uuid4().hex}"
    monkeypatch.setenv("WEAVER_TEST_SECRET", secret)
    program = (f"import os\nassert {secret!r} not in repr(dict(os.environ))\n"
               "try:\n    data = open(f'/proc/{os.getppid()}/environ', 'rb').read()\nexcept OSError:\n    data = b''\n"
               f"assert {secret!r}.encode() not in data\nprint('clean')")
    assert score(program, ["pass"])[0] == 1.0
    leak = run_python("import os\nprint(os.environ.get('WEAVER_TEST_SECRET'))")
    assert secret not in leak.stdout


def test_extract_program_prefers_the_fenced_block() -> None:
    assert extract_program("Here:\n```python\nx = 1\n```\nDone") == "x = 1\n"
    assert extract_program("x = 2") == "x = 2"


def test_missing_tests_abstain() -> None:
    verifier = CodeTestsVerifier("code_tests")
    result = verifier.score_sync([PairItem("p", "x = 1", {})])[0]
    assert result.value != result.value  # type: ignore[union-attr] # NaN


def test_sandbox_reports_its_layers() -> None:
    features = sandbox_features()
    assert features["audit_hook"] and features["process_group_kill"]
    if os.geteuid() == 0:
        assert features["network_namespace"] and features["unprivileged_user"]


async def test_worker_survives_hostile_candidates() -> None:
    config = WorkerConfig(verifiers=[VerifierSpec(name="code_tests", type="code_tests",
                                                  params={"test_timeout_s": 2.0, "memory_mb": 256})])
    worker = Worker.from_config(config)
    await worker.start()
    hostile = ["def add(a, b):\n    while True:\n        pass", "import os\nwhile True:\n    os.fork()",
               "x = bytearray(10**10)", "def add(a, b):\n    return a + b"]
    result = await worker.run(Job(kind="rerank", prompt="write add", candidates=hostile, verifiers=["code_tests"],
                                  aggregator="mean", context={"tests": TESTS[:1]}))
    assert result.status == "ok"
    assert result.selected_index == 3
    raw = result.diagnostics[0].raw
    assert raw == [0.0, 0.0, 0.0, 1.0]
    notes = result.diagnostics[0].notes or []
    assert all(notes[i] and "0/1" in notes[i] for i in range(3))  # type: ignore[operator]
    again = await worker.run(Job(kind="rerank", prompt="p", candidates=["def add(a, b):\n    return a + b"],
                                 verifiers=["code_tests"], aggregator="first", context={"tests": TESTS}))
    assert again.status == "ok" and again.scores == [[1.0]]
    await worker.close()
