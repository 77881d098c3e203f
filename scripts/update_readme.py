"""Copies generated result files into READMEs, so their tables are never typed.

    python scripts/update_readme.py

Replaces, in README.md and the READMEs of experiments/cpu_scale,
experiments/review_comparison, experiments/benchmarks, experiments/sam_behaviour
and experiments/sam_vs_sgd, the text between
`<!-- include: PATH -->` and `<!-- end include -->` with the current content
of PATH (relative to the repository root).

The documentation site (docs/) needs no copy: its pages include the same files
when Sphinx builds them (`{include}` directives), so they cannot go stale.
"""

import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCK = re.compile(r"(<!-- include: (?P<path>\S+) -->\n).*?(<!-- end include -->)",
                   re.DOTALL)


def inline(text: str, root: str) -> str:
    def replace(match):
        with open(os.path.join(root, match.group("path"))) as f:
            content = f.read()
        return match.group(1) + content.rstrip("\n") + "\n" + match.group(3)
    return BLOCK.sub(replace, text)


READMES = ("README.md", "experiments/cpu_scale/README.md",
           "experiments/review_comparison/README.md",
           "experiments/benchmarks/README.md", "experiments/sam_behaviour/README.md",
           "experiments/sam_vs_sgd/README.md")


def main():
    for readme in READMES:
        path = os.path.join(REPO, readme)
        with open(path) as f:
            text = f.read()
        new_text = inline(text, REPO)  # before opening for writing: a missing
        with open(path, "w") as f:     # include leaves the README as it was
            f.write(new_text)


if __name__ == "__main__":
    main()
