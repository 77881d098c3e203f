"""Writes the documentation's generated pages from the code's own declarations.

Run by Sphinx (docs/conf.py loads this extension; it writes when the build
starts, before the sources are read) or by hand:

    python docs/_ext/sam_jax_docs.py     # writes docs/_generated/ and docs/api/

Nothing here is typed twice: the config keys, their defaults and meanings come
from sam_jax/config_schema.py (its values and its comments), the methods'
settings and costs from their declarations (sam_jax/methods.py's registry), the configs from configs/*.py (their
docstrings), the tables from sam_jax.reproduce, the exit codes from
sam_jax/errors.py, the API pages from `sam_jax.__all__`.
"""

import ast
import io
import os
import re
import sys
import tokenize

DOCS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(DOCS)
SNIPPETS = os.path.join(DOCS, "_generated")  # included into pages, not pages
API_PAGES = os.path.join(DOCS, "api")  # one page per public name
if REPO not in sys.path:
    sys.path.insert(0, REPO)


def _cell(text: str) -> str:
    """Text for a markdown table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


# --- config keys -------------------------------------------------------------

# A comment block that names a part of the schema ("# Data.", "# Model.",
# "# Optimisation (...)."): a heading, not the meaning of the key below it.
_HEADING = re.compile(r"^[A-Z][\w-]*\.?( \([^)]*\))?\.?$")
_ASSIGNMENT = re.compile(r"^\s*config\.(?P<key>[\w.]+)\s*=")


def _comments_by_line(source: str) -> dict[int, str]:
    """Line number -> the text of the comment on it (tokenize: never a '#'
    inside a string)."""
    comments = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
    return comments


def schema_comments(source: str) -> tuple[dict[str, str], dict[str, str]]:
    """From config_schema.py's source: ({key: meaning}, {key: section}).

    A key's meaning is the comment block right above its assignment (not
    separated by a blank line or another assignment) followed by the comment
    on its own line; a one-line block like "# Data." is a section heading.
    """
    comments = _comments_by_line(source)
    meanings, sections = {}, {}
    block: list[str] = []
    section = ""
    for number, line in enumerate(source.splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            block = []
            continue
        if stripped.startswith("#"):
            block.append(comments[number])
            continue
        match = _ASSIGNMENT.match(line)
        if match is None:
            block = []
            continue
        if len(block) == 1 and _HEADING.match(block[0]):
            section, block = block[0].rstrip("."), []
        key = match.group("key")
        meanings[key] = " ".join(block + ([comments[number]] if number in comments else []))
        sections[key] = section
        block = []
    return meanings, sections


def _default(value) -> str:
    import ml_collections
    if isinstance(value, ml_collections.ConfigDict):
        return "(group)"
    if isinstance(value, ml_collections.FieldReference):  # a placeholder
        inner = value.get()
        return repr(inner) if inner is not None else f"None ({value.get_type().__name__})"
    return repr(value)


def _with_method_settings(meanings: dict, sections: dict) -> tuple[dict, dict]:
    """The schema's keys with each method's sub-config (declared in its module,
    sam_jax/family.py) right after `method`: the group, then its settings."""
    from sam_jax import methods
    merged, merged_sections = {}, {}
    for key, meaning in meanings.items():
        merged[key], merged_sections[key] = meaning, sections[key]
        if key != "method":
            continue
        for method in methods.REGISTRY:
            if not method.settings:
                continue
            section = "The methods' settings (each declared in its module)"
            merged[method.name] = (f"`--config.method={method.name}`: "
                                   f"{method.changes} ({method.paper})")
            merged_sections[method.name] = section
            for name, setting in method.settings.items():
                merged[f"{method.name}.{name}"] = setting.meaning
                merged_sections[f"{method.name}.{name}"] = section
    return merged, merged_sections


def config_keys_markdown() -> str:
    """Every key of base_config(), its default and its meaning, by section."""
    import ml_collections

    from sam_jax import config_schema
    with open(config_schema.__file__) as f:
        meanings, sections = _with_method_settings(*schema_comments(f.read()))
    config = config_schema.base_config()
    defaults = {}

    def walk(node, prefix):
        for key in node.keys():
            name = prefix + key
            if isinstance(node[key], ml_collections.ConfigDict):
                defaults[name] = _default(node[key])
                walk(node[key], name + ".")
            else:  # get_ref keeps a placeholder as what it is (its type, None)
                defaults[name] = _default(node.get_ref(key))
    walk(config, "")
    if set(defaults) != set(meanings):
        raise ValueError("base_config()'s keys and the assignments in its source "
                         f"differ: {sorted(set(defaults) ^ set(meanings))}")
    lines = []
    current = None
    for name in meanings:  # the schema's order
        if sections[name] != current:
            current = sections[name]
            lines += ["", f"## {current or 'General'}", "",
                      "| key | default | meaning |", "|---|---|---|"]
        meaning = meanings[name] or (f"see `{name.rsplit('.', 1)[0]}`"
                                     if "." in name else "")
        lines.append(f"| `{name}` | `{_cell(defaults[name])}` | {_cell(meaning)} |")
    return ("Generated from `sam_jax/config_schema.py` (`base_config()`: the "
            "defaults; the comments beside each key: the meaning) and the methods' "
            f"declarations (their settings); {len(meanings)} "
            "keys. A config file changes some of them; `--config.KEY=VALUE` "
            "overrides any.\n" + "\n".join(lines) + "\n")


# --- methods -----------------------------------------------------------------

def method_transform(name: str) -> str:
    """The public transform of method `name`, as its declaration names it."""
    import sam_jax
    from sam_jax import methods
    transform = methods.get(name).transform
    if (transform.startswith("sam_jax.")
            and transform.removeprefix("sam_jax.") not in sam_jax.__all__):
        raise ValueError(f"method {name!r}'s transform {transform} is not in "
                         "sam_jax.__all__")
    return transform


def _source_file(qualified: str) -> str:
    import sam_jax
    name = qualified.removeprefix("sam_jax.")
    module = sam_jax._EXPORTS.get(name)
    return module.replace(".", "/") + ".py" if module else "(optax)"


def methods_markdown() -> str:
    """The family's cost table, at the schema's defaults."""
    from sam_jax import config_schema, methods
    config = config_schema.base_config()
    lines = ["| `--config.method=` | transform | what it changes | paper | "
             "gradient evaluations / step | sequential passes | radius key | "
             "under grad_accum_steps | source |",
             "|---|---|---|---|---|---|---|---|---|"]
    for method in methods.METHODS.values():
        evaluations, passes = method.cost(config)
        transform = method_transform(method.name)
        link = (f"{{py:func}}`{transform}`" if transform.startswith("sam_jax.")
                else f"`{transform}`")
        lines.append(
            f"| `{method.name}` | {link} | {_cell(method.changes)} | "
            f"{_cell(method.paper)} | {_cell(evaluations)} | {_cell(passes)} | "
            f"{'`' + method.radius + '`' if method.radius else '-'} | "
            f"{'exact' if method.accumulates else 'refused'} | "
            f"`{_source_file(transform)}` |")
    return ("Generated from `sam_jax/methods.py` (`METHODS`; costs at the "
            "schema's defaults, e.g. LookSAM's k and ESAM's gamma).\n\n"
            + "\n".join(lines) + "\n")


def method_cost_line(public_name: str) -> str:
    """The cost paragraph of one public transform's API page, or ''."""
    from sam_jax import config_schema, methods
    config = config_schema.base_config()
    found = [m for m in methods.METHODS.values()
             if method_transform(m.name) == f"sam_jax.{public_name}"]
    lines = []
    for method in found:
        evaluations, passes = method.cost(config)
        lines.append(
            f"As the trainer's ``--config.method={method.name}`` "
            f"({method.paper}): {evaluations} gradient evaluations and {passes} "
            f"sequential passes per step at the schema's defaults; it changes: "
            f"``{method.changes}``.")
    return "\n\n".join(lines)


