"""Quiz definitions load only when complete and consistent; sessions branch, check and derive from them."""

from __future__ import annotations

import copy
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.preferences.quizzes.definitions import (
    QUIZ_DIR,
    AnswerError,
    Quiz,
    QuizError,
    derive_traits,
    load_quizzes,
    next_question,
    validate_answer,
    validate_quiz,
)
from tillit.policy import LANGUAGES, Policy, load_policy
from tillit.settings import REPO_ROOT

Raw = dict[str, Any]


def texts(word: str) -> dict[str, str]:
    return {language: f"{word} ({language})" for language in LANGUAGES}


def option(option_id: str, *effects: dict[str, Any], image: bool = False) -> Raw:
    made: Raw = {"id": option_id, "label": texts(option_id.title()), "effects": list(effects)}
    if image:
        made["image"] = {"url": f"/static/quiz/mini/{option_id}.jpg", "alt": texts(f"Picture of {option_id}")}
    return made


def mini() -> Raw:
    """A small valid quiz using every kind of question and condition, on the shipped traits."""
    return {
        "id": "mini",
        "version": 1,
        "title": texts("Mini"),
        "description": texts("A small quiz"),
        "start": "dept",
        "questions": [
            {
                "id": "dept",
                "kind": "single",
                "text": texts("Which department?"),
                "options": [
                    option("womens", {"set": "department", "to": "womens"}),
                    option("kids", {"set": "department", "to": "kids"}),
                ],
                "next": [{"when": {"question": "dept", "is": "kids"}, "goto": "needs"}],
                "goto": "look",
            },
            {
                "id": "needs",
                "kind": "multiple",
                "min": 1,
                "max": 2,
                "text": texts("What do they need?"),
                "options": [
                    option("school", {"add": "recommended_categories", "values": ["kids_school"]}),
                    option("sport", {"add": "recommended_categories", "values": ["kids_sport", "sneakers"]}),
                    option("party", {"add": "recommended_categories", "values": ["kids_party", "sneakers"]}),
                ],
                "goto": "fit",
            },
            {
                "id": "look",
                "kind": "image",
                "text": texts("Which look?"),
                "options": [
                    option("clean", {"score": "style", "weights": {"minimal": 3, "street": -1}}, image=True),
                    option("graphic", {"score": "style", "weights": {"street": 3}}, image=True),
                    option("both", {"score": "style", "weights": {"street": 2, "minimal": 2}}, image=True),
                    option("neither", {"score": "style", "weights": {"minimal": -1, "street": 0}}, image=True),
                ],
                "goto": "fit",
            },
            {
                "id": "fit",
                "kind": "scale",
                "min": 1,
                "max": 5,
                "text": texts("How should it fit?"),
                "low": texts("Close"),
                "high": texts("Loose"),
                "ranges": [
                    {"min": 1, "max": 2, "effects": [{"set": "fit_preference", "to": "slim"}]},
                    {"min": 4, "max": 5, "effects": [{"score": "style", "weights": {"street": 1}}]},
                ],
                "next": [
                    {
                        "when": {"all": [{"question": "fit", "gte": 4}, {"not": {"question": "dept", "is": "kids"}}]},
                        "goto": "spend",
                    }
                ],
                "goto": "end",
            },
            {
                "id": "spend",
                "kind": "single",
                "text": texts("How do you shop?"),
                "options": [
                    option("deals", {"set": "price_sensitivity", "to": "high"}),
                    option("invest", {"set": "price_sensitivity", "to": "low"}),
                ],
                "goto": "end",
            },
        ],
    }


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(REPO_ROOT / "policies")


@pytest.fixture(scope="module")
def style(policy: Policy) -> Quiz:
    return load_quizzes(QUIZ_DIR, policy)[("style", 1)]


@pytest.fixture(scope="module")
def quiz(policy: Policy) -> Quiz:
    return validate_quiz(mini(), policy)


