"""Sphinx configuration of the sam_jax documentation.

    pip install -e '.[docs]'
    python -m sphinx -W --keep-going -b html docs docs/_build/html

Warnings are errors (-W): a broken reference, a missing include or a
docstring Sphinx cannot read fails the build (and CI, .ci/run).
"""

import os
import sys

DOCS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(DOCS)
sys.path.insert(0, REPO)  # the checkout's sam_jax, whatever is installed
sys.path.insert(0, os.path.join(DOCS, "_ext"))

import sam_jax  # noqa: E402

project = "sam_jax"
author = "the sam_jax authors"
copyright = "the sam_jax authors; Apache-2.0"  # noqa: A001 (Sphinx's name)
release = sam_jax.__version__  # the one version, sam_jax/__init__.py
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinx.ext.intersphinx",
    "sam_jax_docs",  # docs/_ext: writes the generated pages first
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
# _generated/ holds snippets that pages include; they are not pages.
exclude_patterns = ["_build", "_generated", "examples", "README.md", "Thumbs.db",
                    ".DS_Store"]

# API: signatures from the code, argument tables from Google-style docstrings.
autosummary_generate = False  # docs/_ext/sam_jax_docs.py writes docs/api/
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
# Offline build: no inventories are fetched, so cross-references to optax or
# JAX stay plain text instead of failing.
intersphinx_mapping = {}

myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3

html_theme = "furo"
html_title = f"sam_jax {release}"
html_static_path = []

# A reference to a public sam_jax name that does not exist is an error; names
# of other libraries (optax, jax, typing in signatures) have no inventory
# offline, and private modules' types (sam_jax._step_info.StepInfo in a state's
# fields) have no page.
nitpicky = True
# sam_jax.family's declaration types are described in guides/adding_a_method.md
# rather than given API pages.
nitpick_ignore_regex = [(r"py:.*", r"^(?!sam_jax\b).*"), (r"py:.*", r"^sam_jax\._.*"),
                        (r"py:.*", r"^sam_jax\.family\..*")]
