"""scripts/update_readme.py copies generated files between include markers."""

import os

from helpers import load_module

update_readme = load_module("scripts/update_readme.py")


def test_inline_replaces_only_the_marked_blocks(tmp_path):
    (tmp_path / "a.md").write_text("| x |\n|---|\n| 1 |\n")
    text = ("intro\n<!-- include: a.md -->\nstale\nlines\n<!-- end include -->\n"
            "outro <!-- include: a.md --> not a block\n")
    expected = ("intro\n<!-- include: a.md -->\n| x |\n|---|\n| 1 |\n"
                "<!-- end include -->\noutro <!-- include: a.md --> not a block\n")
    assert update_readme.inline(text, str(tmp_path)) == expected
    # Idempotent: a second pass changes nothing.
    assert update_readme.inline(expected, str(tmp_path)) == expected


def test_committed_readmes_hold_their_included_files():
    # A table in a README is the file it includes, never an edited copy.
    for readme in update_readme.READMES:
        with open(os.path.join(update_readme.REPO, readme)) as f:
            text = f.read()
        assert update_readme.inline(text, update_readme.REPO) == text, (
            f"{readme} is stale: run python scripts/update_readme.py")
