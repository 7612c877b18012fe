from __future__ import annotations

import math

from models.answers import agreement_shares, answers_equivalent, extract_answer, group_answers


def test_extracts_common_final_answer_forms() -> None:
    assert extract_answer("so 2 * 9 = $<<2*9=18>>18 per day\nA: 18") == "18"
    assert extract_answer("Natalia sold 72 clips.\n#### 72") == "72"
    assert extract_answer(r"Thus the answer is \boxed{\frac{1}{2}}.") == r"\frac{1}{2}"
    assert extract_answer("We get 3 apples and then 5 pears") == "5"
    assert extract_answer("no numbers here") is None


def test_a_comma_after_the_last_number_is_punctuation() -> None:
    assert extract_answer("She has 7, since 3 + 4 = 7,") == "7"
    assert extract_answer("The total is 1,200, in dollars") == "1,200"
    assert extract_answer("It costs -$ 1,234.50.") == "-$ 1,234.50"


def test_numeric_equivalence() -> None:
    assert answers_equivalent("$1,000", "1000")
    assert answers_equivalent("18.0", "18")
    assert not answers_equivalent("18", "19")
    assert answers_equivalent(r"\frac{1}{2}", "0.5")


def test_groups_and_agreement() -> None:
    answers = ["18", "18.00", "224", None]
    assert group_answers(answers) == [0, 0, 1, -1]
    shares = agreement_shares(answers)
    assert shares[:3] == [1 / 3, 1 / 3, 0.0] and math.isnan(shares[3])
    assert math.isnan(agreement_shares(["5"])[0])
