"""Versions and the pointer to the served one: in memory or in a directory (Redis lives in workers.online.store),
with pins that keep a rollback from being overwritten by the next refit."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from models.online.refit import Drift
from models.weaver import WeaverModel

# -- versions -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class VersionInfo:
    """Metadata of one published version (the artifact itself is stored beside it)."""

    sequence: int
    version: str  # WeaverModel.version (content hash)
    created_at: float
    source: str  # "refit", "seed"
    n_queries: int
    drift: float | None  # against the version it replaced when it was fitted (None: nothing to compare)
    tasks: tuple[str, ...] = ()
    note: str = ""
    task_drift: dict[str, float] = field(default_factory=dict)  # per task model, like ``drift``

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["tasks"] = list(self.tasks)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VersionInfo:
        return cls(
            sequence=int(data["sequence"]), version=str(data["version"]), created_at=float(data["created_at"]),
            source=str(data["source"]), n_queries=int(data["n_queries"]),
            drift=None if data.get("drift") is None else float(data["drift"]),
            tasks=tuple(data.get("tasks") or ()), note=str(data.get("note", "")),
            task_drift={str(k): float(v) for k, v in (data.get("task_drift") or {}).items()},
        )


def version_info(model: WeaverModel, sequence: int, source: str, n_queries: int,
                 drift_distance: float | None = None, note: str = "",
                 task_drift: dict[str, Drift] | None = None) -> VersionInfo:
    distance = None if drift_distance is None or np.isnan(drift_distance) else float(drift_distance)
    per_task = {k: float(d.distance) for k, d in (task_drift or {}).items() if not np.isnan(d.distance)}
    return VersionInfo(sequence=sequence, version=model.version, created_at=time.time(), source=source,
                       n_queries=n_queries, drift=distance, tasks=tuple(sorted(model.by_task)), note=note,
                       task_drift=per_task)


PinPolicy = Literal["hold", "fresh_window"]


@dataclass(frozen=True)
class Pointer:
    """Which version every replica serves, how it got there, and whether a rollback pinned it.

    ``source`` is "refit" (a refit published it), "rollback" (an operator pointed back at it) or "seed"
    (set directly, e.g. a shipped model). A pinned pointer is not moved by refits unless the pin policy
    allows it (``pin_allows``); only an operator's unpin, another rollback or such a refit moves it.
    """

    version: str
    sequence: int
    source: str
    published_at: float
    pinned: bool = False
    pinned_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Pointer:
        pinned_at = data.get("pinned_at")
        return cls(version=str(data["version"]), sequence=int(data.get("sequence") or 0),
                   source=str(data.get("source") or "refit"), published_at=float(data.get("published_at") or 0.0),
                   pinned=bool(data.get("pinned", False)), pinned_at=None if pinned_at is None else float(pinned_at))


def pin_allows(pointer: Pointer | None, policy: PinPolicy, window_start: float | None) -> bool:
    """May a refit that passed its guardrails replace the served version?

    Unpinned: always. Pinned under ``hold``: never (an operator unpins). Pinned under ``fresh_window``:
    only a fit whose whole window was logged after the pin, so none of the traffic the operator rolled
    back from is in it.
    """
    if pointer is None or not pointer.pinned:
        return True
    if policy == "fresh_window":
        return window_start is not None and pointer.pinned_at is not None and window_start > pointer.pinned_at
    return False


class ModelStore(Protocol):
    """Where versions live: a directory (embedded), memory, or Redis (distributed, ``workers.online``)."""

    def put(self, model: WeaverModel, info: VersionInfo) -> None: ...
    def get(self, version: str) -> WeaverModel: ...
    def versions(self) -> list[VersionInfo]: ...
    def info(self, version: str) -> VersionInfo | None: ...
    def pointer(self) -> Pointer | None: ...
    def current(self) -> str | None: ...
    def set_current(self, version: str) -> None: ...
    def publish(self, model: WeaverModel, info: VersionInfo, pin_policy: PinPolicy = "hold",
                window_start: float | None = None) -> VersionInfo | None: ...
    def rollback(self, version: str) -> Pointer: ...
    def unpin(self) -> Pointer | None: ...


class VersionNotFound(KeyError):
    pass


class _PointerRules:
    """The pointer transitions shared by the memory and directory stores (Redis: ``workers.online.store``).

    Subclasses provide ``_locked`` (mutual exclusion over the pointer and the index), ``_read_pointer``,
    ``_write_pointer``, ``_store`` (artifact + index, no pointer move) and ``_has``.
    """

    def _locked(self) -> Any:
        raise NotImplementedError

    def _read_pointer(self) -> Pointer | None:
        raise NotImplementedError

    def _write_pointer(self, pointer: Pointer) -> None:
        raise NotImplementedError

    def _store(self, model: WeaverModel, info: VersionInfo) -> None:
        raise NotImplementedError

    def _has(self, version: str) -> bool:
        raise NotImplementedError

    def versions(self) -> list[VersionInfo]:
        raise NotImplementedError

    def info(self, version: str) -> VersionInfo | None:
        match = [i for i in self.versions() if i.version == version]
        return match[-1] if match else None

    def pointer(self) -> Pointer | None:
        return self._read_pointer()

    def current(self) -> str | None:
        pointer = self._read_pointer()
        return pointer.version if pointer is not None else None

    def set_current(self, version: str) -> None:
        """Serve a kept version, unpinned (seeding a store; a rollback is ``rollback``)."""
        with self._locked():
            if not self._has(version):
                raise VersionNotFound(version)
            info = self.info(version)
            self._write_pointer(Pointer(version, info.sequence if info else 0, info.source if info else "seed",
                                        time.time()))

    def publish(self, model: WeaverModel, info: VersionInfo, pin_policy: PinPolicy = "hold",
                window_start: float | None = None) -> VersionInfo | None:
        """Store a refit and make it current, unless a pin holds (then nothing is stored: None)."""
        with self._locked():
            if not pin_allows(self._read_pointer(), pin_policy, window_start):
                return None
            sequence = max((i.sequence for i in self.versions()), default=0) + 1
            published = replace(info, sequence=sequence)
            self._store(model, published)
            self._write_pointer(Pointer(model.version, sequence, published.source, time.time()))
            return published

    def rollback(self, version: str) -> Pointer:
        """Serve a kept version again and pin it, so the refit loop does not replace it."""
        with self._locked():
            if not self._has(version):
                raise VersionNotFound(version)
            info = self.info(version)
            now = time.time()
            pointer = Pointer(version, info.sequence if info else 0, "rollback", now, pinned=True, pinned_at=now)
            self._write_pointer(pointer)
            return pointer

    def unpin(self) -> Pointer | None:
        """Let refits replace the served version again (it keeps serving until one passes)."""
        with self._locked():
            pointer = self._read_pointer()
            if pointer is None or not pointer.pinned:
                return pointer
            unpinned = replace(pointer, pinned=False)
            self._write_pointer(unpinned)
            return unpinned


class MemoryModelStore(_PointerRules):
    """Versions in a dict (tests, and embedded mode without a model directory)."""

    def __init__(self, keep: int = 20) -> None:
        self.keep = keep
        self._models: dict[str, WeaverModel] = {}
        self._infos: list[VersionInfo] = []
        self._pointer: Pointer | None = None
        self._lock = threading.RLock()

    def _locked(self) -> threading.RLock:
        return self._lock

    def _read_pointer(self) -> Pointer | None:
        return self._pointer

    def _write_pointer(self, pointer: Pointer) -> None:
        self._pointer = pointer

    def _has(self, version: str) -> bool:
        return version in self._models

    def _store(self, model: WeaverModel, info: VersionInfo) -> None:
        self.put(model, info)

    def put(self, model: WeaverModel, info: VersionInfo) -> None:
        with self._lock:
            self._models[info.version] = model
            self._infos = [i for i in self._infos if i.version != info.version] + [info]
            self._prune()

    def _prune(self) -> None:
        current = self.current()
        while len(self._infos) > self.keep:
            oldest = next((i for i in self._infos if i.version != current), None)
            if oldest is None:
                return
            self._infos.remove(oldest)
            self._models.pop(oldest.version, None)

    def get(self, version: str) -> WeaverModel:
        try:
            return self._models[version]
        except KeyError:
            raise VersionNotFound(version) from None

    def versions(self) -> list[VersionInfo]:
        with self._lock:
            return list(self._infos)


class DirectoryModelStore(_PointerRules):
    """Versions as ``<dir>/<version>.json`` artifacts, ``index.jsonl`` metadata and a ``CURRENT`` pointer.

    Files are replaced atomically (write then rename), so a reader never sees half a pointer; writers
    (the serving process's refits, ``weaver models rollback|unpin``) take an exclusive ``flock`` on
    ``.lock``, so a rollback and a refit can never interleave. ``CURRENT`` holds the pointer as JSON (a
    bare version, written by older releases, still reads).
    """

    def __init__(self, root: str | Path, keep: int = 50) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.keep = keep
        self._lock = threading.RLock()
        self._depth = 0

    @contextmanager
    def _locked(self) -> Iterator[None]:
        import fcntl

        with self._lock:  # reentrant within this process; the flock is taken by the outermost holder only
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            with open(self.root / ".lock", "a+") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                self._depth = 1
                try:
                    yield
                finally:
                    self._depth = 0
                    fcntl.flock(handle, fcntl.LOCK_UN)

    def _index_path(self) -> Path:
        return self.root / "index.jsonl"

    def _has(self, version: str) -> bool:
        return (self.root / f"{version}.json").exists()

    def _store(self, model: WeaverModel, info: VersionInfo) -> None:
        self.put(model, info)

    def put(self, model: WeaverModel, info: VersionInfo) -> None:
        with self._locked():
            tmp = self.root / f".{info.version}.json.tmp"
            model.save(tmp)
            tmp.replace(self.root / f"{info.version}.json")
            infos = [i for i in self.versions() if i.version != info.version] + [info]
            current = self.current()
            while len(infos) > self.keep:
                oldest = next((i for i in infos if i.version != current), None)
                if oldest is None:
                    break
                infos.remove(oldest)
                (self.root / f"{oldest.version}.json").unlink(missing_ok=True)
            _atomic_write(self._index_path(), "".join(json.dumps(i.to_json()) + "\n" for i in infos))

    def get(self, version: str) -> WeaverModel:
        path = self.root / f"{version}.json"
        if not path.exists():
            raise VersionNotFound(version)
        return WeaverModel.load(path)

    def versions(self) -> list[VersionInfo]:
        path = self._index_path()
        if not path.exists():
            return []
        return [VersionInfo.from_json(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]

    def _read_pointer(self) -> Pointer | None:
        path = self.root / "CURRENT"
        text = path.read_text().strip() if path.exists() else ""
        if not text:
            return None
        if text.startswith("{"):
            return Pointer.from_json(json.loads(text))
        info = self.info(text)  # a bare version (older releases)
        return Pointer(text, info.sequence if info else 0, info.source if info else "refit",
                       path.stat().st_mtime)

    def _write_pointer(self, pointer: Pointer) -> None:
        _atomic_write(self.root / "CURRENT", json.dumps(pointer.to_json()) + "\n")


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def next_sequence(store: ModelStore) -> int:
    infos = store.versions()
    return max((i.sequence for i in infos), default=0) + 1


def rollback(store: ModelStore, version: str) -> Pointer:
    """Point the store back at a kept version and pin it there; returns the new pointer."""
    return store.rollback(version)


def resolve_version(store: ModelStore, ref: str) -> str:
    """A version from a full hash, a unique hash prefix, or a sequence number (``3`` or ``v3``)."""
    infos = store.versions()
    seq = ref[1:] if ref.startswith("v") and ref[1:].isdigit() else ref
    if seq.isdigit():
        for info in infos:
            if info.sequence == int(seq):
                return info.version
    matches = sorted({i.version for i in infos if i.version.startswith(ref)})
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise VersionNotFound(ref)
    raise ValueError(f"version prefix {ref!r} is ambiguous: {', '.join(matches)}")