def write(directory: Path, raw: Raw | str, name: str = "mini.yaml") -> Path:
    directory.mkdir(exist_ok=True)
    path = directory / name
    text = raw if isinstance(raw, str) else yaml.safe_dump(raw, allow_unicode=True, sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return path


def test_the_demo_quizzes_load_against_the_shipped_policy(policy: Policy) -> None:
    quizzes = load_quizzes(QUIZ_DIR, policy)
    assert set(quizzes) == {("style", 1), ("gift-finder", 1)}
    style, gift = quizzes[("style", 1)], quizzes[("gift-finder", 1)]
    assert style.title["sv"] == "Hitta din stil"
    assert {question.kind for question in style.questions} == {"single", "multiple", "scale", "image"}
    assert 8 <= len(style.questions) <= 10
    assert 6 <= len(gift.questions) <= 8
    for demo in quizzes.values():
        for question in demo.questions:
            assert set(question.text) == set(LANGUAGES)
            for choice in question.options:
                assert set(choice.label) == set(LANGUAGES)
    images = [choice.image for choice in style.question("everyday").options]
    assert all(image is not None and image.url.startswith("/static/quiz/style/") for image in images)


def test_a_valid_quiz_validates_from_a_mapping_and_from_a_struct(policy: Policy, quiz: Quiz) -> None:
    assert quiz.key == ("mini", 1)
    assert validate_quiz(quiz, policy) == quiz
    assert quiz.question("fit").next[0].when.all is not None


def at(index: int, *keys: str | int) -> Callable[[Raw], Any]:
    """A getter for ``questions[index][keys...]`` of a raw quiz."""

    def get(raw: Raw) -> Any:
        node: Any = raw["questions"][index]
        for key in keys:
            node = node[key]
        return node

    return get


def change(path: Callable[[Raw], Any], key: str | int, value: Any) -> Callable[[Raw], None]:
    def apply(raw: Raw) -> None:
        path(raw)[key] = value

    return apply


def delete(path: Callable[[Raw], Any], key: str) -> Callable[[Raw], None]:
    def apply(raw: Raw) -> None:
        del path(raw)[key]

    return apply


def root(raw: Raw) -> Raw:
    return raw


def orphan(raw: Raw) -> None:
    raw["questions"].append({**copy.deepcopy(raw["questions"][4]), "id": "orphan"})


def set_and_score(raw: Raw) -> None:
    raw["questions"][4]["options"][0]["effects"].append({"set": "style", "to": "classic"})


DEEP = {"not": {"not": {"not": {"not": {"question": "dept", "is": "kids"}}}}}
STEP_OF_THREE = change(at(3), "step", 3)

BROKEN: list[tuple[str, Callable[[Raw], None], str | None, str]] = [
    ("duplicate question", change(at(4), "id", "fit"), "fit", "used twice"),
    ("unknown start", change(root, "start", "nope"), None, "start 'nope' is not a question"),
    ("unknown goto", change(at(2), "goto", "nowhere"), "look", "goto 'nowhere' is not a question"),
    ("unknown rule goto", change(at(0, "next", 0), "goto", "kidz"), "dept", "goto 'kidz'"),
    ("cycle", change(at(4), "goto", "dept"), "spend", "loops back: dept -> needs -> fit -> spend -> dept"),
    ("unreachable", orphan, "orphan", "unreachable"),
    ("label missing", delete(at(0, "options", 0, "label"), "et"), "dept", "option 'womens' has no label in et"),
    ("text missing", delete(at(1, "text"), "nb"), "needs", "question text missing in nb"),
    ("title missing", delete(at(0, "text"), "sv"), "dept", "missing in sv"),
    ("alt missing", delete(at(2, "options", 1, "image", "alt"), "sv"), "look", "'graphic' image has no alt text in sv"),
    ("image missing", delete(at(2, "options", 0), "image"), "look", "'clean' has no image"),
    ("min over max", change(at(1), "min", 3), "needs", "min 3 is more than max 2"),
    ("max over options", change(at(1), "max", 4), "needs", "max 4 is more than the 3 options"),
    ("min on single", change(at(0), "min", 1), "dept", "a single question takes no min or max"),
    ("one option", change(at(4), "options", [option("deals")]), "spend", "at least two options"),
    ("same option twice", change(at(4, "options", 1), "id", "deals"), "spend", "'deals' is defined twice"),
    (
        "undeclared trait",
        change(at(0, "options", 0, "effects", 0), "set", "horoscope"),
        "dept",
        "trait 'horoscope' is not declared in the policy",
    ),
    ("value not allowed", change(at(0, "options", 0, "effects", 0), "to", "pets"), "dept", "'pets' is not one of"),
    (
        "wrong type for a list trait",
        change(at(1, "options", 0), "effects", [{"set": "recommended_categories", "to": "coats"}]),
        "needs",
        "'coats' is not a list of values",
    ),
    (
        "add to an enum",
        change(at(1, "options", 0), "effects", [{"add": "style", "values": ["minimal"]}]),
        "needs",
        "add needs a list trait; 'style' is enum",
    ),
    (
        "value not in list",
        change(at(1, "options", 0, "effects", 0), "values", ["hats"]),
        "needs",
        "'hats' not among",
    ),
    (
        "score a list",
        change(at(2, "options", 0), "effects", [{"score": "recommended_categories", "weights": {"coats": 1}}]),
        "look",
        "score needs an enum trait",
    ),
    ("weight too high", change(at(2, "options", 0, "effects", 0, "weights"), "minimal", 11), "look", "weight 11"),
    ("weight too low", change(at(2, "options", 0, "effects", 0, "weights"), "street", -11), "look", "weight -11"),
    ("score a bad value", change(at(2, "options", 0, "effects", 0, "weights"), "boho", 1), "look", "'boho' is not"),
    ("two verbs", change(at(4, "options", 0, "effects", 0), "add", "colour_palette"), "spend", "exactly one of"),
    ("set without to", delete(at(4, "options", 0, "effects", 0), "to"), "spend", "set needs to"),
    ("set with weights", change(at(4, "options", 0, "effects", 0), "weights", {"a": 1}), "spend", "not weights"),
    ("set and score", set_and_score, None, "'style' is scored"),
    (
        "condition on an unknown question",
        change(at(0, "next", 0, "when"), "question", "shoe"),
        "dept",
        "'shoe', which is not a question",
    ),
    (
        "condition on a later question",
        change(at(0, "next", 0), "when", {"question": "fit", "gte": 4}),
        "dept",
        "'fit', which is never answered before this point",
    ),
    (
        "condition on a question answered on some path is accepted",
        change(at(3, "next", 0), "when", {"question": "needs", "is": "school"}),
        None,
        None,
    ),
    (
        "condition on a sibling branch",
        change(at(2), "next", [{"when": {"question": "needs", "is": "school"}, "goto": "end"}]),
        "look",
        "'needs', which is never answered before this point",
    ),
    ("condition on an unknown option", change(at(0, "next", 0, "when"), "is", "mens"), "dept", "'mens', not an option"),
    ("is on a scale", change(at(3, "next", 0, "when", "all", 0), "is", "four"), "fit", "uses gte and/or lte"),
    ("gte on a choice", change(at(0, "next", 0, "when"), "gte", 1), "dept", "exactly one of is, in"),
    ("empty all", change(at(3, "next", 0, "when"), "all", []), "fit", "all needs at least one condition"),
    ("two combinators", change(at(3, "next", 0, "when"), "any", [DEEP]), "fit", "one of all, any, not"),
    ("too deep", change(at(0, "next", 0), "when", DEEP), "dept", "deeper than 4 levels"),
    ("no question", change(at(0, "next", 0), "when", {"is": "kids"}), "dept", "needs a question"),
    ("scale step", STEP_OF_THREE, "fit", "step 3 does not lead from min 1 to max 5"),
    ("scale bounds", change(at(3), "min", 5), "fit", "min 5 is not below max 5"),
    ("scale label", delete(at(3, "low"), "et"), "fit", "the low label is missing in et"),
    ("scale options", change(at(3), "options", [option("a"), option("b")]), "fit", "has no options"),
    ("range outside", change(at(3, "ranges", 1), "max", 6), "fit", "range 4..6 is outside the scale 1..5"),
    ("ranges overlap", change(at(3, "ranges", 1), "min", 2), "fit", "range 2..5 overlaps range 1..2"),
    ("step on a choice", change(at(0), "step", 1), "dept", "only a scale question takes step"),
    ("reserved id", change(at(4), "id", "end"), "end", "reserved"),
    ("unknown key", change(at(2), "colour", "red"), "look", "unknown field `colour`"),
    ("unknown kind", change(at(2), "kind", "slider"), "look", "Invalid enum value 'slider' (at $.questions[2].kind)"),
    ("unknown language", change(at(0, "text"), "de", "Welche?"), "dept", "'de' (at a key in $.questions[0].text)"),
    ("bad image url", change(at(2, "options", 0, "image"), "url", "javascript:alert(1)"), "look", "regex"),
    ("version zero", change(root, "version", 0), None, ">= 1"),
]


@pytest.mark.parametrize(("mutate", "question", "problem"), [case[1:] for case in BROKEN], ids=[c[0] for c in BROKEN])
def test_a_broken_quiz_names_the_file_the_quiz_the_question_and_the_problem(
    tmp_path: Path, policy: Policy, mutate: Callable[[Raw], None], question: str | None, problem: str | None
) -> None:
    raw = mini()
    mutate(raw)
    path = write(tmp_path / "quizzes", raw)
    if problem is None:
        load_quizzes(path.parent, policy)
        return
    with pytest.raises(QuizError) as caught:
        load_quizzes(path.parent, policy)
    error = caught.value
    assert (error.file, error.question) == (str(path), question)
    assert error.quiz.startswith("mini v")
    assert problem in error.problem
    assert str(error).startswith(f"{path}: quiz {error.quiz}: ")
    assert problem in str(error)
    if question:
        assert f"question {question}: " in str(error)


def test_the_same_id_and_version_twice_is_refused(tmp_path: Path, policy: Policy) -> None:
    first = write(tmp_path / "quizzes", mini(), "a.yaml")
    second = write(tmp_path / "quizzes", mini(), "b.yaml")
    with pytest.raises(QuizError, match="already defined in") as caught:
        load_quizzes(first.parent, policy)
    assert caught.value.file == str(second)
    assert str(first) in caught.value.problem
    write(tmp_path / "quizzes", {**mini(), "version": 2}, "b.yaml")
    assert set(load_quizzes(first.parent, policy)) == {("mini", 1), ("mini", 2)}


def test_bad_yaml_and_a_missing_directory_are_refused(tmp_path: Path, policy: Policy) -> None:
    write(tmp_path / "quizzes", "questions: [unclosed")
    with pytest.raises(QuizError, match="not valid YAML"):
        load_quizzes(tmp_path / "quizzes", policy)
    with pytest.raises(QuizError, match="not a directory"):
        load_quizzes(tmp_path / "nowhere", policy)
    with pytest.raises(QuizError, match="a quiz is a mapping"):
        validate_quiz(["not", "a", "quiz"], policy)  # type: ignore[arg-type]


@pytest.fixture
def extended_policy(tmp_path: Path) -> Policy:
    """The shipped policy plus a number and a text trait."""
    directory = tmp_path / "policies"
    shutil.copytree(REPO_ROOT / "policies", directory)
    (directory / "extra.yaml").write_text(
        """
traits:
  budget_limit: {type: number, min: 0, max: 500, category: user.demographic.profile, description: Budget.}
  motto: {type: text, max_length: 12, category: user.demographic.profile, description: Own words.}
""",
        encoding="utf-8",
    )
    return load_policy(directory)


@pytest.mark.parametrize(
    ("effect", "problem"),
    [
        ({"set": "budget_limit", "to": 250}, None),
        ({"set": "motto", "to": "Less, better"}, None),
        ({"set": "budget_limit", "to": 501}, "501 is not between 0 and 500"),
        ({"set": "budget_limit", "to": "cheap"}, "'cheap' is not a number"),
        ({"set": "motto", "to": "Far too many words"}, "longer than 12"),
        ({"set": "motto", "to": ["a"]}, "not a non-empty text"),
        ({"set": "department", "to": 3}, "3 is not one of"),
    ],
)
def test_a_trait_value_of_the_wrong_type_is_refused_at_load(
    tmp_path: Path, extended_policy: Policy, effect: dict[str, Any], problem: str | None
) -> None:
    raw = mini()
    raw["questions"][4]["options"][1]["effects"] = [effect]
    path = write(tmp_path / "quizzes", raw)
    if problem is None:
        quiz = load_quizzes(path.parent, extended_policy)[("mini", 1)]
        answers = {"dept": "womens", "look": "clean", "fit": 5, "spend": "invest"}
        assert derive_traits(quiz, answers, extended_policy)[str(effect["set"])] == effect["to"]
        return
    with pytest.raises(QuizError) as caught:
        load_quizzes(path.parent, extended_policy)
    assert caught.value.question == "spend"
    assert problem in caught.value.problem


ADULT = {"department": "womens", "everyday": "clean", "weekend": "city"}


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        ({}, "department"),
        ({"department": "kids"}, "kids_needs"),
        ({"department": "womens"}, "everyday"),
        ({"department": "kids", "everyday": "clean"}, "kids_needs"),
        ({"department": "kids", "kids_needs": ["school"]}, "budget"),
        ({"department": "kids", "kids_needs": ["school"], "budget": "invest"}, None),
        ({"department": "kids", "kids_needs": ["school"], "budget": "deals"}, "deal_picks"),
        (ADULT, "colours"),
        ({**ADULT, "weekend": "outdoors"}, "weather"),
        ({"department": "mens", "everyday": "technical", "weekend": "dinner"}, "weather"),
        ({**ADULT, "weekend": "outdoors", "weather": "rain"}, "colours"),
        ({**ADULT, "colours": ["navy"], "fit": 3}, "budget"),
        ({**ADULT, "colours": ["navy"], "fit": 3, "budget": "deals"}, "deal_picks"),
        ({**ADULT, "colours": ["navy"], "fit": 3, "budget": "deals", "deal_picks": ["outlet"]}, None),
        ({**ADULT, "colours": ["navy"], "fit": 3, "budget": "value"}, "investment"),
        ({**ADULT, "colours": ["navy"], "fit": 3, "budget": "invest", "investment": "coat"}, None),
        ({"department": "unisex", "everyday": "graphic", "weekend": "concert", "weather": "rain"}, "colours"),
    ],
)
def test_next_question_follows_the_branching_of_the_style_quiz(
    style: Quiz, answers: dict[str, Any], expected: str | None
) -> None:
    assert next_question(style, answers) == expected