# --- configs, tables, exit codes -----------------------------------------------

def configs_markdown() -> str:
    """Each configs/*.py with its docstring's first paragraph."""
    directory = os.path.join(REPO, "configs")
    lines = ["| config | what (its docstring; the file's docstring has the exact "
             "command and its ARG choices) |", "|---|---|"]
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".py") or name.startswith("_"):
            continue
        with open(os.path.join(directory, name)) as f:
            doc = ast.get_docstring(ast.parse(f.read())) or ""
        lines.append(f"| `configs/{name}` | {_cell(doc.split(chr(10) * 2)[0])} |")
    return "\n".join(lines) + "\n"


def tables_markdown() -> str:
    """The registry of `python -m sam_jax.reproduce --table=NAME`."""
    from sam_jax import reproduce
    lines = ["| `--table=` | title | runs | rows x columns | declared in |",
             "|---|---|---|---|---|"]
    from sam_jax.errors import BadInputError
    for name in reproduce.TABLES:
        declared = f"`experiments/{name.replace('.', '/')}.py`"
        try:
            table = reproduce.load_table(name)
        except BadInputError as e:  # its runs follow from an earlier table's
            lines.append(f"| `{name}` | {_cell(str(e))} | 0 | - | {declared} |")
            continue
        lines.append(f"| `{name}` | {_cell(table.title)} | {len(table.runs())} | "
                     f"{len(table.rows)} x {len(table.columns)} | {declared} |")
    return ("Generated from `sam_jax.reproduce.TABLES` (runs at each table's "
            "default seeds).\n\n" + "\n".join(lines) + "\n")


