"""Plots, quizzes, the notebook helper and the argument checks."""
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from lib import quiz  # noqa: E402
from lib.checks import check_array, check_choice, check_int, check_positive, check_probability  # noqa: E402
from lib.notebook import show_source  # noqa: E402
from lib.plots import (  # noqa: E402
    percentiles_over_time, plot_layer_histograms, plot_learning_curves, plot_percentile_bands,
)
from lib.train import History  # noqa: E402


def history():
    return History(steps=[0, 10], train_loss=[2.0, 1.0], train_acc=[0.1, 0.5], val_loss=[2.1, 1.2], val_acc=[0.1, 0.4])


def test_learning_curve_plot_is_titled_and_labelled():
    ax = plot_learning_curves({"a": history(), "b": history()})
    assert ax.get_title() and ax.get_xlabel() == "training step" and ax.get_ylabel() == "validation accuracy"
    assert len(ax.get_lines()) == 2
    plt.close("all")


def test_percentile_bands_and_histograms():
    values = [np.arange(100.0), np.arange(100.0) + 5]
    percentiles = percentiles_over_time(values)
    np.testing.assert_allclose(percentiles[:, 1], [49.5, 54.5])
    ax = plot_percentile_bands([0, 1], percentiles, title="t", ylabel="y")
    assert ax.get_title() == "t" and len(ax.get_lines()) == 3
    fig = plot_layer_histograms({"layer 1": np.ones(10), "layer 2": np.zeros(10)})
    assert fig._suptitle.get_text() and all(ax.get_xlabel() for ax in fig.axes)
    plt.close("all")


@pytest.mark.parametrize("call,error,match", [
    (lambda: plot_learning_curves({"a": history()}, metric="acc"), ValueError, r"metric: expected one of"),
    (lambda: plot_learning_curves({}), ValueError, r"histories: expected at least one run"),
    (lambda: plot_percentile_bands([0], np.ones((2, 3))), ValueError, r"steps, percentiles: expected the same length"),
    (lambda: plot_percentile_bands([0, 1], np.ones((2, 2))), ValueError, r"labels: expected 2 labels"),
    (lambda: percentiles_over_time([]), ValueError, r"values: expected at least one"),
    (lambda: plot_layer_histograms({}), ValueError, r"values: expected at least one layer"),
])
def test_plots_reject_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()
    plt.close("all")


def test_every_shipped_quiz_is_valid_and_answers_all_have_feedback():
    questions = quiz.load_questions("normalization")
    assert len(questions) >= 8
    assert all(answer["feedback"].strip() for q in questions for answer in q["answers"])


def test_quiz_output_is_stable_and_leaves_global_random_state_alone(capsys):
    import random
    from unittest import mock

    random.seed(42)
    expected_next = random.random()
    random.seed(42)
    shown = []
    with mock.patch("jupyterquiz.dynamic.display.display", side_effect=shown.append):
        quiz.show_quiz("normalization")
        quiz.show_quiz("normalization")
    assert random.random() == expected_next
    html_first, html_second = shown[0].data, shown[2].data
    assert html_first == html_second and f'id="{quiz.quiz_element_id("normalization")}"' in html_first


@pytest.mark.parametrize("questions,match", [
    ([], r"questions: expected a non-empty list"),
    ([{"question": "q", "type": "essay", "answers": []}], r"'type' must be one of"),
    ([{"question": "q", "type": "multiple_choice", "answers": [{"answer": "a", "correct": True, "feedback": "f"}]}],
     r"at least 2 answers"),
    ([{"question": "q", "type": "multiple_choice", "answers": [
        {"answer": "a", "correct": True, "feedback": "f"}, {"answer": "b", "correct": False}]}],
     r"answers\[1\]: every answer needs 'feedback'"),
    ([{"question": "q", "type": "multiple_choice", "answers": [
        {"answer": "a", "correct": True, "feedback": "f"}, {"answer": "b", "correct": True, "feedback": "f"}]}],
     r"exactly 1 correct answer"),
    ([{"question": "", "type": "multiple_choice", "answers": []}], r"non-empty 'question'"),
])
def test_quiz_validation_names_the_problem(questions, match):
    with pytest.raises(ValueError, match=match):
        quiz.validate_questions(questions)


def test_unknown_quiz_lists_the_available_ones():
    with pytest.raises(ValueError, match=r"no quiz 'nope'; available: \[.*'normalization'"):
        quiz.load_questions("nope")


def test_show_source_shows_lib_code():
    code = show_source(check_int)
    assert "def check_int" in code.data
    with pytest.raises(TypeError, match="objects: expected functions or classes"):
        show_source(42)


@pytest.mark.parametrize("call,error,match", [
    (lambda: check_array("w", np.ones(3), ndim=2), ValueError, r"w: expected 2 dimensions, got shape \(3,\)"),
    (lambda: check_array("w", "text"), TypeError, r"w: expected a NumPy array or torch tensor, got str"),
    (lambda: check_array("w", np.array([np.inf])), ValueError, r"w: contains NaN or infinity"),
    (lambda: check_positive("eps", 0), ValueError, r"eps: expected a finite number > 0, got 0"),
    (lambda: check_positive("eps", True), TypeError, r"eps: expected a real number, got bool"),
    (lambda: check_probability("p", 1.2), ValueError, r"p: expected a probability in \[0, 1\], got 1.2"),
    (lambda: check_probability("p", float("nan")), ValueError, r"p: expected a probability"),
    (lambda: check_int("n", 2.0), TypeError, r"n: expected an integer, got float"),
    (lambda: check_choice("mode", "x", ("a", "b")), ValueError, r"mode: expected one of 'a', 'b', got 'x'"),
])
def test_checks_name_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_quiz_json_is_plain_data():
    from importlib import resources
    for path in (resources.files("lib") / "quizzes").iterdir():
        if path.name.endswith(".json"):
            quiz.validate_questions(json.loads(path.read_text(encoding="utf-8")))


def test_best_seconds_is_the_fastest_of_the_repeats():
    from lib.notebook import best_seconds

    calls = []
    seconds = best_seconds(lambda: calls.append(1), repeats=3)
    assert calls == [1, 1, 1] and 0 <= seconds < 0.1
    with pytest.raises(TypeError, match=r"run: expected a function"):
        best_seconds(3)
    with pytest.raises(ValueError, match=r"repeats: expected an integer >= 1"):
        best_seconds(lambda: None, repeats=0)