def test_answers_left_on_an_abandoned_branch_are_ignored(style: Quiz, policy: Policy) -> None:
    answers = {"department": "kids", "everyday": "graphic", "weekend": "concert", "kids_needs": ["sport"]}
    assert next_question(style, answers) == "budget"
    assert derive_traits(style, answers, policy) == {
        "department": "kids",
        "recommended_categories": ["kids_sport"],
    }


@pytest.mark.parametrize(
    ("question", "answer", "problem"),
    [
        ("shoe_size", "42", "has no question 'shoe_size'"),
        ("department", ["womens"], "expected one option id"),
        ("department", "pets", "'pets' is not an option here"),
        ("everyday", 1, "expected one option id"),
        ("colours", "navy", "expected a list of option ids"),
        ("colours", ["navy", 3], "expected a list of option ids"),
        ("colours", ["navy", "tartan"], "'tartan' not an option here"),
        ("colours", ["navy", "navy"], "chosen twice"),
        ("colours", ["navy", "earth", "brights"], "choose 1 to 2 options, not 3"),
        ("colours", [], "choose 1 to 2 options, not 0"),
        ("fit", "3", "expected a number"),
        ("fit", True, "expected a number"),
        ("fit", math.nan, "expected a number"),
        ("fit", 6, "6 is not between 1 and 5"),
        ("fit", 0, "0 is not between 1 and 5"),
        ("fit", 2.5, "2.5 is not on the scale"),
    ],
)
def test_validate_answer_refuses_each_bad_shape(style: Quiz, question: str, answer: Any, problem: str) -> None:
    with pytest.raises(AnswerError) as caught:
        validate_answer(style, question, answer)
    assert problem in caught.value.problem


