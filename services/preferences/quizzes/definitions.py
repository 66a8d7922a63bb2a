"""Quiz definitions as data: questions, branching on earlier answers, and answers mapped to traits.

A quiz is a YAML file (``data/*.yaml``) or a mapping sent to the API. It is checked against the
policy before use: every text in every language, branching that neither loops nor strands a
question, conditions only on questions answered on the way, and effects only on traits declared in
``policies/`` with values those traits allow. The pure functions at the end are what a quiz session
runs: which question comes next, whether an answer fits its question, and which traits the answers
give.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import msgspec
import yaml

from tillit.patterns import exact
from tillit.policy import LANGUAGES, Language, Policy, TraitValue

__all__ = [
    "END",
    "MAX_CONDITION_DEPTH",
    "MAX_WEIGHT",
    "QUIZ_DIR",
    "Answer",
    "AnswerError",
    "Condition",
    "Effect",
    "Image",
    "Option",
    "Question",
    "QuestionKind",
    "Quiz",
    "QuizError",
    "Rule",
    "ScaleRange",
    "answered_path",
    "derive_traits",
    "load_quizzes",
    "next_question",
    "validate_answer",
    "validate_quiz",
]

QUIZ_DIR: Final = Path(__file__).parent / "data"
END: Final = "end"
"""The ``goto`` that finishes the quiz."""
MAX_CONDITION_DEPTH: Final = 4
MAX_WEIGHT: Final = 10

Slug = Annotated[str, msgspec.Meta(pattern=exact(r"^[a-z][a-z0-9_-]{0,63}$"))]
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
Localized = dict[Language, Text]
Number = int | float
QuestionKind = Literal["single", "multiple", "scale", "image"]
Answer = str | list[str] | int | float
"""An option id (single, image), option ids (multiple) or a number (scale)."""


class QuizError(Exception):
    """A quiz definition is refused; names the file, the quiz, the question (if any) and the problem."""

    def __init__(self, file: Path | str, quiz: str, question: str | None, problem: str) -> None:
        where = f"question {question}: " if question else ""
        super().__init__(f"{file}: quiz {quiz}: {where}{problem}")
        self.file = str(file)
        self.quiz = quiz
        self.question = question
        self.problem = problem


class AnswerError(ValueError):
    """An answer does not fit its question."""

    def __init__(self, problem: str, question: str | None = None) -> None:
        super().__init__(f"question {question}: {problem}" if question else problem)
        self.problem = problem
        self.question = question


class Image(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    url: Annotated[str, msgspec.Meta(max_length=500, pattern=exact(r"^(/[^/\s]|https://)\S*$"))]
    alt: dict[Language, Text] = {}


class Effect(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """Exactly one of ``{set: trait, to: value}``, ``{add: trait, values: [...]}`` or
    ``{score: trait, weights: {value: weight}}`` (weights -10..10, for an enum trait)."""

    set: str | None = None
    to: TraitValue | None = None
    add: str | None = None
    values: list[str] | None = None
    score: str | None = None
    weights: dict[str, int] | None = None

    @property
    def trait(self) -> str:
        return self.set or self.add or self.score or ""


class Option(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: Slug
    label: Localized
    image: Image | None = None
    effects: list[Effect] = []


class ScaleRange(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Effects applied when a scale answer lies in ``min``..``max`` (inclusive)."""

    min: Number
    max: Number
    effects: list[Effect]


