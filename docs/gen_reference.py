"""The reference pages, made from the live code every time the site is built, so they cannot go stale.

An mkdocs hook (`hooks:` in mkdocs.yml): `on_files` adds the generated pages to the site, `on_config` adds one API
page per subpackage to the nav. tests/unit/test_docs.py calls the same functions without building the site.

    reference/cli.md      every command, argument, default and example, from the argparse parser of `multitask.cli`
    reference/config.md   every config key with its type, default and the comment beside it in config/schema.py
    reference/api/*.md    mkdocstrings of each subpackage's public names (its `__all__`; else its modules)
    benchmarks.md         BENCHMARKS.md at the repository root, as it is
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import html
import importlib
import inspect
import io
import pkgutil
import re
import sys
import textwrap
import tokenize
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:   # the checkout's package, not an installed copy elsewhere
    sys.path.insert(0, str(ROOT))


# ------------------------------------------------------------------------------------------------------------ text
def md(text: str | None) -> str:
    """Plain text (argparse help, schema comments) as Markdown inline text: `code` kept as written, the rest without
    HTML or accidental emphasis, and no `|` that would split a table cell."""
    parts = re.split(r"(`[^`]*`)", " ".join((text or "").split()))
    return "".join(p if p.startswith("`") else re.sub(r"([|*\\])", r"\\\1", html.escape(p, quote=False))
                   for p in parts)


def code(text: str) -> str:
    """Inline code (a `|` inside it, as in `int | None`, does not split a table cell)."""
    return f"`{text}`"


# ------------------------------------------------------------------------------------------------------------- CLI
def find_parser() -> argparse.ArgumentParser:
    """The `multitask` parser, wherever `multitask.cli` keeps its builder (a module or a package of modules)."""
    cli = importlib.import_module("multitask.cli")
    modules = [cli]
    if hasattr(cli, "__path__"):
        modules += [importlib.import_module(f"{cli.__name__}.{m.name}") for m in pkgutil.iter_modules(cli.__path__)]
    for module in modules:
        builder = getattr(module, "build_parser", None)
        if callable(builder):
            return builder()
    raise LookupError("multitask.cli: no build_parser() found in the module or its submodules")


Command = tuple[str, str, argparse.ArgumentParser]


def subcommands(parser: argparse.ArgumentParser, prefix: str = "multitask") -> list[Command]:
    """(full command, one-line help, parser) of the parser and every sub-command under it, depth first."""
    found = [(prefix, parser.description or "", parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                nested = subcommands(sub, f"{prefix} {name}")
                found.append((nested[0][0], helps.get(name) or "", sub))
                found += nested[1:]
    return found


def _argument_row(action: argparse.Action) -> str | None:
    if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)) or action.help == argparse.SUPPRESS:
        return None
    name = ", ".join(action.option_strings) if action.option_strings else action.dest
    if action.option_strings and action.nargs != 0:
        name += " " + (action.metavar or action.dest.upper())
        if action.nargs in ("+", "*"):
            name += " ..."
    elif not action.option_strings and action.nargs in ("+", "*"):
        name += " ..."
    default = "" if action.default in (None, argparse.SUPPRESS, False) or action.nargs == 0 else repr(action.default)
    if action.required and action.option_strings:
        default = "required"
    choices = f" Choices: {', '.join(map(str, action.choices))}." if action.choices else ""
    return f"| {code(name)} | {md(default)} | {md(action.help)}{md(choices)} |"


def cli_reference(parser: argparse.ArgumentParser | None = None) -> str:
    """The CLI reference page: per command its purpose, usage, arguments and the examples its --help ends with."""
    parser = parser or find_parser()
    out = ["# Command-line reference", "",
           "Generated from the argparse parser of `multitask.cli` when the site is built: what `multitask "
           "COMMAND --help` prints, as a page. Trailing `key=value` arguments override config keys "
           "([config reference](config.md)).", "",
           "| command | purpose |", "|---|---|"]
    commands = subcommands(parser)
    for full, help_text, _ in commands[1:]:
        out.append(f"| [`{full}`](#{anchor(full)}) | {md(help_text)} |")
    for full, help_text, sub in commands:
        usage = sub.format_usage().replace("usage: ", "").strip()
        out += ["", f"## {full}", "", md(sub.description or help_text), "", "```text", usage, "```", ""]
        rows = [r for r in map(_argument_row, sub._actions) if r]
        if rows:
            out += ["| argument | default | meaning |", "|---|---|---|", *rows, ""]
        if sub.epilog:
            out += ["Examples:", "", "```bash", textwrap.dedent(sub.epilog.split(":", 1)[1]).strip("\n"), "```"]
    return "\n".join(out) + "\n"


def anchor(command: str) -> str:
    """The heading id Python-Markdown's toc gives `## multitask config show`."""
    return re.sub(r"[^\w-]+", "-", command.lower()).strip("-")


