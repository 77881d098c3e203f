"""Copies generated result files into README.md, so its tables are never typed.

    python scripts/update_readme.py

Replaces the text between `<!-- include: PATH -->` and `<!-- end include -->`
with the current content of PATH (relative to the repository root).
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


def main():
    path = os.path.join(REPO, "README.md")
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(inline(text, REPO))


if __name__ == "__main__":
    main()
