"""Reference-free arithmetic consistency of a worked solution.

Checks every calculator annotation ``<<expr=result>>`` and every plain equation ``a op b = c``
(does the arithmetic hold?), whether each annotation's operands are grounded (they appear in the
problem, in an earlier result, or are small common constants), and whether the final answer is
supported by the work (it appears as a number in the solution body). Score = share of checks
passed, so a clean solution scores 1 and one with broken arithmetic, numbers from nowhere or an
answer from nowhere scores lower; NaN (abstain) when nothing is checkable.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from models.answers import extract_answer
from workers.verifiers.base import Item, PairItem, Score, Scored, Verifier
from workers.verifiers.safe_arith import ArithmeticError_, close, evaluate, parse_number

_ANNOTATION = re.compile(r"<<([^<>=]{1,200})=([^<>]{1,60})>>")
_NUM = r"\$?\d[\d,]*(?:\.\d+)?%?"
_OP = r"[-+*/×÷xX]"
_EQUATION = re.compile(rf"(?<![\w.=])({_NUM}(?:\s*{_OP}\s*{_NUM})+)\s*=\s*(-?{_NUM})(?![\d.]*\d)")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_FINAL_LINE = re.compile(r"^\s*A:.*$|####.*$|\\boxed\{.*?\}", re.MULTILINE)


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


def find_checks(solution: str, prompt: str | None = None) -> list[Check]:
    checks: list[Check] = []
    known = _numbers(prompt) if prompt is not None else None
    seen: set[str] = set()
    for expr, result in _ANNOTATION.findall(solution):
        seen.add(_key(expr))
        checks.append(Check("annotation", f"{expr}={result}", _holds(expr, result)))
        if known is not None:
            operands = [abs(v) for v in _numbers(expr)]  # "16-7" lexes as 16 and -7
            grounded = all(v in _CONSTANTS or any(close(v, abs(k)) for k in known) for v in operands)
            checks.append(Check("grounded", expr, grounded))
            known.extend(_numbers(result))
    plain = _ANNOTATION.sub(" ", solution)
    for expr, result in _EQUATION.findall(plain):
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


class MathCheckVerifier(Verifier):
    kind = "math_check"
    default_max_batch_size = 256
    default_max_wait_ms = 0.0
    default_timeout_s = 10.0

    def version_params(self) -> dict[str, object]:
        return {"rules": 2}

    def score_sync(self, items: Sequence[Item]) -> list[Score | Scored]:
        return [consistency_score(item.candidate, item.prompt) for item in items if isinstance(item, PairItem)]
