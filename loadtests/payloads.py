"""Request bodies and response checks for the locust users (no locust import: unit-testable).

Payloads are real GSM8K problems from ``WEAVER_DATA_DIR`` (see loadtests/locustfile.py for the variables).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("WEAVER_DATA_DIR") or ROOT.parent / "shared" / "data")
PROFILE = os.environ.get("WEAVER_LOADTEST_PROFILE", "cheap")
CHAT_PROFILE = os.environ.get("WEAVER_LOADTEST_CHAT_PROFILE", "cheap")
N_CANDIDATES = int(os.environ.get("WEAVER_LOADTEST_CANDIDATES", "2"))
MAX_TOKENS = int(os.environ.get("WEAVER_LOADTEST_MAX_TOKENS", "48"))
MODEL = os.environ.get("WEAVER_LOADTEST_MODEL", "weaver")
USER_RPS = os.environ.get("WEAVER_LOADTEST_USER_RPS")
API_KEY = os.environ.get("WEAVER_LOADTEST_API_KEY")


def read_jsonl(name: str) -> list[dict[str, Any]]:
    path = DATA_DIR / name
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: set WEAVER_DATA_DIR to the folder holding it")
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def rerank_payloads() -> list[dict[str, Any]]:
    """One body per dev-set problem: the prompt as query, its candidate solutions as documents."""
    return [
        {
            "query": row["prompt"],
            "documents": [c["text"] for c in row["candidates"]],
            "verification": {"profile": PROFILE},
        }
        for row in read_jsonl("gsm8k_gpt3_dev.jsonl")
    ]


def chat_payloads() -> list[dict[str, Any]]:
    """Training-set questions as chat requests that sample and verify N candidates."""
    rows = read_jsonl("gsm8k_train.jsonl")[:500]
    return [
        {
            "model": MODEL,
            "messages": [
                {"role": "system", "content": "Solve the problem. End with 'A: <number>'."},
                {"role": "user", "content": row["question"]},
            ],
            "max_tokens": MAX_TOKENS,
            "temperature": 0.8,
            "verification": {"n_candidates": N_CANDIDATES, "profile": CHAT_PROFILE, "return_candidates": True},
        }
        for row in rows
    ]


def diagnostics_problems(verification: dict[str, Any], n_candidates: int) -> list[str]:
    """What is wrong with a response's per-verifier diagnostics (empty when they are complete)."""
    problems = []
    verifiers = verification.get("verifiers") or []
    if not verifiers:
        problems.append("no verifier diagnostics")
    for diag in verifiers:
        name = diag.get("name", "?")
        if diag.get("error"):
            problems.append(f"verifier {name} failed: {diag['error']}")
        if len(diag.get("raw") or []) != n_candidates:
            problems.append(f"verifier {name} scored {len(diag.get('raw') or [])} of {n_candidates} candidates")
    return problems
