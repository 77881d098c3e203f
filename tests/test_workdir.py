"""What counts as a different config when a workdir is reused."""

from sam_jax import workdir
from sam_jax.config_schema import base_config


def as_dict(**changes):
    config = base_config()
    config.update(changes)
    return workdir.config_as_dict(config)


def test_a_key_added_to_the_schema_with_its_default_is_no_difference():
    old = as_dict()
    del old["num_steps"]
    new = as_dict()
    assert workdir._differences(old, new, as_dict()) == []
    new["num_steps"] = 100
    assert workdir._differences(old, new, as_dict()) == ["num_steps '<absent>' -> 100"]


def test_observation_keys_do_not_count_and_real_changes_do():
    old = as_dict(log_every_steps=10, eval_batch_size=8)
    new = as_dict(log_every_steps=50, eval_batch_size=16)
    assert workdir._differences(old, new, as_dict()) == []
    new["sam"]["rho"] = 0.2
    assert workdir._differences(old, new, as_dict()) == ["sam.rho 0.05 -> 0.2"]


# ------------------------------------------------------ crash-left states

import json
import os

import pytest

from sam_jax.errors import BadInputError


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def test_a_torn_last_metrics_line_is_dropped_with_a_warning(tmp_path, capsys):
    rows = [{"step": 5, "split": "train", "loss": 1.0},
            {"step": 10, "split": "train", "loss": 0.5}]
    write(tmp_path / "metrics.jsonl",
          "".join(json.dumps(r) + "\n" for r in rows) + '{"step": 15, "spl')
    assert workdir.read_metrics(str(tmp_path)) == rows
    assert "line 3 is cut short" in capsys.readouterr().err
    workdir.trim_metrics(str(tmp_path), 10)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == rows  # rewritten whole


def test_trim_drops_the_final_evaluation_that_will_be_made_again(tmp_path):
    rows = [{"step": 20, "split": "train"}, {"step": 20, "split": "eval"},
            {"step": 20, "split": "swa_eval"}, {"step": 10, "split": "eval"}]
    write(tmp_path / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    workdir.trim_metrics(str(tmp_path), 20, final_evaluation=True)
    kept = workdir.read_metrics(str(tmp_path))
    assert kept == [rows[0], rows[3]]


def test_damaged_results_read_as_unfinished(tmp_path):
    assert workdir.read_results(str(tmp_path)) is None
    write(tmp_path / "results.json", '{"test_error": 0.')
    assert workdir.read_results(str(tmp_path)) is None
    write(tmp_path / "results.json", "[1, 2]")
    assert workdir.read_results(str(tmp_path)) is None
    workdir.write_json_atomic(str(tmp_path / "results.json"), {"test_error": 0.1})
    assert workdir.read_results(str(tmp_path)) == {"test_error": 0.1}
    assert sorted(os.listdir(tmp_path)) == ["results.json"]  # no temporary left


def sam_jax_run(directory, **changes):
    config = base_config()
    config.update(changes)
    os.makedirs(directory / "checkpoints" / "10")
    workdir.write_config(config, str(directory))
    write(directory / "metrics.jsonl", "{}\n")
    write(directory / "results.json", "{}")
    write(directory / "notes.txt", "mine")
    os.makedirs(directory / "my_plots")
    return config


def test_overwrite_removes_our_files_only(tmp_path):
    sam_jax_run(tmp_path)
    config = base_config()
    config.sam.rho = 0.2
    with pytest.raises(BadInputError, match="different config"):
        workdir.check_workdir(config, str(tmp_path), overwrite=False)
    workdir.check_workdir(config, str(tmp_path), overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["my_plots", "notes.txt"]


def test_a_foreign_config_json_is_refused_even_with_overwrite(tmp_path):
    write(tmp_path / "config.json", json.dumps({"lr": 0.1}))
    write(tmp_path / "notes.txt", "mine")
    for overwrite in (False, True):
        with pytest.raises(BadInputError, match="not a sam_jax config"):
            workdir.check_workdir(base_config(), str(tmp_path), overwrite)
    with pytest.raises(BadInputError, match="not a sam_jax config"):
        with workdir.exclusive(str(tmp_path)):
            pass
    assert sorted(os.listdir(tmp_path)) == ["config.json", "notes.txt"]


def test_another_config_without_a_checkpoint_is_taken_over(tmp_path):
    # A run that failed before its first checkpoint: nothing to resume.
    config = base_config()
    workdir.write_config(config, str(tmp_path))
    config.sam.rho = 0.3
    workdir.check_workdir(config, str(tmp_path), overwrite=False)
    assert not (tmp_path / "config.json").exists()


def test_a_damaged_config_json_beside_a_run_is_not_a_refusal(tmp_path, capsys):
    sam_jax_run(tmp_path)
    write(tmp_path / "config.json", "")
    workdir.check_workdir(base_config(), str(tmp_path), overwrite=False)
    assert "empty or damaged" in capsys.readouterr().err


def test_the_checkpoints_keep_a_copy_of_the_config(tmp_path):
    sam_jax_run(tmp_path)
    os.remove(tmp_path / "config.json")
    config = base_config()
    config.model.name = "wrn16_8"
    assert workdir.checkpoints_config_differences(config, str(tmp_path)) == [
        "model.name 'wrn28_10' -> 'wrn16_8'"]


def test_one_run_per_workdir_and_the_lock_names_its_holder(tmp_path):
    run = tmp_path / "run"
    with workdir.exclusive(str(run)):
        # flock locks belong to an open file: a second open is refused even
        # in this process, as another process would be.
        with pytest.raises(BadInputError, match=f"pid {os.getpid()}"):
            with workdir.exclusive(str(run)):
                pass
    with workdir.exclusive(str(run)):  # released on exit (and on death)
        pass
    # The directory the lock made, with nothing else in it, is removed.
    assert not run.exists()


def test_a_workdir_that_cannot_be_used(tmp_path):
    write(tmp_path / "file", "x")
    with pytest.raises(BadInputError, match="is a file, not a directory"):
        workdir.check_writable(str(tmp_path / "file"))
    with pytest.raises(BadInputError, match="is a file"):
        workdir.check_writable(str(tmp_path / "file" / "run"))
    workdir.check_writable(str(tmp_path / "a" / "b"))  # made when the run starts
    assert not (tmp_path / "a").exists()


# ------------------------------------------------------ issue 33

def test_an_empty_workdir_is_one_line_naming_it(tmp_path):
    # Was FileNotFoundError: '' from os.makedirs, after JAX had started.
    for empty in ("", "  "):
        with pytest.raises(BadInputError, match="is empty: give the directory"):
            workdir.check_usable(empty)


def test_config_json_lost_the_checkpoints_copy_refuses_another_model_first(tmp_path):
    # Was refused by the restore, after the data load and the model's start.
    sam_jax_run(tmp_path)
    other = base_config()
    other.model.name = "wrn16_8"
    for damage in ("deleted", "empty"):
        if damage == "deleted":
            os.remove(tmp_path / "config.json")
        else:
            write(tmp_path / "config.json", "")
        before = sorted(os.listdir(tmp_path))
        for read_only in (True, False):
            with pytest.raises(BadInputError,
                               match="model.name 'wrn28_10' -> 'wrn16_8'"):
                workdir.check_workdir(other, str(tmp_path), overwrite=False,
                                      read_only=read_only)
        assert sorted(os.listdir(tmp_path)) == before
    # Its own config still resumes; --overwrite still removes our files only.
    workdir.check_workdir(base_config(), str(tmp_path), overwrite=False)
    workdir.check_workdir(other, str(tmp_path), overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["my_plots", "notes.txt"]
