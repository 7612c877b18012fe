from __future__ import annotations

import math

import pytest

from workers.verifiers.base import PairItem
from workers.verifiers.math_check import MathCheckVerifier, consistency_score, find_checks
from workers.verifiers.safe_arith import ArithmeticError_, evaluate


@pytest.mark.parametrize(("text", "value"), [
    ("3+4", 7.0), ("2*9", 18.0), ("$1,200 / 4", 300.0), ("(16-3)*2", 26.0), ("3 x 4", 12.0), ("50%*80", 40.0),
    ("2**10", 1024.0), ("-5+2", -3.0), ("7 ÷ 2", 3.5),
])
def test_evaluate_arithmetic(text: str, value: float) -> None:
    assert evaluate(text) == pytest.approx(value)


@pytest.mark.parametrize("hostile", [
    "__import__('os').system('true')", "open('/etc/passwd')", "(lambda: 1)()", "[1,2]", "9**9**9", "10**400",
    "a+1", "1/0", "'a'*3",
])
def test_evaluate_refuses_anything_but_arithmetic(hostile: str) -> None:
    with pytest.raises(ArithmeticError_):
        evaluate(hostile)


def test_correct_solution_scores_one() -> None:
    solution = ("She uses 3 + 4 = <<3+4=7>>7 eggs\n16 - 7 = <<16-7=9>>9 are left\n"
                "2 * 9 = $<<2*9=18>>18 per day\nA: 18")
    assert consistency_score(solution) == 1.0


def test_wrong_annotation_and_equation_lower_the_score() -> None:
    solution = "16 - 7 = <<16-7=8>>8 are left\nThen 8 * 2 = 17 dollars\nA: 17"
    checks = find_checks(solution)
    failed = {c.kind for c in checks if not c.holds}
    assert failed == {"annotation", "equation"}
    assert consistency_score(solution) < 0.5


def test_final_answer_not_supported_by_the_work() -> None:
    solution = "16 - 7 = <<16-7=9>>9 are left\n2 * 9 = <<2*9=18>>18\nA: 42"
    checks = {c.kind: c.holds for c in find_checks(solution)}
    assert checks["final_answer"] is False
    assert consistency_score(solution) == pytest.approx(2 / 3)


def test_nothing_checkable_abstains() -> None:
    assert math.isnan(consistency_score("I do not know."))


def test_verifier_scores_a_batch() -> None:
    verifier = MathCheckVerifier("math_check")
    scores = verifier.score_sync([PairItem("q", "2+2 = 4\nA: 4"), PairItem("q", "2+2 = 5\nA: 5")])
    assert scores == [1.0, 0.5]


def test_operands_from_nowhere_are_flagged_when_the_prompt_is_known() -> None:
    prompt = "Tom has 16 apples and gives away 7."
    grounded = "16 - 7 = <<16-7=9>>9\nA: 9"
    invented = "16 - 13 = <<16-13=3>>3\nA: 3"
    assert consistency_score(grounded, prompt) == 1.0
    kinds = {c.kind: c.holds for c in find_checks(invented, prompt)}
    assert kinds["grounded"] is False and kinds["annotation"] is True
