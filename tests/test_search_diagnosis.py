"""lib.search.diagnose on synthetic learning curves: each of the six patterns (and a healthy run, and a
diverged one) drawn from a formula, each pattern's near miss, and bad inputs."""
import math

import numpy as np
import pytest

from lib.search import ADVICE, MIN_RECORDS, PATTERNS, Diagnosis, diagnose
from lib.train import History

START = math.log(10)                   # the loss of a right initialization on 10 classes
STEPS = np.arange(0, 401, 10)          # 41 records, every 10 steps of a 400-step run
RATE = 0.5
DECAYING = RATE * np.linspace(1.0, 0.1, len(STEPS))   # a smooth decay: no step between two records


def history(train, val, lr=None, diverged=False) -> History:
    """A History with one record per entry of STEPS; the training loss starts at START."""
    lr = np.full(len(STEPS), RATE) if lr is None else lr
    return History(steps=STEPS.tolist(), train_loss=list(map(float, train)), val_loss=list(map(float, val)),
                   train_acc=[0.0] * len(STEPS), val_acc=[0.0] * len(STEPS), lr=list(map(float, lr)),
                   diverged=diverged)


def falling(floor: float, tau: float, t=STEPS) -> np.ndarray:
    """From START down to ``floor`` with time constant ``tau`` (steps)."""
    return floor + (START - floor) * np.exp(-t / tau)


def pattern(train, val, **options) -> str:
    return diagnose(history(train, val, **options)).pattern


# --- each pattern, and its near miss -----------------------------------------------------------------

def test_healthy_run_has_no_pattern():
    train = falling(0.3, 40)               # fitted far below the start value, flat at the end
    diagnosis = diagnose(history(train, train + 0.2))
    assert diagnosis == Diagnosis("healthy", ADVICE["healthy"], diagnosis.evidence)
    assert "2.303 to 0.300" in diagnosis.evidence


def test_healthy_evidence_says_how_near_train_longer_it_came():
    train = falling(0.3, 40)               # exp(-300 / 40): the last quarter brings 0% of the drop
    diagnosis = diagnose(history(train, train + 0.2))
    assert "brought 0% of the training loss's drop and 0% of the validation loss's" in diagnosis.evidence
    assert "(train longer needs 4% of each)" in diagnosis.evidence


def test_bad_initialization_flat_then_drop():
    after_flat = np.clip(STEPS - 100, 0, None)
    train = START - 1.5 * (1 - np.exp(-after_flat / 50))       # flat for 100 of 400 steps, then falls
    diagnosis = diagnose(history(train, train + 0.05))
    assert diagnosis.pattern == "bad_initialization"
    assert "for 100 of 400 steps" in diagnosis.evidence


def test_short_flat_start_is_not_bad_initialization():
    after_flat = np.clip(STEPS - 20, 0, None)                   # flat for 5% of the run: every run starts so
    train = START - 2.0 * (1 - np.exp(-after_flat / 40))
    assert pattern(train, train + 0.2) == "healthy"


def test_slow_start_of_a_small_rate_is_not_bad_initialization():
    train = falling(0.0, 4000)             # within 2% of the start for 10% of the run, but at one slow pace
    assert pattern(train, train + 0.01) == "train_longer"


def test_decay_too_early():
    fast = START - 1.0 * (1 - np.exp(-STEPS / 40))              # falling fast at step 40 ...
    train = np.where(STEPS <= 40, fast, fast[4] - 0.0005 * (STEPS - 40))   # ... then crawling at 1/100 the rate
    lr = np.where(STEPS <= 40, RATE, RATE / 100)
    diagnosis = diagnose(history(train, train + 0.02, lr=lr))
    assert diagnosis.pattern == "decay_too_early"
    assert "from 0.5 to 0.005 after step 40 of 400" in diagnosis.evidence