class Condition(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """A test on one earlier answer (``is``, ``in``, ``gte``/``lte``) or ``all``/``any``/``not`` of tests.

    ``is`` on a multiple-choice question means "chose this option", ``in`` means "chose any of these".
    A test on a question not answered on the way here is false.
    """

    question: str | None = None
    is_: str | None = msgspec.field(default=None, name="is")
    in_: list[str] | None = msgspec.field(default=None, name="in")
    gte: Number | None = None
    lte: Number | None = None
    all: list[Condition] | None = None
    any: list[Condition] | None = None
    not_: Condition | None = msgspec.field(default=None, name="not")


class Rule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    when: Condition
    goto: str


class Question(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One question; after it, the first ``next`` rule that holds decides, else ``goto``.

    ``min``/``max`` count choices for ``multiple`` (default 1 and every option) and bound the value
    for ``scale``; ``step``, ``low``/``high`` labels and ``ranges`` belong to ``scale`` only.
    """

    id: Slug
    kind: QuestionKind
    text: Localized
    goto: str
    next: list[Rule] = []
    options: list[Option] = []
    min: Number | None = None
    max: Number | None = None
    step: Number | None = None
    low: Localized = {}
    high: Localized = {}
    ranges: list[ScaleRange] = []

    def choice_bounds(self) -> tuple[int, int]:
        """How many options a multiple-choice answer may name, inclusive."""
        low = 1 if self.min is None else int(self.min)
        return low, len(self.options) if self.max is None else int(self.max)

    @property
    def scale_step(self) -> Number:
        return 1 if self.step is None else self.step


class Quiz(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: Slug
    version: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]
    title: Localized
    description: Localized
    start: str
    questions: Annotated[list[Question], msgspec.Meta(min_length=1, max_length=100)]

    @property
    def key(self) -> tuple[str, int]:
        return self.id, self.version

    def question(self, question_id: str) -> Question:
        """The question with this id; ``KeyError`` if there is none."""
        for question in self.questions:
            if question.id == question_id:
                return question
        raise KeyError(question_id)


def load_quizzes(directory: Path, policy: Policy) -> dict[tuple[str, int], Quiz]:
    """Read and validate every ``*.yaml`` in ``directory`` (one quiz per file), keyed by (id, version)."""
    if not directory.is_dir():
        raise QuizError(directory, "(none)", None, "not a directory of quiz files")
    quizzes: dict[tuple[str, int], Quiz] = {}
    origin: dict[tuple[str, int], Path] = {}
    for path in sorted(directory.glob("*.yaml")):
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise QuizError(path, "(file)", None, f"not valid YAML: {exc}") from exc
        quiz = validate_quiz(raw, policy, file=path)
        if quiz.key in quizzes:
            raise QuizError(path, _label(quiz), None, f"this id and version are already defined in {origin[quiz.key]}")
        quizzes[quiz.key], origin[quiz.key] = quiz, path
    return quizzes


def validate_quiz(raw: Quiz | Mapping[str, Any], policy: Policy, *, file: Path | str = "(request)") -> Quiz:
    """Check one quiz (a parsed mapping, or a ``Quiz`` built in code) against the policy."""
    if isinstance(raw, Quiz):
        raw = msgspec.to_builtins(raw)
    if not isinstance(raw, Mapping):
        raise QuizError(file, "(unknown)", None, "a quiz is a mapping with id, version, title, ... questions")
    try:
        quiz = msgspec.convert(raw, type=Quiz)
    except msgspec.ValidationError as exc:
        problem, _, path = str(exc).rpartition(" - at `")
        path = path.rstrip("`").replace("key` in `", "a key in ")
        label = f"{raw.get('id', '(no id)')} v{raw.get('version', '?')}"
        raise QuizError(file, label, _question_at(raw, path), f"{problem} (at {path})" if problem else path) from exc
    _Checker(quiz, policy, file).check()
    return quiz


def next_question(quiz: Quiz, answers: Mapping[str, Answer]) -> str | None:
    """The question to ask after ``answers`` (question id → answer), or ``None`` when the quiz is done.

    The walk starts at ``start`` and follows answered questions, so answers left behind on a branch
    the shopper went back from are ignored.
    """
    return _walk(quiz, answers)[1]


def answered_path(quiz: Quiz, answers: Mapping[str, Answer]) -> list[str]:
    """The answered questions from ``start``, in the order asked (answers off that path are left out)."""
    return _walk(quiz, answers)[0]


def validate_answer(quiz: Quiz, question_id: str, answer: object) -> Answer:
    """The answer normalised (multiple choices in option order, whole scale values as ``int``)."""
    try:
        question = quiz.question(question_id)
    except KeyError:
        raise AnswerError(f"quiz {_label(quiz)} has no question {question_id!r}") from None
    options = [option.id for option in question.options]
    if question.kind in ("single", "image"):
        if not isinstance(answer, str):
            raise AnswerError("expected one option id", question_id)
        if answer not in options:
            raise AnswerError(f"{answer!r} is not an option here ({', '.join(options)})", question_id)
        return answer
    if question.kind == "multiple":
        if not isinstance(answer, list) or not all(isinstance(item, str) for item in answer):
            raise AnswerError("expected a list of option ids", question_id)
        unknown = [item for item in answer if item not in options]
        if unknown:
            raise AnswerError(f"{', '.join(map(repr, unknown))} not an option here ({', '.join(options)})", question_id)
        if len(set(answer)) != len(answer):
            raise AnswerError("an option is chosen twice", question_id)
        low, high = question.choice_bounds()
        if not low <= len(answer) <= high:
            raise AnswerError(f"choose {_between(low, high)} options, not {len(answer)}", question_id)
        return [option for option in options if option in answer]
    if isinstance(answer, bool) or not isinstance(answer, int | float) or not math.isfinite(answer):
        raise AnswerError("expected a number", question_id)
    low_value, high_value, step = question.min or 0, question.max or 0, question.scale_step
    if not low_value <= answer <= high_value:
        raise AnswerError(f"{answer} is not between {low_value} and {high_value}", question_id)
    steps = (answer - low_value) / step
    if abs(steps - round(steps)) > 1e-9:
        raise AnswerError(f"{answer} is not on the scale (steps of {step} from {low_value})", question_id)
    value = low_value + round(steps) * step
    return int(value) if float(value).is_integer() else value


def derive_traits(quiz: Quiz, answers: Mapping[str, Answer], policy: Policy) -> dict[str, TraitValue]:
    """Apply the effects of the answers along the path, in the order asked.

    ``set`` replaces a value, ``add`` appends to a list (each value once), ``score`` adds weights;
    a scored trait takes the value with the highest total, ties going to the value the policy lists
    first, and stays unset when no value scores above zero. The policy supplies that order.
    """
    traits: dict[str, TraitValue] = {}
    scores: dict[str, dict[str, int]] = {}
    path, _ = _walk(quiz, answers)
    for question_id in path:
        for effect in _effects(quiz.question(question_id), answers[question_id]):
            if effect.set is not None and effect.to is not None:
                traits[effect.set] = list(effect.to) if isinstance(effect.to, list) else effect.to
            elif effect.add is not None:
                current = traits.get(effect.add)
                items = list(current) if isinstance(current, list) else []
                items.extend(value for value in effect.values or [] if value not in items)
                traits[effect.add] = items
            elif effect.score is not None:
                tally = scores.setdefault(effect.score, {})
                for value, weight in (effect.weights or {}).items():
                    tally[value] = tally.get(value, 0) + weight
    for trait, tally in scores.items():
        order = policy.traits[trait].values
        best = max(order, key=lambda value: (tally.get(value, 0), -order.index(value)))
        if tally.get(best, 0) > 0:
            traits[trait] = best
    return traits


def _walk(quiz: Quiz, answers: Mapping[str, Answer]) -> tuple[list[str], str | None]:
    """The answered questions from ``start`` in order, and the question after them (``None``: the end)."""
    path: list[str] = []
    taken: dict[str, Answer] = {}
    current: str = quiz.start
    while current in answers:
        if current in taken:
            raise ValueError(f"quiz {_label(quiz)} loops at {current!r}; it was not validated")
        path.append(current)
        taken[current] = answers[current]
        current = _goto(quiz.question(current), taken)
        if current == END:
            return path, None
    return path, current


def _goto(question: Question, answers: Mapping[str, Answer]) -> str:
    for rule in question.next:
        if _holds(rule.when, answers):
            return rule.goto
    return question.goto


def _holds(condition: Condition, answers: Mapping[str, Answer]) -> bool:
    if condition.all is not None:
        return all(_holds(part, answers) for part in condition.all)
    if condition.any is not None:
        return any(_holds(part, answers) for part in condition.any)
    if condition.not_ is not None:
        return not _holds(condition.not_, answers)
    answer = answers.get(condition.question or "")
    chosen = [answer] if isinstance(answer, str) else answer if isinstance(answer, list) else []
    if condition.is_ is not None:
        return condition.is_ in chosen
    if condition.in_ is not None:
        return any(option in condition.in_ for option in chosen)
    if isinstance(answer, bool) or not isinstance(answer, int | float):
        return False
    return (condition.gte is None or answer >= condition.gte) and (condition.lte is None or answer <= condition.lte)


def _effects(question: Question, answer: Answer) -> Iterator[Effect]:
    if question.kind == "scale":
        if isinstance(answer, int | float) and not isinstance(answer, bool):
            for scale_range in question.ranges:
                if scale_range.min <= answer <= scale_range.max:
                    yield from scale_range.effects
        return
    chosen = [answer] if isinstance(answer, str) else answer if isinstance(answer, list) else []
    for option in question.options:
        if option.id in chosen:
            yield from option.effects


def _label(quiz: Quiz) -> str:
    return f"{quiz.id} v{quiz.version}"


def _between(low: int, high: int) -> str:
    return str(low) if low == high else f"{low} to {high}"


def _question_at(raw: Mapping[str, Any], path: str) -> str | None:
    """The id of the question a msgspec error path (``$.questions[2].options[0]``) points into."""
    match = re.search(r"\$\.questions\[(\d+)\]", path)
    if not match:
        return None
    index, questions = int(match.group(1)), raw.get("questions")
    if isinstance(questions, list) and index < len(questions) and isinstance(questions[index], Mapping):
        found = questions[index].get("id")
        if isinstance(found, str):
            return found
    return f"#{index + 1}"


def _missing(texts: Mapping[str, str]) -> str:
    return ", ".join(language for language in LANGUAGES if language not in texts)


class _Checker:
    """The checks msgspec cannot express; the first failure raises ``QuizError``."""

    def __init__(self, quiz: Quiz, policy: Policy, file: Path | str) -> None:
        self.quiz, self.policy, self.file = quiz, policy, file
        self.questions = {question.id: question for question in quiz.questions}
        self.scored: dict[str, str] = {}
        self.assigned: dict[str, str] = {}

    def fail(self, question: str | None, problem: str) -> QuizError:
        return QuizError(self.file, _label(self.quiz), question, problem)

    def check(self) -> None:
        quiz = self.quiz
        for name, texts in (("title", quiz.title), ("description", quiz.description)):
            if _missing(texts):
                raise self.fail(None, f"{name} has no text in {_missing(texts)}")
        seen: set[str] = set()
        for question in quiz.questions:
            if question.id == END:
                raise self.fail(question.id, f"{END!r} is reserved for the end of the quiz")
            if question.id in seen:
                raise self.fail(question.id, "this question id is used twice")
            seen.add(question.id)
        if quiz.start not in self.questions:
            raise self.fail(None, f"start {quiz.start!r} is not a question in this quiz")
        for question in quiz.questions:
            self.check_question(question)
        edges = self.edges()
        self.check_acyclic(edges)
        self.check_reachable(edges)
        before = self.predecessors(edges)
        for question in quiz.questions:
            for rule in question.next:
                self.check_condition(rule.when, question.id, before[question.id] | {question.id}, 1)
        for question in quiz.questions:
            for where, effect in self.effects_of(question):
                self.check_effect(question.id, where, effect)
        for trait, where in self.scored.items():
            if trait in self.assigned:
                problem = f"trait {trait!r} is scored ({where}) and also set or added ({self.assigned[trait]})"
                raise self.fail(None, problem)

    def check_question(self, question: Question) -> None:
        qid = question.id
        if _missing(question.text):
            raise self.fail(qid, f"question text missing in {_missing(question.text)}")
        if question.kind == "scale":
            self.check_scale(question)
            return
        scale_only = [
            name
            for name, value in (("step", question.step), ("low", question.low), ("high", question.high))
            if value not in (None, {})
        ] + (["ranges"] if question.ranges else [])
        if scale_only:
            raise self.fail(qid, f"only a scale question takes {', '.join(scale_only)}")
        if question.kind != "multiple" and (question.min is not None or question.max is not None):
            raise self.fail(qid, f"a {question.kind} question takes no min or max")
        if len(question.options) < 2:
            raise self.fail(qid, "a choice question needs at least two options")
        option_ids: set[str] = set()
        for option in question.options:
            if option.id in option_ids:
                raise self.fail(qid, f"option {option.id!r} is defined twice")
            option_ids.add(option.id)
            if _missing(option.label):
                raise self.fail(qid, f"option {option.id!r} has no label in {_missing(option.label)}")
            if question.kind == "image" and option.image is None:
                raise self.fail(qid, f"option {option.id!r} has no image (this is an image question)")
            if option.image is not None and _missing(option.image.alt):
                raise self.fail(qid, f"option {option.id!r} image has no alt text in {_missing(option.image.alt)}")
        if question.kind == "multiple":
            for name, value in (("min", question.min), ("max", question.max)):
                if value is not None and (not float(value).is_integer() or value < 0):
                    raise self.fail(qid, f"{name} {value} is not a whole number of choices")
            low, high = question.choice_bounds()
            if high < 1:
                raise self.fail(qid, f"max {high} allows no choice at all")
            if low > high:
                raise self.fail(qid, f"min {low} is more than max {high}")
            if high > len(question.options):
                raise self.fail(qid, f"max {high} is more than the {len(question.options)} options")

    def check_scale(self, question: Question) -> None:
        qid = question.id
        if question.options:
            raise self.fail(qid, "a scale question has no options")
        if question.min is None or question.max is None:
            raise self.fail(qid, "a scale question needs min and max")
        if question.min >= question.max:
            raise self.fail(qid, f"min {question.min} is not below max {question.max}")
        step = question.scale_step
        if step <= 0:
            raise self.fail(qid, f"step {step} is not positive")
        steps = (question.max - question.min) / step
        if abs(steps - round(steps)) > 1e-9:
            raise self.fail(qid, f"step {step} does not lead from min {question.min} to max {question.max}")
        for name, texts in (("low", question.low), ("high", question.high)):
            if _missing(texts):
                raise self.fail(qid, f"the {name} label is missing in {_missing(texts)}")
        previous: ScaleRange | None = None
        for scale_range in sorted(question.ranges, key=lambda item: (item.min, item.max)):
            bounds = f"range {scale_range.min}..{scale_range.max}"
            if scale_range.min > scale_range.max:
                raise self.fail(qid, f"{bounds} is empty")
            if scale_range.min < question.min or scale_range.max > question.max:
                raise self.fail(qid, f"{bounds} is outside the scale {question.min}..{question.max}")
            if previous is not None and scale_range.min <= previous.max:
                raise self.fail(qid, f"{bounds} overlaps range {previous.min}..{previous.max}")
            previous = scale_range

    def edges(self) -> dict[str, list[str]]:
        edges: dict[str, list[str]] = {}
        for question in self.quiz.questions:
            targets = [rule.goto for rule in question.next] + [question.goto]
            for target in targets:
                if target != END and target not in self.questions:
                    raise self.fail(question.id, f"goto {target!r} is not a question in this quiz (nor {END!r})")
            edges[question.id] = list(dict.fromkeys(target for target in targets if target != END))
        return edges

    def check_acyclic(self, edges: dict[str, list[str]]) -> None:
        done: set[str] = set()
        for root in self.questions:
            if root in done:
                continue
            trail: list[str] = [root]
            stack: list[Iterator[str]] = [iter(edges[root])]
            while stack:
                target = next(stack[-1], None)
                if target is None:
                    stack.pop()
                    done.add(trail.pop())
                elif target in trail:
                    loop = " -> ".join([*trail[trail.index(target) :], target])
                    raise self.fail(trail[-1], f"branching loops back: {loop}")
                elif target not in done:
                    trail.append(target)
                    stack.append(iter(edges[target]))

    def check_reachable(self, edges: dict[str, list[str]]) -> None:
        reached, waiting = {self.quiz.start}, [self.quiz.start]
        while waiting:
            for target in edges[waiting.pop()]:
                if target not in reached:
                    reached.add(target)
                    waiting.append(target)
        for question in self.quiz.questions:
            if question.id not in reached:
                raise self.fail(question.id, f"unreachable: no path from start {self.quiz.start!r} leads here")

    def predecessors(self, edges: dict[str, list[str]]) -> dict[str, set[str]]:
        """For each question, the questions answered before it on some path (the graph is acyclic)."""
        parents: dict[str, list[str]] = {qid: [] for qid in self.questions}
        for source, targets in edges.items():
            for target in targets:
                parents[target].append(source)
        before: dict[str, set[str]] = {}

        def visit(qid: str) -> set[str]:
            if qid not in before:
                before[qid] = set()
                for parent in parents[qid]:
                    before[qid] |= visit(parent) | {parent}
            return before[qid]

        for qid in self.questions:
            visit(qid)
        return before

    def check_condition(self, condition: Condition, owner: str, answered: set[str], depth: int) -> None:
        if depth > MAX_CONDITION_DEPTH:
            raise self.fail(owner, f"conditions nest deeper than {MAX_CONDITION_DEPTH} levels")
        groups = [name for name in ("all", "any", "not_") if getattr(condition, name) is not None]
        tests = [name for name in ("is_", "in_", "gte", "lte") if getattr(condition, name) is not None]
        if groups:
            if len(groups) > 1 or tests or condition.question is not None:
                raise self.fail(owner, "a condition is one of all, any, not, or a test on one question")
            parts = condition.all if condition.all is not None else condition.any
            if parts is None:
                parts = [condition.not_] if condition.not_ is not None else []
            if not parts:
                raise self.fail(owner, f"{groups[0]} needs at least one condition")
            for part in parts:
                self.check_condition(part, owner, answered, depth + 1)
            return
        target_id = condition.question
        if target_id is None:
            raise self.fail(owner, "a condition needs a question (or all, any, not)")
        if target_id not in self.questions:
            raise self.fail(owner, f"condition on {target_id!r}, which is not a question in this quiz")
        if target_id not in answered:
            raise self.fail(owner, f"condition on {target_id!r}, which is never answered before this point")
        target = self.questions[target_id]
        if target.kind == "scale":
            if condition.is_ is not None or condition.in_ is not None or not tests:
                raise self.fail(owner, f"a condition on scale question {target_id!r} uses gte and/or lte")
            return
        if len(tests) != 1 or tests[0] not in ("is_", "in_"):
            raise self.fail(owner, f"a condition on choice question {target_id!r} uses exactly one of is, in")
        named = [condition.is_] if condition.is_ is not None else list(condition.in_ or [])
        if not named:
            raise self.fail(owner, "in needs at least one option")
        options = {option.id for option in target.options}
        for option_id in named:
            if option_id not in options:
                raise self.fail(owner, f"condition names {option_id!r}, not an option of {target_id!r}")

    def effects_of(self, question: Question) -> Iterator[tuple[str, Effect]]:
        for option in question.options:
            for effect in option.effects:
                yield f"option {option.id!r}", effect
        for scale_range in question.ranges:
            for effect in scale_range.effects:
                yield f"range {scale_range.min}..{scale_range.max}", effect

    def check_effect(self, qid: str, where: str, effect: Effect) -> None:
        verbs = [verb for verb in ("set", "add", "score") if getattr(effect, verb) is not None]
        if len(verbs) != 1:
            raise self.fail(qid, f"{where}: an effect has exactly one of set, add, score")
        verb, name = verbs[0], effect.trait
        extras = {"set": ("to",), "add": ("values",), "score": ("weights",)}[verb]
        stray = [key for key in ("to", "values", "weights") if key not in extras and getattr(effect, key) is not None]
        if stray:
            raise self.fail(qid, f"{where}: {verb} takes {extras[0]}, not {', '.join(stray)}")
        if getattr(effect, extras[0]) is None:
            raise self.fail(qid, f"{where}: {verb} needs {extras[0]}")
        trait = self.policy.traits.get(name)
        if trait is None:
            raise self.fail(qid, f"{where}: trait {name!r} is not declared in the policy (traits:)")
        if verb == "set":
            problem = trait.problem_with(effect.to)
            if problem:
                raise self.fail(qid, f"{where}: set {name}: {problem}")
            self.assigned.setdefault(name, f"question {qid} {where}")
        elif verb == "add":
            if trait.type != "list":
                raise self.fail(qid, f"{where}: add needs a list trait; {name!r} is {trait.type}")
            problem = trait.problem_with(effect.values) if effect.values else "no values to add"
            if problem:
                raise self.fail(qid, f"{where}: add {name}: {problem}")
            self.assigned.setdefault(name, f"question {qid} {where}")
        else:
            if trait.type != "enum":
                raise self.fail(qid, f"{where}: score needs an enum trait; {name!r} is {trait.type}")
            if not effect.weights:
                raise self.fail(qid, f"{where}: score {name} has no weights")
            for value, weight in effect.weights.items():
                if value not in trait.values:
                    raise self.fail(qid, f"{where}: score {name}: {value!r} is not one of {', '.join(trait.values)}")
                if not -MAX_WEIGHT <= weight <= MAX_WEIGHT:
                    raise self.fail(qid, f"{where}: score {name}: weight {weight} is outside -10..10")
            self.scored.setdefault(name, f"question {qid} {where}")
