"""The documentation's generated pages (docs/_ext/sam_jax_docs.py), the README's
promises, and CI's docs build. The Sphinx build itself runs in .ci/run."""

import os
import re

from helpers import REPO
from helpers import load_module

docs = load_module("docs/_ext/sam_jax_docs.py")


def read(path):
    with open(os.path.join(REPO, path)) as f:
        return f.read()


# ------------------------------------------------------------- config keys

SCHEMA = '''def base_config():
    config = ml_collections.ConfigDict()
    config.seed = 0  # the seed

    # Data.
    config.dataset = "a#b"  # which one
    # Two lines
    # of meaning.
    config.image_size = None  # and a note

    config.group = ml_collections.ConfigDict()  # the group
    config.group.x = 1
    # a block about y
    config.group.y = 2
'''


def test_schema_comments_attach_blocks_headings_and_line_comments():
    meanings, sections = docs.schema_comments(SCHEMA)
    assert meanings == {
        "seed": "the seed",
        "dataset": "which one",  # "Data." is a heading; '#' in a string is no comment
        "image_size": "Two lines of meaning. and a note",
        "group": "the group",
        "group.x": "",
        "group.y": "a block about y",
    }
    assert sections == {"seed": "", "dataset": "Data", "image_size": "Data",
                        "group": "Data", "group.x": "Data", "group.y": "Data"}


def flat_keys(tree, prefix=""):
    """Every key of a nested dict (the config as plain data), by hand."""
    keys = []
    for key, value in tree.items():
        keys.append(prefix + key)
        if isinstance(value, dict):
            keys += flat_keys(value, prefix + key + ".")
    return keys


def test_config_keys_page_has_every_key_once_with_its_default_and_a_meaning():
    from sam_jax import config_schema
    config = config_schema.base_config()
    plain = config.to_dict()
    rows = re.findall(r"^\| `([\w.]+)` \| `([^`]*)` \| (.*) \|$",
                      docs.config_keys_markdown(), re.MULTILINE)
    names = [name for name, _, _ in rows]
    assert sorted(names) == sorted(flat_keys(plain))
    by_name = {name: (default, meaning) for name, default, meaning in rows}
    # Defaults spot-checked against the schema's literal values.
    assert by_name["sam.rho"][0] == "0.05"
    assert by_name["optimizer.name"][0] == "'sgd'"
    assert by_name["data_dir"][0] == "None (str)"
    assert by_name["sam"][0] == "(group)"
    # Every key has a meaning: its own comment, or its group's ("see ...").
    assert all(meaning.strip() for _, meaning in by_name.values())
    assert by_name["sam.ball"][1].startswith('or "linf", "random"')


# ------------------------------------------------------------- methods

def test_methods_table_costs_match_the_measured_benchmark_table():
    # experiments/benchmarks/methods.md was written by an earlier benchmark run;
    # its per-method table lists the same declared costs.
    measured = {}
    for line in read("experiments/benchmarks/methods.md").splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        # | method | what | paper | evaluations | passes | step s | ratio | rounds |
        # ("what" may hold unescaped ||g||: count from the end)
        if cells[0] in ("sgd", "sam", "looksam", "esam", "rwp", "entropy_sgd",
                        "optimistic") and len(cells) >= 8:
            measured[cells[0]] = (cells[-5], cells[-4])
    assert len(measured) == 7
    generated = {}
    for line in docs.methods_markdown().splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip("|"))]
        if (len(cells) == 9 and cells[0].startswith("`")
                and cells[0] != "`--config.method=`"):
            generated[cells[0].strip("`")] = (cells[4], cells[5])
    from sam_jax import methods
    assert set(generated) == set(methods.METHODS)
    for name, cost in measured.items():
        assert generated[name] == cost, name


def test_every_method_transform_is_public_or_named():
    import sam_jax
    from sam_jax import methods
    for name in methods.METHODS:
        transform = docs.method_transform(name)
        assert (transform.removeprefix("sam_jax.") in sam_jax.__all__
                or transform.startswith("optax."))


# ------------------------------------------------------------- other pages

def test_exit_codes_page_lists_every_code():
    rows = re.findall(r"^\| (\d+) \| `(\w+)` \|", docs.exit_codes_markdown(), re.MULTILINE)
    assert [(int(code), name) for code, name in rows] == [
        (0, "EXIT_OK"), (1, "EXIT_SOME_RUNS_NOT_DONE"), (2, "EXIT_BAD_INPUT"),
        (3, "EXIT_NONFINITE"), (75, "EXIT_PREEMPTED"), (130, "EXIT_INTERRUPTED")]


