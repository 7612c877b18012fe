"""Final-answer extraction and equivalence, for majority vote and answer agreement.

Numbers are compared numerically (commas, currency signs and trailing zeros do not matter); other
answers are compared with math-verify (LaTeX and symbolic equivalence) when it is installed, and
by normalized string otherwise.

Extraction runs on RE2 (linear time): with Python's backtracking ``re`` a document of blank lines or of
repeated ``\\boxed{`` took seconds. math-verify is called with its own signal-based timeouts off (they
only work on the main thread and silently answered "not equal" elsewhere); callers bound the time (the
verifiers run in a child process with a timeout; on the main thread math-verify's own timeout stays
on), inputs are capped, and a failure (error or timeout) is never cached.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import re2

_PATTERNS = (
    re2.compile(r"(?m)####\s*(.+?)\s*$"),
    re2.compile(r"(?m)^\s*A:\s*(.+?)\s*$"),
    re2.compile(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}"),
    re2.compile(r"(?im)answer is[:\s]*\$?(.+?)(?:\.\s|\.$|$)"),
)
# "-" or "$" may be followed by spaces, but a match never starts on a space: linear under findall; a comma
# counts only between digits ("1,200"), so "the answer is 7, since" gives "7", not "7,"
_LAST_NUMBER = re.compile(r"(?:-\$?\s*|\$\s*)?\d+(?:,\d+)*(?:\.\d+)?")
MATH_VERIFY_TIMEOUT_S = 1  # per parse / verify call, main thread only (signal.alarm takes whole seconds)
MATH_VERIFY_BUDGET_S = 2.0  # per group_answers call; past it, remaining pairs compare by canonical key only
MAX_MATH_VERIFY_CHARS = 256  # longer answers are compared as normalized strings (sympy cost grows fast)
# longer answers are keyed anew on every call: a request may hold 32,000 characters, so caching every answer
# would let distinct long ones fill 65,536 cache entries with gigabytes
MAX_CACHED_ANSWER_CHARS = 256


def extract_answer(text: str) -> str | None:
    """The final answer of a worked solution, or None when none can be found."""
    for pattern in _PATTERNS:
        matches = pattern.findall(text)
        if matches:
            answer = matches[-1].strip()
            if answer:
                return answer
    numbers = _LAST_NUMBER.findall(text)
    return numbers[-1].strip() if numbers else None


def _as_number(answer: str) -> float | None:
    cleaned = answer.strip().rstrip(".").replace(",", "").replace("$", "").replace(" ", "")
    cleaned = re.sub(r"(dollars?|cents?|%|units?)$", "", cleaned, flags=re.IGNORECASE)
    try:
        return float(cleaned)
    except ValueError:
        match = re.fullmatch(r"-?\d+(?:\.\d+)?", cleaned)
        return float(match.group()) if match else None


def canonical_answer(answer: str | None) -> str | None:
    """A canonical key: equal keys mean equivalent answers (numbers normalized)."""
    return None if answer is None else _keyed(answer).key


def _canonical(answer: str) -> str:
    number = _as_number(answer)
    if number is None:
        head = _LAST_NUMBER.match(answer.strip())
        if head and head.end() >= len(answer.strip()) - 12:
            number = _as_number(head.group())
    if number is not None:
        if number == int(number) and abs(number) < 1e15:
            return str(int(number))
        return repr(round(number, 9))
    return re.sub(r"\s+", " ", answer.strip().lower())


def answers_equivalent(a: str | None, b: str | None, use_math_verify: bool = True) -> bool:
    if a is None or b is None:
        return False
    return _equivalent(_keyed(a), _keyed(b), lambda: use_math_verify)


@dataclass(frozen=True)
class _Keyed:
    """An answer with what every comparison needs, computed once (a group_answers call compares each answer
    with every group found so far)."""

    text: str
    key: str
    numeric: bool


def _key(answer: str) -> _Keyed:
    return _Keyed(answer, _canonical(answer), _as_number(answer) is not None)


_keyed_cached = lru_cache(maxsize=65536)(_key)


def _keyed(answer: str) -> _Keyed:
    """The answer's key, cached for answers of up to ``MAX_CACHED_ANSWER_CHARS``."""
    return _keyed_cached(answer) if len(answer) <= MAX_CACHED_ANSWER_CHARS else _key(answer)


