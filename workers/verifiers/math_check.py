"""Reference-free arithmetic consistency of a worked solution.

Checks every calculator annotation ``<<expr=result>>`` and every plain equation ``a op b = c``
(does the arithmetic hold?), whether each annotation's operands are grounded (they appear in the
problem, in an earlier result, or are small common constants), and whether the final answer is
supported by the work (it appears as a number in the solution body). Score = share of checks
passed, so a clean solution scores 1 and one with broken arithmetic, numbers from nowhere or an
answer from nowhere scores lower; NaN (abstain) when nothing is checkable.

Every pass over the text is linear in its length, whatever it holds: the plain-text patterns run on
RE2 (a linear-time engine; Python's ``re`` backtracks quadratically on inputs such as ``"1+" * 15900``),
equations are found by one scan over RE2 tokens (RE2 has no look-arounds), and grounding looks operands
up in a sorted list. The verifier runs in a child process (``ProcessPoolVerifier``), so even a slow
batch never holds the interpreter that serves HTTP, and its timeout kills the work.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import re2

from models.answers import extract_answer
from workers.verifiers.base import Item, PairItem, Score, Scored
from workers.verifiers.process_pool import ProcessPoolVerifier
from workers.verifiers.safe_arith import ArithmeticError_, close, evaluate, parse_number

_ANNOTATION = re.compile(r"<<([^<>=]{1,200})=([^<>]{1,60})>>")  # bounded: at most 263 steps per "<<"
_NUM = r"\$?\d[\d,]*(?:\.\d+)?%?"
# one token per match: a number, an operator, "=", a whitespace run, or any other single character
# (a lexer: every position is matched once, so Python's re is linear here, and much faster than RE2's wrapper)
_TOKEN = re.compile(rf"({_NUM})|([-+*/×÷xX])|(=)|(\s+)|(.)", re.DOTALL)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")  # starts only at "-" or a digit, and never backtracks
_FINAL_LINE = re2.compile(r"(?m)^[ \t]*A:.*$|####.*$|\\boxed\{[^}\n]*\}")
MAX_CHECKS_PER_KIND = 200  # annotations, equations: a worked solution has a few dozen; the rest is noise
_GROUNDING_TOLERANCE = 0.011  # wider than close()'s 0.01 absolute slack, so no neighbour is missed


@dataclass(frozen=True)
class Check:
    kind: str  # "annotation" | "equation" | "final_answer"
    text: str
    holds: bool


_CONSTANTS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 24, 30, 52, 60, 100, 365, 1000, 0.5, 0.25, 0.1, 0.01)


def _numbers(text: str) -> list[float]:
    return [v for v in (parse_number(n) for n in _NUMBER.findall(text)) if v is not None]


def _key(expr: str) -> str:
    return re.sub(r"[\s$,]", "", expr)


def equations(text: str) -> list[tuple[str, str]]:
    """``(expression, result)`` for every plain equation ``a op b [op c ...] = r``, in one linear scan.

    Same matches as the regex ``(?<![\\w.=])(N(?:\\s*OP\\s*N)+)\\s*=\\s*(-?N)(?![\\d.]*\\d)``: an expression
    starts at the first number of an operator chain not preceded by a word character, "." or "="; the
    result must not run on into more digits ("= 1.2.3" is no equation).
    """
    tokens = [(m.start(), m.end(), m.lastindex or 0) for m in _TOKEN.finditer(text)]
    found: list[tuple[str, str]] = []
    chain: list[int] = []  # token indices of the numbers in the current operator chain
    last = 0  # kind of the last token that was not whitespace, inside the chain (0: none)
    i = 0
    while i < len(tokens):
        begin, _, kind = tokens[i]
        if kind == _NUMBER_TOKEN:
            if last == _OP_TOKEN:
                chain.append(i)
            else:
                chain = [i]
            last = _NUMBER_TOKEN
        elif kind == _OP_TOKEN and last == _NUMBER_TOKEN:
            last = _OP_TOKEN
        elif kind == _EQUALS_TOKEN and last == _NUMBER_TOKEN and len(chain) > 1:
            start = next((p for j in chain[:-1] if (p := _start_in(text, *tokens[j][:2])) is not None), None)
            expr_end = tokens[chain[-1]][1]
            result = _result_after(text, tokens, i + 1)
            chain, last = [], 0
            if start is not None and result is not None:
                found.append((text[start:expr_end], text[result[0]:result[1]]))
                i = result[2]
                continue
        elif kind != _SPACE_TOKEN:
            chain, last = [], 0
        i += 1
    return found


_NUMBER_TOKEN, _OP_TOKEN, _EQUALS_TOKEN, _SPACE_TOKEN = 1, 2, 3, 4


def _start_in(text: str, begin: int, end: int) -> int | None:
    """Where an expression may start in the number token ``text[begin:end]``: at its start when nothing
    word-like, "." or "=" precedes it, else right after an inner "$" or "," (the regex would start there)."""
    if begin == 0 or not (text[begin - 1].isalnum() or text[begin - 1] in "_.="):
        return begin
    for p in range(begin + 1, end):
        if text[p] == ".":
            return None
        if text[p - 1] in "$," and text[p].isdigit():
            return p
    return None


def _clear_after(text: str, p: int) -> bool:
    """The look-ahead ``(?![\\d.]*\\d)``: no digit in the run of digits and dots starting at ``p``."""
    while p < len(text) and text[p] in "0123456789.":
        if text[p].isdigit():
            return False
        p += 1
    return True


def _result_end(text: str, begin: int, end: int) -> int | None:
    """The longest prefix of the number token ``text[begin:end]`` that the look-ahead accepts."""
    if _clear_after(text, end):
        return end
    if text[end - 1] == "%":
        return end - 1  # "%" follows it: accepted
    integer_end = text.find(".", begin, end)
    comma = text.rfind(",", begin, end if integer_end < 0 else integer_end)
    return comma if comma > begin else None  # "," follows it: accepted


def _result_after(text: str, tokens: list[tuple[int, int, int]], i: int) -> tuple[int, int, int] | None:
    """After "=": optional whitespace, an optional "-" glued to a number, no more digits right after it.

    Returns (start, end, index of the next token), or None when no result follows.
    """
    n = len(tokens)
    if i < n and tokens[i][2] == _SPACE_TOKEN:
        i += 1
    if i >= n:
        return None
    begin = tokens[i][0]
    if text[begin:tokens[i][1]] == "-":
        i += 1
        if i >= n or tokens[i][0] != begin + 1:
            return None
    if i >= n or tokens[i][2] != _NUMBER_TOKEN:
        return None
    end = _result_end(text, tokens[i][0], tokens[i][1])
    if end is None:
        return None
    return begin, end, i + 1


class _Known:
    """Numbers seen so far (the prompt's, then each annotation's result), sorted for neighbour lookups."""

    def __init__(self, values: list[float]) -> None:
        self.values = sorted(abs(v) for v in values)

    def add(self, values: list[float]) -> None:
        for value in values:
            bisect.insort(self.values, abs(value))

    def grounds(self, value: float) -> bool:
        lo = bisect.bisect_left(self.values, value - max(_GROUNDING_TOLERANCE, abs(value) * 2e-6))
        hi = bisect.bisect_right(self.values, value + max(_GROUNDING_TOLERANCE, abs(value) * 2e-6))
        return any(close(value, k) for k in self.values[lo:hi])


def find_checks(solution: str, prompt: str | None = None) -> list[Check]:
    checks: list[Check] = []
    known = _Known(_numbers(prompt)) if prompt is not None else None
    seen: set[str] = set()
    for expr, result in _ANNOTATION.findall(solution)[:MAX_CHECKS_PER_KIND]:
        seen.add(_key(expr))
        checks.append(Check("annotation", f"{expr}={result}", _holds(expr, result)))
        if known is not None:
            operands = [abs(v) for v in _numbers(expr)]  # "16-7" lexes as 16 and -7
            grounded = all(v in _CONSTANTS or known.grounds(v) for v in operands)
            checks.append(Check("grounded", expr, grounded))
            known.add(_numbers(result))
    plain = _ANNOTATION.sub(" ", solution)
    for expr, result in equations(plain)[:MAX_CHECKS_PER_KIND]:
        if _key(expr) not in seen:  # "3 + 4 = <<3+4=7>>7" is one check, not two
            checks.append(Check("equation", f"{expr}={result}", _holds(expr, result)))
    answer = extract_answer(solution)
    value = parse_number(answer) if answer else None
    if value is not None:
        body = _FINAL_LINE.sub(" ", solution)
        numbers = [parse_number(n) for n in _NUMBER.findall(body)]
        supported = any(n is not None and close(n, value) for n in numbers)
        checks.append(Check("final_answer", str(answer), supported))
    return checks


def _holds(expr: str, result: str) -> bool:
    expected = parse_number(result)
    try:
        value = evaluate(expr)
    except ArithmeticError_:
        return True  # not arithmetic we can check (units, variables): no evidence either way
    if expected is None:
        try:
            expected = evaluate(result)
        except ArithmeticError_:
            return True
    return close(value, expected)


def consistency_score(solution: str, prompt: str | None = None) -> float:
    checks = find_checks(solution, prompt)
    if not checks:
        return math.nan
    return sum(c.holds for c in checks) / len(checks)


class MathCheckVerifier(ProcessPoolVerifier):
    kind = "math_check"
    expected_cost_s = 0.001
    default_max_batch_size = 256
    default_max_wait_ms = 0.0
    default_timeout_s = 10.0

    def version_params(self) -> dict[str, object]:
        return {"rules": 2}

    def score_sync(self, items: Sequence[Item]) -> list[Score | Scored]:
        return [consistency_score(item.candidate, item.prompt) for item in items if isinstance(item, PairItem)]
