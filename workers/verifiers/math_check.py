"""Reference-free arithmetic consistency of a worked solution.

Checks every calculator annotation ``<<expr=result>>`` and every plain equation ``a op b = c``
(does the arithmetic hold?), and whether the final answer is supported by the work (it appears as a
number in the solution body). Score = share of checks passed, so a clean solution scores 1 and one
with broken arithmetic or an answer from nowhere scores lower; NaN (abstain) when nothing is checkable.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from models.answers import extract_answer
from workers.verifiers.base import Item, PairItem, Score, Verifier
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


def find_checks(solution: str) -> list[Check]:
    checks: list[Check] = []
    for expr, result in _ANNOTATION.findall(solution):
        checks.append(Check("annotation", f"{expr}={result}", _holds(expr, result)))
    plain = _ANNOTATION.sub(" ", solution)
    for expr, result in _EQUATION.findall(plain):
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


def consistency_score(solution: str) -> float:
    checks = find_checks(solution)
    if not checks:
        return math.nan
    return sum(c.holds for c in checks) / len(checks)


class MathCheckVerifier(Verifier):
    kind = "math_check"
    default_max_batch_size = 256
    default_max_wait_ms = 0.0
    default_timeout_s = 10.0

    def version_params(self) -> dict[str, object]:
        return {"rules": 1}

    def score_sync(self, items: Sequence[Item]) -> list[Score]:
        return [consistency_score(item.candidate) for item in items if isinstance(item, PairItem)]