def test_validate_answer_normalises(style: Quiz) -> None:
    assert validate_answer(style, "department", "mens") == "mens"
    assert validate_answer(style, "colours", ["earth", "monochrome"]) == ["monochrome", "earth"]
    normalised = validate_answer(style, "fit", 3.0)
    assert (normalised, type(normalised)) == (3, int)


def test_derive_traits_sets_adds_and_scores_along_the_path(style: Quiz, policy: Policy) -> None:
    answers = {
        "department": "womens",
        "everyday": "technical",
        "weekend": "city",
        "weather": "rain",
        "colours": ["earth", "monochrome"],
        "fit": 4,
        "budget": "invest",
        "investment": "shoes",
    }
    assert next_question(style, answers) is None
    traits = derive_traits(style, answers, policy)
    assert traits == {
        "department": "womens",
        "recommended_categories": ["fleece", "trail_shoes", "rain_jackets", "boots", "leather_shoes"],
        "colour_palette": ["monochrome", "earth"],
        "fit_preference": "relaxed",
        "price_sensitivity": "low",
        "style": "outdoor",
    }


def test_the_kids_path_scores_no_style(style: Quiz, policy: Policy) -> None:
    answers = {"department": "kids", "kids_needs": ["outdoor", "school"], "budget": "deals", "deal_picks": ["outlet"]}
    traits = derive_traits(style, answers, policy)
    assert "style" not in traits
    assert traits["recommended_categories"] == ["kids_school", "kids_outdoor", "outlet"]
    assert traits["price_sensitivity"] == "high"


