"""The methods through the trainer: a few steps of a tiny digits run each,
with the cost ledger of the passes made. One method per way of using the
step's extras: no second pass (sgd, and optimistic with its own base), SAM,
a lax.cond (looksam), per-example losses and a subset (esam), a fused pair
(sampa), an inner loop (entropy_sgd), its own base and evaluation weights
(msam), two passes on a subset (ksam), a loss term with trainer state (saf,
mesa; test_saf.py runs them across epochs and resumes them); test_methods.py
covers every method's update, and the CLI runs of each are in the README."""

import json

import pytest

from helpers import load_config
from helpers import slow_except
from sam_jax import methods
from sam_jax import train


TRAINER_CASES = ("sgd", "optimistic", "sam", "looksam", "esam", "sampa", "entropy_sgd",
                 "msam", "ksam", "saf", "mesa")


def test_the_cases_are_methods():
    assert set(TRAINER_CASES) <= set(methods.METHODS)


# SGD, SAM and Entropy-SGD's inner loop in the suite; the others' steps are
# tested in test_methods.py, their trips through the loop are slow repeats.
@pytest.mark.parametrize("name", slow_except(TRAINER_CASES, ("sgd", "sam", "entropy_sgd")))
def test_every_method_trains_through_the_loop(name, tmp_path):
    config = load_config("configs/quickstart.py")
    config.method = name
    config.model.name = "wrn10_1"
    config.update(batch_size=16, num_steps=3, log_every_steps=3, eval_batch_size=512)
    if name == "esam":
        config.sam.examples_per_perturbation = 2  # gamma's subset of a group of 2
    if name == "msam":
        config.optimizer.nesterov = False  # its rule is SGD's heavy-ball momentum
    results = train.train_and_evaluate(config, str(tmp_path))
    assert results["method"] == name and results["test_error"] < 1.0
    assert results["train_seconds"] > 0
    # Forward + backward passes of 3 steps (LookSAM: a full step, then two of
    # one pass; ESAM: the second pass on half of each group).
    # K-SAM: both passes on one of each group's 2 examples.
    made = {"sgd": 3, "optimistic": 3, "looksam": 2 + 1 + 1, "esam": 3 * 1.5,
            "msam": 3, "ksam": 3 * 2 * 1 / 2, "saf": 3, "mesa": 3,
            "entropy_sgd": 3 * config.entropy_sgd.inner_steps}.get(name, 3 * 2)
    assert results["gradient_evaluations"] == pytest.approx(made)
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    train_row = next(r for r in rows if r["split"] == "train")
    assert train_row["total_gradient_evaluations"] == pytest.approx(made)


def test_late_phase_sam_trains_through_the_loop_with_a_step_per_phase(tmp_path):
    """rho_schedule.start_fraction 0.5 of 4 steps: the loop runs the step
    without the second pass at steps 0 and 1 and the SAM step at 2 and 3
    (methods.second_pass_schedule), so the ledger holds 1 + 1 + 2 + 2 passes
    and the logged radius is 0, then rho."""
    config = load_config("configs/quickstart.py")
    config.model.name = "wrn10_1"
    config.rho_schedule.start_fraction = 0.5
    config.update(batch_size=16, num_steps=4, log_every_steps=2, eval_batch_size=512)
    results = train.train_and_evaluate(config, str(tmp_path))
    assert results["gradient_evaluations"] == pytest.approx(6)
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    train_rows = [r for r in rows if r["split"] == "train"]
    assert [r["step"] for r in train_rows] == [2, 4]
    assert [r["total_gradient_evaluations"] for r in train_rows] == pytest.approx([2, 6])
    assert train_rows[0]["rho"] == 0.0
    assert train_rows[1]["rho"] == pytest.approx(config.sam.rho)
