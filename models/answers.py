"""Final-answer extraction and equivalence, for majority vote and answer agreement.

Numbers are compared numerically (commas, currency signs and trailing zeros do not matter); other
answers are compared with math-verify (LaTeX and symbolic equivalence) when it is installed, and
by normalized string otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

_NUMBER = r"-?\$?\s*\d[\d,]*(?:\.\d+)?"
_PATTERNS = (
    re.compile(r"####\s*(.+?)\s*$", re.MULTILINE),
    re.compile(r"^\s*A:\s*(.+?)\s*$", re.MULTILINE),
    re.compile(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}"),
    re.compile(r"answer is[:\s]*\$?(.+?)(?:\.\s|\.$|$)", re.IGNORECASE | re.MULTILINE),
)
_LAST_NUMBER = re.compile(_NUMBER)


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


@lru_cache(maxsize=65536)
def canonical_answer(answer: str | None) -> str | None:
    """A canonical key: equal keys mean equivalent answers (numbers normalized)."""
    if answer is None:
        return None
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


def answers_equivalent(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return False
    ka, kb = canonical_answer(a), canonical_answer(b)
    if ka == kb:
        return True
    if _as_number(a) is not None and _as_number(b) is not None:
        return False
    return _math_verify_equal(a, b)


@lru_cache(maxsize=16384)
def _math_verify_equal(a: str, b: str) -> bool:
    try:
        from math_verify import parse, verify
    except ImportError:  # pragma: no cover - math-verify is a dependency
        return False
    try:
        return bool(verify(parse(f"${a}$"), parse(f"${b}$")))
    except Exception:  # math-verify raises many kinds of parse errors on free text
        return False


def group_answers(answers: Sequence[str | None]) -> list[int]:
    """Group ids for equivalent answers (-1 for no answer), in order of first appearance."""
    groups: list[int] = []
    representatives: list[str] = []
    for answer in answers:
        if answer is None:
            groups.append(-1)
            continue
        for gid, rep in enumerate(representatives):
            if answers_equivalent(answer, rep):
                groups.append(gid)
                break
        else:
            representatives.append(answer)
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
