"""Arithmetic evaluation without eval(): parse with ``ast`` and walk a whitelist of numeric nodes."""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable

_BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[float], float]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
MAX_MAGNITUDE = 1e15
MAX_EXPRESSION_CHARS = 200


class ArithmeticError_(ValueError):
    """The text is not a plain arithmetic expression we are willing to evaluate."""


_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
_TIMES = re.compile(r"(?<=[\d)\s])[xX](?=[\s\d(])")
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s*%")
_PLAIN_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def normalize_expression(text: str) -> str:
    """Map the notations solutions use (×, ÷, x between numbers, $, commas in numbers, %) to Python."""
    text = text.replace("×", "*").replace("÷", "/").replace("−", "-").replace("^", "**")
    text = _THOUSANDS.sub("", text)
    text = _TIMES.sub("*", text)
    text = text.replace("$", "")
    text = _PERCENT.sub(r"(\1/100)", text)
    return text.strip()


def evaluate(text: str) -> float:
    """The value of an arithmetic expression; raises ArithmeticError_ for anything else."""
    expression = normalize_expression(text)
    if not expression or len(expression) > MAX_EXPRESSION_CHARS:
        raise ArithmeticError_("empty or too long")
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as exc:
        raise ArithmeticError_(f"not arithmetic: {text!r}") from exc
    return _walk(tree.body)


def _walk(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_walk(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _walk(node.left), _walk(node.right)
        if isinstance(node.op, ast.Pow) and (abs(right) > 64 or abs(left) > 1e6):
            raise ArithmeticError_("exponent too large")
        try:
            value = _BINARY[type(node.op)](left, right)
        except (ZeroDivisionError, OverflowError) as exc:
            raise ArithmeticError_(str(exc)) from exc
        if isinstance(value, complex) or not math.isfinite(value) or abs(value) > MAX_MAGNITUDE:
            raise ArithmeticError_("out of range")
        return float(value)
    raise ArithmeticError_(f"unsupported syntax: {type(node).__name__}")


def parse_number(text: str) -> float | None:
    if _PLAIN_NUMBER.fullmatch(text):  # the common case, without the normalization passes
        return float(text)
    cleaned = normalize_expression(text).rstrip(".")
    try:
        return float(cleaned)
    except ValueError:
        return None


def close(a: float, b: float) -> bool:
    """Equal up to the rounding solutions do (2 decimals, or 1e-6 relative)."""
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6) or abs(a - b) <= 0.01 * max(1.0, min(abs(a), 1.0)) or (
        round(a, 2) == round(b, 2))