def exit_codes_markdown() -> str:
    """sam_jax/errors.py's exit codes, with the comment beside each."""
    from sam_jax import errors
    with open(errors.__file__) as f:
        source = f.read()
    comments = _comments_by_line(source)
    lines = ["| exit code | name in `sam_jax/errors.py` | meaning |", "|---|---|---|"]
    for number, line in enumerate(source.splitlines(), start=1):
        match = re.match(r"^(EXIT_\w+) = (\d+)", line)
        if match:
            name, code = match.group(1), int(match.group(2))
            if getattr(errors, name) != code:
                raise ValueError(f"{name}: parsed {code}, is {getattr(errors, name)}")
            meaning = errors.EXIT_MEANINGS.get(code, "finished")
            # the comment on the line, or the block just above (EXIT_PREEMPTED's)
            above = []
            k = number - 1
            while k in comments and source.splitlines()[k - 1].lstrip().startswith("#"):
                above.insert(0, comments[k])
                k -= 1
            detail = comments.get(number) or " ".join(above)
            lines.append(f"| {code} | `{name}` | {_cell(meaning)}"
                         f"{': ' + _cell(detail) if detail else ''} |")
    return "\n".join(lines) + "\n"


def workdir_markdown() -> str:
    """The files a run leaves in its workdir: sam_jax/workdir.py's constants
    from "What a run writes" to "Everything above", with their comments."""
    from sam_jax import workdir
    with open(workdir.__file__) as f:
        source = f.read()
    comments = _comments_by_line(source)
    source_lines = source.splitlines()
    start = next(i for i, line in enumerate(source_lines, 1)
                 if line.startswith("# What a run writes"))
    end = next(i for i, line in enumerate(source_lines, 1)
               if line.startswith("# Everything above"))
    lines = ["| file or directory | what it holds |", "|---|---|"]
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.Assign) and start < node.lineno < end):
            continue
        name = node.targets[0].id
        above, k = [], node.lineno - 1
        while k > start and source_lines[k - 1].lstrip().startswith("#"):
            above.insert(0, comments[k])
            k -= 1
        value = getattr(workdir, name)
        values = value if isinstance(value, tuple) else (value,)
        shown = ", ".join(f"`{v}`" for v in values)
        meaning = " ".join(above + ([comments[node.lineno]] if node.lineno in comments
                                    else []))
        lines.append(f"| {shown} | {_cell(meaning) or '-'} |")
    return ("Generated from `sam_jax/workdir.py` (the names the trainer, the "
            "analyses and the launchers write; `--overwrite` removes these, the "
            "lock aside, and never another file).\n\n" + "\n".join(lines) + "\n")


# --- API pages -----------------------------------------------------------------

def api_page(name: str) -> str:
    """One public name's page (reStructuredText for autodoc)."""
    import sam_jax
    obj = getattr(sam_jax, name)
    title = f"sam_jax.{name}"
    module = sam_jax._EXPORTS[name]
    if isinstance(obj, type):
        directive = f".. autoclass:: sam_jax.{name}\n   :members:\n"
    elif callable(obj):
        directive = f".. autofunction:: sam_jax.{name}\n"
    else:
        directive = f".. autodata:: sam_jax.{name}\n   :annotation: = {obj!r}\n"
    parts = [title, "=" * len(title), "", directive]
    cost = method_cost_line(name)
    if cost:
        parts += ["**Cost.**", "", cost, ""]
    parts += [f"**Source:** ``{module.replace('.', '/')}.py`` (the [source] link "
              "beside the signature shows it).", ""]
    return "\n".join(parts)


