"""The declarations in experiments/: paper numbers typed from PAPER.md, unique
run names, and run configs that accept their ARG and overrides."""

import os

from helpers import REPO
from helpers import load_config
from sam_jax.reproduce import __main__ as cli


def test_paper_numbers_spot_checks():
    from sam_jax.reproduce import load_table
    cases = [  # (table, row, column, number in PAPER.md)
        ("table1_cifar", "wrn200_basic", "c10_sam", 2.7),
        ("table1_cifar", "wrn1800_autoaugment", "c100_sgd", 16.1),
        ("table1_cifar", "pyramid_shakedrop_autoaugment", "c100_sgd", 10.6),
        ("table2_imagenet", "resnet101_400", "sgd_top5", 6.41),
        ("table2_imagenet", "resnet152_200", "sam_top1", 18.5),
        ("table3_finetuning", "imagenet2012", "l2_sgd", 11.8),
        ("table3_finetuning", "fgvc_aircraft", "b7_sam", 6.80),
        ("table4_label_noise", "bootstrap_mixup", "noise60", 87.6),
        ("table4_label_noise", "sam", "noise80", 77.9),
        ("table5_svhn_fmnist", "shake_shake_autoaugment", "svhn_sgd", 1.03),
        ("figure3_hessian", "epoch300", "sgd_ratio", 11.4),
        ("figure3_hessian", "epoch1", "sam_lmax", 18.6),
    ]
    for table, row, column, number in cases:
        assert load_table(table).cell(row, column).paper == number, (table, row, column)
    table4 = load_table("table4_label_noise")
    assert table4.cell("mixup", "noise20").runs == ()  # paper only
    assert table4.cell("sam", "noise20").metric == "accuracy"


def test_run_names_are_unique_across_tables():
    from sam_jax.reproduce import TABLES, load_table
    names = {}
    for table in TABLES:
        for run in load_table(table).runs():
            assert names.setdefault(run.name, run) == run, run.name


def test_run_configs_accept_their_arg_and_overrides():
    """Every run's ARG and override keys exist in its config file (files that
    are not written yet are skipped)."""
    from sam_jax.reproduce import TABLES, load_table
    runs = {run.name: run for table in TABLES for run in load_table(table).runs()}
    runs.update({run.name: run for run in
                 cli.reproduce.load_sweep("experiments/sweeps/rho_search.py").runs()})
    paths = set()
    for run in runs.values():
        path = run.config.partition(":")[0]
        if not os.path.exists(os.path.join(REPO, path)):
            continue
        paths.add(path)
        config = load_config(run.config)
        for key in [k for k, _ in run.overrides] + list(run.seed_keys):
            *parents, leaf = key.split(".")
            node = config
            for parent in parents:
                node = node[parent]
            assert leaf in node, (run.config, key)
    assert "configs/quickstart.py" in paths and "configs/cifar_wrn.py" in paths