def test_decay_on_a_plateau_is_not_too_early():
    plateau = falling(1.0, 40)
    after_decay = np.clip(STEPS - 200, 0, None)
    train = plateau - 0.3 * (1 - np.exp(-after_decay / 10))    # the cut at step 200 drops the loss at once
    lr = np.where(STEPS <= 200, RATE, RATE / 10)
    assert pattern(train, train + 0.3, lr=lr) == "healthy"


def test_plateau_high_and_flat_at_a_constant_rate():
    train = falling(1.4, 30)
    diagnosis = diagnose(history(train, train + 0.02))
    assert diagnosis.pattern == "plateau"
    assert "stayed 0.5 all along" in diagnosis.evidence


def test_plateau_low_is_not_a_plateau():
    train = falling(0.3, 30)               # flat, but below half the start value
    assert pattern(train, train + 0.3) == "healthy"


def test_plateau_without_a_drop_is_not_a_plateau():
    train = START - 0.1 * (1 - np.exp(-STEPS / 30))           # 4% below the start value, then flat
    assert pattern(train, train + 0.02) == "underfitting"


def test_underfitting_high_flat_no_gap_after_the_rate_was_decayed():
    train = falling(1.6, 30)
    diagnosis = diagnose(history(train, train + 0.02, lr=DECAYING))
    assert diagnosis.pattern == "underfitting"
    assert "stayed at 1.600" in diagnosis.evidence


def test_high_loss_with_a_gap_is_not_underfitting():
    train = falling(1.6, 30)
    assert pattern(train, train + 0.3, lr=DECAYING) == "healthy"


def test_overfitting_validation_turns_up_while_training_falls():
    train = falling(0.1, 60)
    val = 1.0 + 1.3 * np.exp(-STEPS / 30) + 0.002 * STEPS      # lowest near step 90, then rising
    diagnosis = diagnose(history(train, val))
    assert diagnosis.pattern == "overfitting"
    assert "at step 90" in diagnosis.evidence


def test_small_rise_of_the_validation_loss_is_not_overfitting():
    train = falling(0.1, 60)
    val = 1.2 + 1.1 * np.exp(-STEPS / 30) + 0.00005 * STEPS    # +2% by the end: the size of its noise
    assert pattern(train, val) == "healthy"


def test_train_longer_both_still_falling():
    train = falling(0.0, 600)
    diagnosis = diagnose(history(train, train + 0.05))
    assert diagnosis.pattern == "train_longer"


def test_training_loss_falling_alone_is_not_train_longer():
    train = falling(0.0, 600)
    val = np.full(len(STEPS), 1.5)          # the validation loss no longer moves
    assert pattern(np.maximum(train, 0.6), val) != "train_longer"


def test_diverged_run():
    train = falling(0.3, 40)
    assert pattern(train, train + 0.2, diverged=True) == "diverged"
    train[-1] = np.nan
    assert pattern(train, train + 0.2) == "diverged"


def test_every_pattern_has_advice():
    assert set(PATTERNS) == set(ADVICE) == {"diverged", "bad_initialization", "decay_too_early", "plateau",
                                            "underfitting", "overfitting", "train_longer", "healthy"}
    assert all(advice for advice in ADVICE.values())


# --- bad inputs -----------------------------------------------------------------------------------

def test_rejects_what_is_not_a_history():
    with pytest.raises(TypeError, match="^history: expected a lib.train.History"):
        diagnose({"train_loss": [2.3] * 10})


def test_rejects_too_few_records():
    short = History(steps=list(range(MIN_RECORDS - 1)), train_loss=[2.3] * (MIN_RECORDS - 1),
                    val_loss=[2.3] * (MIN_RECORDS - 1), lr=[0.1] * (MIN_RECORDS - 1))
    with pytest.raises(ValueError, match=f"^history: expected at least {MIN_RECORDS} records"):
        diagnose(short)


def test_rejects_lists_of_different_lengths():
    train = falling(0.3, 40)
    broken = history(train, train + 0.2)
    broken.lr.pop()
    with pytest.raises(ValueError, match="^history: expected steps, train_loss, val_loss and lr of one length"):
        diagnose(broken)