def _equivalent(a: _Keyed, b: _Keyed, may_verify: Callable[[], bool]) -> bool:
    """Equal canonical keys; else, unless both are plain numbers (then the keys decide), math-verify."""
    if a.key == b.key:
        return True
    if a.numeric and b.numeric or not may_verify():
        return False
    return _math_verify_equal(a.text, b.text)


def _math_verify_equal(a: str, b: str) -> bool:
    if len(a) > MAX_MATH_VERIFY_CHARS or len(b) > MAX_MATH_VERIFY_CHARS:
        return False
    try:
        return _math_verify_cached(a, b)
    except _Undecided:
        return False  # not cached: the next call tries again


class _DropTimeoutNotice(logging.Filter):
    """math-verify warns on every call made with its timeouts off; we do that on purpose (see above)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_DropTimeoutNotice())


class _Undecided(Exception):
    """math-verify failed (not "not equal"): the answer must not be cached."""


@lru_cache(maxsize=16384)
def _math_verify_cached(a: str, b: str) -> bool:
    try:
        from math_verify import parse, verify
        from math_verify.errors import TimeoutException
    except ImportError as exc:  # pragma: no cover - math-verify is a dependency
        raise _Undecided("math-verify is not installed") from exc
    try:
        # math-verify's timeouts use signal.alarm: kept on the main thread (a verifier's child process, the
        # aggregator), off in other threads, where they raised and read as "not equal"
        timeout = MATH_VERIFY_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None
        left = parse(f"${a}$", parsing_timeout=timeout, raise_on_error=True)
        right = parse(f"${b}$", parsing_timeout=timeout, raise_on_error=True)
        return bool(verify(left, right, timeout_seconds=timeout, raise_on_error=True))
    except (Exception, TimeoutException) as exc:  # parse errors, sympy failures, timeouts: no evidence either way
        raise _Undecided(str(exc)) from exc  # (math-verify's TimeoutException is a BaseException)


def group_answers(answers: Sequence[str | None], budget_s: float = MATH_VERIFY_BUDGET_S) -> list[int]:
    """Group ids for equivalent answers (-1 for no answer), in order of first appearance.

    Symbolic comparison stops after ``budget_s`` (hostile answers such as ``10^{10^{10}}!`` make each
    math-verify call run to its timeout; N of them would otherwise cost N^2 timeouts).
    """
    deadline = time.monotonic() + budget_s

    def in_budget() -> bool:
        return time.monotonic() < deadline

    groups: list[int] = []
    representatives: list[_Keyed] = []
    for answer in answers:
        if answer is None:
            groups.append(-1)
            continue
        keyed = _keyed(answer)
        for gid, rep in enumerate(representatives):
            if _equivalent(keyed, rep, in_budget):
                groups.append(gid)
                break
        else:
            representatives.append(keyed)
            groups.append(len(representatives) - 1)
    return groups


def agreement_shares(answers: Sequence[str | None]) -> list[float]:
    """Per candidate: share of its siblings (the other N-1) whose answer is equivalent to its own.

    NaN for a candidate with no extractable answer; 1.0 for a single candidate with an answer is not
    informative, so a lone candidate gets NaN (abstain).
    """
    n = len(answers)
    groups = group_answers(answers)
    sizes: dict[int, int] = {}
    for g in groups:
        sizes[g] = sizes.get(g, 0) + 1
    out = []
    for g in groups:
        if g < 0 or n < 2:
            out.append(float("nan"))
        else:
            out.append((sizes[g] - 1) / (n - 1))
    return out