def test_configs_and_tables_pages_list_every_file_and_table():
    configs = sorted(f for f in os.listdir(os.path.join(REPO, "configs"))
                     if f.endswith(".py") and not f.startswith("_"))
    assert re.findall(r"^\| `configs/(\w+\.py)` \|", docs.configs_markdown(),
                      re.MULTILINE) == configs
    tables = re.findall(r"^\| `([\w.]+)` \| .* \| (\d+) \|", docs.tables_markdown(),
                        re.MULTILINE)
    assert ("table1_cifar", "450") in tables  # test_install's plan count
    from sam_jax import reproduce
    assert [name for name, _ in tables] == list(reproduce.TABLES)


def test_workdir_table_lists_every_file_a_run_may_leave():
    from sam_jax import workdir
    shown = set(re.findall(r"`([^`]+)`", docs.workdir_markdown().split("\n\n", 1)[1]))
    assert set(workdir.OWN_FILES) | {workdir.LOCK_FILE} <= shown
    row = "| `config.json` | the config the run was started with |"
    assert row in docs.workdir_markdown()


def test_escape_pipes_keeps_literal_blocks_and_inline_literals():
    lines = ["T = |w| + eta, ``a|b``", "formulas::", "", "    e = g / ||g||",
             "after |x|"]
    assert docs.escape_pipes(lines) == [
        "T = \\|w\\| + eta, ``a|b``", "formulas::", "", "    e = g / ||g||",
        "after \\|x\\|"]


def test_repository_links_become_downloads_only_for_existing_files(tmp_path):
    study = tmp_path / "study"
    study.mkdir()
    (study / "data.json").write_text("{}")
    text = "[d](data.json) [m](missing.json) [w](https://x.org) ![p](data.json)"
    out = docs.repository_links(text, str(study / "README.md"))
    expected_path = os.path.relpath(str(study / "data.json"), docs.DOCS)
    assert out == (f"[d](path:/{expected_path}) [m](missing.json) "
                   "[w](https://x.org) ![p](data.json)")


def test_generate_writes_one_api_page_per_public_name(tmp_path, monkeypatch):
    import sam_jax
    monkeypatch.setattr(docs, "SNIPPETS", str(tmp_path / "_generated"))
    monkeypatch.setattr(docs, "API_PAGES", str(tmp_path / "api"))
    (tmp_path / "api").mkdir()
    (tmp_path / "api" / "gone.rst").write_text("a name no longer public")
    docs.generate()
    assert (sorted(os.listdir(tmp_path / "api"))
            == sorted(f"{name}.rst" for name in sam_jax.__all__))
    sam_page = (tmp_path / "api" / "sam.rst").read_text()
    assert ".. autofunction:: sam_jax.sam" in sam_page
    assert "2 gradient evaluations and 2 sequential passes" in sam_page


# ------------------------------------------------------------- README and CI

def test_readme_is_short_and_its_test_command_is_cis():
    readme = read("README.md")
    assert len(readme.splitlines()) <= 250
    (command,) = re.findall(r"^python -m pytest .*$", readme, re.MULTILINE)
    ci = read(".ci/run")
    assert re.search(r"^" + re.escape(command) + r"( |$)", ci, re.MULTILINE)
    assert "python -m sphinx -W --keep-going" in ci


def test_readme_links_into_docs_exist():
    readme = read("README.md")
    targets = re.findall(r"\]\(((?:docs|experiments)/[^)#]+)\)", readme)
    assert any(t.startswith("docs/") for t in targets)
    for target in targets:
        assert os.path.exists(os.path.join(REPO, target)), target


def test_every_page_is_in_a_toctree():
    # Sphinx warns (an error under -W) for an orphan page; a cheaper check here.
    pages = []
    for root, dirs, files in os.walk(os.path.join(REPO, "docs")):
        dirs[:] = [d for d in dirs
                   if not d.startswith("_") and d not in ("examples", "api")]
        pages += [os.path.relpath(os.path.join(root, f), os.path.join(REPO, "docs"))
                  for f in files if f.endswith(".md")]
    listed = set()
    for page in pages:
        text = read(os.path.join("docs", page))
        for block in re.findall(r"```\{toctree\}\n(.*?)```", text, re.DOTALL):
            for entry in block.splitlines():
                if entry and not entry.startswith(":") and "*" not in entry:
                    listed.add(os.path.normpath(os.path.join(os.path.dirname(page),
                                                             entry + ".md")))
    assert set(pages) - {"index.md", "README.md"} == listed
