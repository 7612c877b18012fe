"""Real, cheap verifier scores for the dev set computed here (used until ``workers.offline`` is
available): answer agreement, calculator-annotation consistency, whether the final answer is the
result of the last calculation, and the share of the problem's quantities the solution uses.
Every number is computed from the candidate texts."""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Sequence

import numpy as np

from models.answers import agreement_shares, canonical_answer, extract_answer
from models.data import CandidateSet

_CALC = re.compile(r"<<([^<>=]+)=([^<>]+)>>")
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.Pow: operator.pow, ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Mod: operator.mod,
        ast.FloorDiv: operator.floordiv}
NAMES = ("answer_agreement", "calculator_consistency", "final_is_last_result", "prompt_number_coverage")


def _evaluate(expr: str) -> float | None:
    try:
        tree = ast.parse(expr.replace(",", "").strip(), mode="eval")
    except SyntaxError:
        return None

    def walk(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return float(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > 8:
                raise ValueError("exponent too large")
            return float(_OPS[type(node.op)](left, right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return float(_OPS[type(node.op)](walk(node.operand)))
        raise ValueError("unsupported expression")

    try:
        return walk(tree)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None


def calculator_consistency(text: str) -> float:
    """Share of ``<<expr=result>>`` annotations whose expression evaluates to the written result (NaN: none)."""
    checks = []
    for expr, written in _CALC.findall(text):
        value, claimed = _evaluate(expr), _evaluate(written)
        if value is None or claimed is None:
            continue
        checks.append(abs(value - claimed) <= 1e-4 * max(1.0, abs(claimed)))
    return float(np.mean(checks)) if checks else float("nan")


def final_is_last_result(text: str) -> float:
    """1 when the final answer equals the result of the last annotated calculation (NaN: no calculation)."""
    results = _CALC.findall(text)
    if not results:
        return float("nan")
    answer = extract_answer(text)
    return float(canonical_answer(answer) == canonical_answer(results[-1][1].strip()))


def score_sets(sets: Sequence[CandidateSet]) -> tuple[tuple[str, ...], list[np.ndarray]]:
    matrices = []
    for cs in sets:
        answers = [extract_answer(c.text) for c in cs.candidates]
        agreement = np.asarray(agreement_shares(answers), dtype=float)
        calc = np.array([calculator_consistency(c.text) for c in cs.candidates])
        last = np.array([final_is_last_result(c.text) for c in cs.candidates])
        coverage = np.array([prompt_number_coverage(cs.prompt, c.text) for c in cs.candidates])
        matrices.append(np.column_stack([agreement, calc, last, coverage]))
    return NAMES, matrices


_NUM = re.compile(r"\d[\d,]*(?:\.\d+)?")


def _numbers(text: str) -> set[str]:
    return {canonical_answer(n.rstrip(".,")) or n for n in _NUM.findall(text)}


def prompt_number_coverage(prompt: str, text: str) -> float:
    """Share of the quantities stated in the problem that the solution uses (NaN: the problem has none)."""
    given = _numbers(prompt)
    if not given:
        return float("nan")
    return len(given & _numbers(_CALC.sub(lambda m: m.group(0), text))) / len(given)