def api_summary_markdown() -> str:
    """The summary table of every public name, linking to its page."""
    import sam_jax
    names = "".join(f"   {name}\n" for name in sam_jax.__all__)
    return ("```{eval-rst}\n.. currentmodule:: sam_jax\n\n.. autosummary::\n"
            "   :nosignatures:\n\n" + names + "```\n")


def write(path: str, text: str) -> None:
    """Writes only when the text changed, so Sphinx rebuilds only what did."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.exists(path):
        with open(path) as f:
            if f.read() == text:
                return
    with open(path, "w") as f:
        f.write(text)


def generate() -> list[str]:
    """Writes every generated file; returns their paths."""
    import sam_jax
    files = {
        os.path.join(SNIPPETS, "config_keys.md"): config_keys_markdown(),
        os.path.join(SNIPPETS, "methods.md"): methods_markdown(),
        os.path.join(SNIPPETS, "configs.md"): configs_markdown(),
        os.path.join(SNIPPETS, "tables.md"): tables_markdown(),
        os.path.join(SNIPPETS, "exit_codes.md"): exit_codes_markdown(),
        os.path.join(SNIPPETS, "workdir.md"): workdir_markdown(),
        os.path.join(SNIPPETS, "api_summary.md"): api_summary_markdown(),
    }
    for name in sam_jax.__all__:
        files[os.path.join(API_PAGES, f"{name}.rst")] = api_page(name)
    # Names no longer public lose their page (a stale page would still build).
    if os.path.isdir(API_PAGES):
        for old in os.listdir(API_PAGES):
            if os.path.join(API_PAGES, old) not in files:
                os.remove(os.path.join(API_PAGES, old))
    for path, text in files.items():
        write(path, text)
    return sorted(files)


# --- Sphinx hooks ----------------------------------------------------------------

_INLINE_LITERAL = re.compile(r"(``.*?``)")


def escape_pipes(lines: list[str]) -> list[str]:
    """Docstring lines with `|` escaped outside literal blocks and inline
    literals: the docstrings write |w| and ||g|| as mathematicians do, which
    reStructuredText reads as a substitution reference."""
    out, literal_indent = [], None
    for line in lines:
        indent = len(line) - len(line.lstrip())
        if literal_indent is not None and line.strip() and indent <= literal_indent:
            literal_indent = None  # the literal block ended
        if literal_indent is None:
            line = "".join(part if part.startswith("``") else part.replace("|", "\\|")
                           for part in _INLINE_LITERAL.split(line))
            if line.rstrip().endswith("::"):
                literal_indent = indent
        out.append(line)
    return out


def _process_docstring(app, what, name, obj, options, lines):
    lines[:] = escape_pipes(lines)


_LINK = re.compile(r"(?<!!)\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)\)")


def repository_links(text: str, included: str) -> str:
    """Markdown links of an included file (a study's README) that point at
    repository files, not documents, as download links (myst's `path:`);
    other links are left to Sphinx (a target
    that does not exist stays a warning, i.e. an error under -W)."""
    base = os.path.dirname(included)

    def replace(match):
        target = match.group("target")
        if ":" in target or target.startswith(("#", "/")):
            return match.group(0)
        resolved = os.path.normpath(os.path.join(base, target.split("#")[0]))
        if not os.path.isfile(resolved):
            return match.group(0)
        # "/" is Sphinx's source directory, docs/
        return (f"[{match.group('text')}](path:/"
                f"{os.path.relpath(resolved, DOCS)})")
    return _LINK.sub(replace, text)


def _include_read(app, relative_path, parent_docname, content):
    included = os.path.join(app.srcdir, str(relative_path))
    if not os.path.normpath(included).startswith(os.path.join(REPO, "experiments")):
        return
    content[0] = repository_links(content[0], included)


def setup(app):
    # Before Sphinx lists the source files, so the API pages are among them.
    app.connect("config-inited", lambda app, config: generate())
    app.connect("autodoc-process-docstring", _process_docstring)
    app.connect("include-read", _include_read)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


if __name__ == "__main__":
    for path in generate():
        print(os.path.relpath(path, REPO))
