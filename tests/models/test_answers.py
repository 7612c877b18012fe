from __future__ import annotations

import math

from models import answers
from models.answers import agreement_shares, answers_equivalent, canonical_answer, extract_answer, group_answers


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


def test_groups_follow_the_pairwise_rule() -> None:
    """Each answer joins the first group whose first answer it is equivalent to (what the keys computed once per
    answer must not change): numbers by value, LaTeX and fractions through math-verify, the rest as strings."""
    answers = ["1/2", "0.5", r"\frac12", "50%", "5 dollars", "5", "$5", "5.0", "a", "A", " a ", None, "x^2",
               "x**2", "1,200", "1200", "$1200.00", "-3", "- 3", "3"]
    groups = group_answers(answers)
    firsts: list[str] = []
    for answer, gid in zip(answers, groups, strict=True):
        if answer is None:
            assert gid == -1
            continue
        expected = next((i for i, first in enumerate(firsts) if answers_equivalent(answer, first)), len(firsts))
        if expected == len(firsts):
            firsts.append(answer)
        assert gid == expected, (answer, gid, expected)
    assert groups[:8] == [0, 0, 0, 0, 1, 1, 1, 1] and groups[14:17] == [groups[14]] * 3


def test_long_answers_are_not_cached() -> None:
    """A request may carry 32,000 characters: caching every distinct long answer would grow without bound."""
    long = "the sum of x " * answers.MAX_CACHED_ANSWER_CHARS
    before = answers._keyed_cached.cache_info().currsize
    assert group_answers([long, long + " ", "7"]) == [0, 0, 1]
    assert canonical_answer(long) == long.strip().lower()
    assert answers._keyed_cached.cache_info().currsize - before <= 1  # only "7" may be new