@pytest.mark.parametrize(
    ("look", "fit", "expected"),
    [
        ("clean", 3, "minimal"),
        ("graphic", 3, "street"),
        ("both", 3, "minimal"),  # 2 and 2: minimal comes before street in the policy
        ("clean", 5, "minimal"),  # minimal 3, street -1 + 1 = 0
        ("neither", 3, None),  # minimal -1, street 0: nothing positive
        ("neither", 4, "street"),  # street 0 + 1
    ],
)
def test_scores_take_the_highest_ties_follow_the_policy_and_nothing_positive_leaves_it_unset(
    quiz: Quiz, policy: Policy, look: str, fit: int, expected: str | None
) -> None:
    answers = {"dept": "womens", "look": look, "fit": fit}
    if fit >= 4:
        answers["spend"] = "deals"
    traits = derive_traits(quiz, answers, policy)
    assert traits.get("style") == expected


def test_a_list_trait_takes_each_value_once_and_set_replaces(quiz: Quiz, policy: Policy) -> None:
    answers = {"dept": "kids", "needs": ["sport", "party"], "fit": 1}
    assert next_question(quiz, answers) is None
    assert derive_traits(quiz, answers, policy) == {
        "department": "kids",
        "recommended_categories": ["kids_sport", "sneakers", "kids_party"],
        "fit_preference": "slim",
    }
    assert next_question(quiz, {"dept": "kids", "needs": ["sport"], "fit": 5}) is None
    assert next_question(quiz, {"dept": "womens", "look": "clean", "fit": 5}) == "spend"


def test_the_gift_finder_branches_on_recipient_and_budget(policy: Policy) -> None:
    gift = load_quizzes(QUIZ_DIR, policy)[("gift-finder", 1)]
    assert next_question(gift, {"recipient": "child"}) == "child_age"
    assert next_question(gift, {"recipient": "friend"}) == "occasion"
    small = {"recipient": "friend", "occasion": "birthday", "budget": "small"}
    assert next_question(gift, small) == "small_treats"
    assert next_question(gift, {**small, "small_treats": "beanie"}) is None
    large = {"recipient": "partner", "occasion": "anniversary", "budget": "large", "interests": ["cosy_home"]}
    assert next_question(gift, large) == "boldness"
    assert next_question(gift, {**large, "recipient": "colleague"}) is None
    traits = derive_traits(gift, {**large, "boldness": 5}, policy)
    assert traits["gift_style"] == "cosy"  # cosy 3, bold 3: cosy is listed first
    assert traits["gift_categories"] == ["loungewear", "knitwear"]