# ---------------------------------------------------------------------------------------------------------- config
def _comments(cls: type) -> dict[str, str]:
    """field name -> the comment written beside it in the class source: the block just above it, the one at the
    end of its line, and the indented comment lines that continue it."""
    source = textwrap.dedent(inspect.getsource(cls))
    lines = source.splitlines()
    comments: dict[int, tuple[int, str, bool, bool]] = {}   # line -> (column, text, alone, continued)
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            row, col = tok.start
            alone = not lines[row - 1][:col].strip()
            # a comment that continues the one above it is indented past its `#` (`#      more words`)
            continued = alone and (col > 0 and re.match(r"#\s{2,}", tok.string) is not None)
            comments[row] = (col, tok.string.lstrip("#").strip(), alone, continued)
    names = {f.name for f in dataclasses.fields(cls)}
    found: dict[str, str] = {}
    for row, line in enumerate(lines, 1):
        match = re.match(r"(\s+)(\w+)\s*:", line)
        if not match or match.group(2) not in names or match.group(2) in found:
            continue
        indent, parts = len(match.group(1)), []
        above = row - 1
        while above in comments and comments[above][2] and not comments[above][3] and comments[above][0] == indent:
            parts.insert(0, comments[above][1])
            above -= 1
        if row in comments and not comments[row][2]:
            parts.append(comments[row][1])
            below = row + 1
            while below in comments and (comments[below][3] or comments[below][2] and comments[below][0] > indent):
                parts.append(comments[below][1])
                below += 1
        found[match.group(2)] = " ".join(p for p in parts if p)
    return found


def _section_class(annotation: str, namespace: dict) -> type | None:
    """The dataclass a field's annotation names, itself or as the values of a dict (`dict[str, SourceConfig]`)."""
    match = re.fullmatch(r"(?:dict\[str, )?(\w+)\]?", annotation.replace("typing.", ""))
    cls = namespace.get(match.group(1)) if match else None
    return cls if dataclasses.is_dataclass(cls) else None


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "required"
    if dataclasses.is_dataclass(value):
        return "(section)"
    if isinstance(value, dict) and value and all(dataclasses.is_dataclass(v) for v in value.values()):
        return ", ".join(value)   # the default heads: their names
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else repr(value)


def config_sections() -> list[tuple[str, type]]:
    """(key prefix, dataclass) of every section of the config, from the root `Config` down."""
    schema = importlib.import_module("multitask.config.schema")
    heads = importlib.import_module("multitask.heads")
    namespace = {**vars(heads), **vars(schema)}
    sections, todo = [], [("", schema.Config)]
    while todo:
        prefix, cls = todo.pop(0)
        sections.append((prefix, cls))
        for f in dataclasses.fields(cls):
            annotation = f.type if isinstance(f.type, str) else typing.get_type_hints(cls)[f.name].__name__
            inner = _section_class(annotation, namespace)
            if inner is not None:
                keyed = annotation.startswith("dict[")
                todo.append((f"{prefix}{f.name}.{'<name>.' if keyed else ''}", inner))
    return sections


