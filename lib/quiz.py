"""Quizzes: questions kept as data (``lib/quizzes/<name>.json``), shown with jupyterquiz.

The JSON format is jupyterquiz's own: a list of questions, each
``{"question": str, "type": "multiple_choice" | "many_choice", "answers": [...]}``
with answers ``{"answer": str, "correct": bool, "feedback": str}``. This module insists
that *every* answer carries feedback, so a reader learns something from each click.
The quiz's HTML element id is derived from the quiz's name, not drawn at random, so a
notebook's stored output is the same on every run and the book's pages stay stable.
"""
from __future__ import annotations

import hashlib
import json
import random
import string
from importlib import resources

QUESTION_TYPES = ("multiple_choice", "many_choice")


def load_questions(name: str) -> list:
    """Read and validate the questions of quiz ``name`` from ``lib/quizzes/<name>.json``."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"name: expected a quiz name such as 'normalization', got {name!r}")
    path = resources.files("lib") / "quizzes" / f"{name}.json"
    if not path.is_file():
        available = sorted(p.name[:-5] for p in (resources.files("lib") / "quizzes").iterdir() if p.name.endswith(".json"))
        raise ValueError(f"name: no quiz {name!r}; available: {available}")
    questions = json.loads(path.read_text(encoding="utf-8"))
    validate_questions(questions)
    return questions


def validate_questions(questions) -> None:
    """Raise ``ValueError`` naming the first question that breaks the rules."""
    if not isinstance(questions, list) or not questions:
        raise ValueError("questions: expected a non-empty list of question dicts")
    for number, question in enumerate(questions, start=1):
        where = f"questions[{number - 1}]"
        if not isinstance(question, dict) or not str(question.get("question", "")).strip():
            raise ValueError(f"{where}: expected a dict with a non-empty 'question' text")
        if question.get("type") not in QUESTION_TYPES:
            raise ValueError(f"{where}: 'type' must be one of {QUESTION_TYPES}, got {question.get('type')!r}")
        answers = question.get("answers")
        if not isinstance(answers, list) or len(answers) < 2:
            raise ValueError(f"{where}: expected at least 2 answers")
        for index, answer in enumerate(answers):
            if not str(answer.get("answer", "")).strip():
                raise ValueError(f"{where}.answers[{index}]: empty answer text")
            if not isinstance(answer.get("correct"), bool):
                raise ValueError(f"{where}.answers[{index}]: 'correct' must be true or false")
            if not str(answer.get("feedback", "")).strip():
                raise ValueError(f"{where}.answers[{index}]: every answer needs 'feedback'")
        n_correct = sum(answer["correct"] for answer in answers)
        if question["type"] == "multiple_choice" and n_correct != 1:
            raise ValueError(f"{where}: a multiple_choice question needs exactly 1 correct answer, has {n_correct}")
        if question["type"] == "many_choice" and n_correct < 1:
            raise ValueError(f"{where}: a many_choice question needs at least 1 correct answer")


def _quiz_seed(name: str) -> int:
    return int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)


def show_quiz(name: str, shuffle_answers: bool = True) -> None:
    """Display quiz ``name`` in the notebook (and, from the stored output, in the HTML book).

    jupyterquiz draws the container's id from Python's ``random``; seeding it from the quiz
    name (and restoring the global state afterwards) makes the id stable across runs.
    Answer order is shuffled in the reader's browser, not here.
    """
    from jupyterquiz import display_quiz

    questions = load_questions(name)
    state = random.getstate()
    random.seed(_quiz_seed(name))
    try:
        display_quiz(questions, shuffle_answers=shuffle_answers)
    finally:
        random.setstate(state)


def quiz_element_id(name: str) -> str:
    """The HTML id that :func:`show_quiz` gives quiz ``name`` (for browser tests)."""
    rng = random.Random(_quiz_seed(name))
    return "".join(rng.choice(string.ascii_letters) for _ in range(12))