CONFIG_INTRO = """# Config reference

Generated from the schema dataclasses in `multitask/config/schema.py` (and `HeadSpec` in `multitask/heads/spec.py`)
when the site is built: every key, its type, its default and the comment written beside it in the code.
`multitask config show [--config C] [key=value ...]` prints a resolved config as YAML, every key with its value and
`# default: X` where it differs; the output loads back as the same config (`multitask train --config shown.yaml`).

How a config is read: types are what loading enforces: a `Literal[...]` is a choice, `X | None` allows `null`, a
section is a mapping. An unknown key, a wrong type or an invalid choice stops with one line naming the key, the file
and the nearest valid names; a key under `heads.<name>` for a head that is not configured is refused (a new head
gives `heads.<name>.classes`), and `train.monitor` is checked against the metrics the trained heads log. Numbers in
exponent form (`1e-3`, `1E-3`, `-5e-4`) are numbers, in config files, overrides and sweep spaces. Every number must
be finite (`.nan`, `.inf` are refused), and those with a range are checked before anything runs: `train.lr` > 0;
weight decay, `min_lr`, warmup, focal gamma, mixup / cutmix alphas, head and loss weights >= 0; momentum, EMA decay,
`mix_prob` and augmentation probabilities in [0, 1]; label smoothing and dropouts in [0, 1). A config file must be
UTF-8. Overrides on the command line use the same dotted keys: `train.epochs=3 "heads.age.bins=[30,58]"`.
"""


def config_reference() -> str:
    out = [CONFIG_INTRO]
    for prefix, cls in config_sections():
        out += [f"## `{prefix.rstrip('.')}`" if prefix else "## Top level", ""]
        doc = inspect.getdoc(cls) or ""
        if doc and not doc.startswith(f"{cls.__name__}("):   # a dataclass without a docstring gets its signature
            out += [md(doc.split("\n\n")[0] if cls.__name__ == "Config" else doc), ""]
        comments = _comments(cls)
        out += ["| key | type | default | meaning |", "|---|---|---|---|"]
        for f in dataclasses.fields(cls):
            annotation = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
            out.append(f"| {code(prefix + f.name)} | {code(annotation)} | {code(_default(f))} | "
                       f"{md(comments.get(f.name))} |")
        out.append("")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------------------- API
def _all_names(init: Path) -> list[str] | None:
    """A package's `__all__`, read from its `__init__.py` without importing it (no torch at doc-build time)."""
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return list(ast.literal_eval(node.value))
    return None


def subpackages() -> list[str]:
    package = ROOT / "multitask"
    return sorted(p.parent.name for p in package.glob("*/__init__.py"))


def api_pages() -> dict[str, str]:
    """reference/api/<subpackage>.md for each subpackage: its `__all__` when it declares one, else each of its
    public modules (a name without a leading underscore)."""
    pages = {}
    for name in subpackages():
        path = ROOT / "multitask" / name
        dotted = f"multitask.{name}"
        lines = [f"# `{dotted}`", ""]
        if _all_names(path / "__init__.py") is not None:
            lines += [f"::: {dotted}", "    options:", "      show_submodules: false", ""]
        else:
            lines += [f"::: {dotted}", "    options:", "      members: false", ""]
            for module in sorted(pkgutil.iter_modules([str(path)]), key=lambda m: m.name):
                if not module.name.startswith("_"):
                    lines += [f"::: {dotted}.{module.name}", "    options:", "      heading_level: 2", ""]
        pages[f"reference/api/{name}.md"] = "\n".join(lines)
    return pages


def api_index() -> str:
    rows = [f"- [`multitask.{name}`]({name}.md)" for name in subpackages()]
    return "\n".join(["# Python API", "",
                      "Generated with mkdocstrings from the code when the site is built: one page per subpackage, "
                      "its public names (`__all__`) where it declares them, else its modules. The layers these "
                      "subpackages form are on the [architecture](../../architecture.md) page.", "", *rows, ""])


def generated_pages() -> dict[str, str]:
    return {"reference/cli.md": cli_reference(), "reference/config.md": config_reference(),
            "reference/api/index.md": api_index(), **api_pages(),
            "benchmarks.md": (ROOT / "BENCHMARKS.md").read_text()}


# ------------------------------------------------------------------------------------------------------ mkdocs hooks
def on_config(config):
    """Fills the nav's `API` entry (a placeholder in mkdocs.yml) with one page per subpackage."""
    pages = ({f"multitask.{name}": f"reference/api/{name}.md"} for name in subpackages())
    api = [{"Overview": "reference/api/index.md"}, *pages]

    def fill(items):
        for item in items or []:
            if isinstance(item, dict):
                for key, value in item.items():
                    if key == "API":
                        item[key] = api
                    elif isinstance(value, list):
                        fill(value)
    fill(config["nav"])
    return config


def on_files(files, config):
    from mkdocs.structure.files import File

    for path, content in generated_pages().items():
        files.append(File.generated(config, path, content=content))
    return files
