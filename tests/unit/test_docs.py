"""The documentation stays true to the code: the generated references name every config key and every command and
flag, links resolve, the README's commands parse, shipped configs run outside the development setup, and scripts
name files that exist. No site build here (CI runs `mkdocs build --strict`); the generator runs in memory."""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import re
import shlex
import typing
from pathlib import Path

import pytest
from helpers import REPO

import multitask.cli as cli
from multitask.config import schema
from multitask.heads import HeadSpec

ROOT = REPO
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def _generator():
    spec = importlib.util.spec_from_file_location("docs_gen_reference", ROOT / "docs" / "gen_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gen():
    return _generator()


def _schema_keys(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key of the schema, walked here from the dataclasses (not with the generator's own walk)."""
    hints = typing.get_type_hints(cls, {**vars(schema), "HeadSpec": HeadSpec})
    keys = []
    for f in dataclasses.fields(cls):
        key, hint = prefix + f.name, hints[f.name]
        keys.append(key)
        if dataclasses.is_dataclass(hint):
            keys += _schema_keys(hint, key + ".")
        elif typing.get_origin(hint) is dict and dataclasses.is_dataclass(typing.get_args(hint)[1]):
            keys += _schema_keys(typing.get_args(hint)[1], key + ".<name>.")
    return keys


def test_config_reference_names_every_schema_key(gen):
    page = gen.config_reference()
    keys = _schema_keys(schema.Config)
    assert {"data.sources.<name>.balance", "train.distill.alpha", "heads.<name>.years_sigma"} <= set(keys)
    missing = [k for k in keys if f"`{k}`" not in page]
    assert not missing, f"config reference lacks {missing}"


def test_config_reference_carries_the_comment_beside_a_key(gen):
    rows = {line.split("|")[1].strip(): line for line in gen.config_reference().splitlines() if line.startswith("| `")}
    assert "fraction of each epoch's samples" in rows["`data.sources.<name>.share`"]
    assert "a CSV of unlabelled images" in rows["`data.sources.<name>.path`"]       # a continued comment line
    assert "ImageNet's for a trunk from scratch" in rows["`data.mean`"]              # the comment above the key
    assert "`64`" not in rows["`train.batch_size`"] and "`32`" in rows["`train.batch_size`"]


def _commands(parser: argparse.ArgumentParser, prefix: str = "multitask"):
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, f"{prefix} {name}")


def test_cli_reference_names_every_command_and_flag(gen):
    page = gen.cli_reference()
    sections = dict(re.findall(r"^## (multitask[^\n]*)\n(.*?)(?=^## |\Z)", page, re.S | re.M))
    commands = list(_commands(cli.build_parser()))
    assert len(commands) >= 12 and "multitask config show" in dict(commands)
    for name, parser in commands:
        assert name in sections, f"no section for {name}"
        for action in parser._actions:
            if action.help == argparse.SUPPRESS:
                continue
            for flag in action.option_strings or [action.dest]:
                if flag not in ("-h", "--help") and action.dest != "command" and action.dest != "config_command":
                    assert flag in sections[name], f"{name}: {flag} missing from the CLI reference"
        if parser.epilog:   # the examples of --help
            first = parser.epilog.split(":", 1)[1].strip().splitlines()[0].strip()
            assert first in sections[name]


def _anchors(markdown: str) -> set[str]:
    """The ids Python-Markdown's toc gives the headings of a page."""
    headings = re.findall(r"^#{1,6} (.+)$", re.sub(r"```.*?```", "", markdown, flags=re.S), re.M)
    return {re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", h.lower())).strip("-") for h in headings}


def _doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_relative_links_resolve(gen):
    generated = set(gen.generated_pages())   # docs/ paths that exist in the built site only
    broken = []
    for doc in _doc_files():
        for target in LINK.findall(re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path, _, anchor = target.partition("#")
            resolved = (doc.parent / path).resolve()
            in_site = doc != ROOT / "README.md" and resolved.relative_to(ROOT / "docs").as_posix() in generated \
                if resolved.is_relative_to(ROOT / "docs") else False
            if not resolved.exists() and not in_site:
                broken.append(f"{doc.relative_to(ROOT)}: {target}")
            elif anchor and resolved.suffix == ".md" and resolved.exists() \
                    and anchor not in _anchors(resolved.read_text()):
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, broken


def _code_commands(markdown: str) -> list[str]:
    """The `multitask ...` command lines of a page's bash code blocks, continuation lines joined, comments cut."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", markdown, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith("multitask "):
                commands.append(line)
    return commands


def _parse(argv: list[str]) -> argparse.Namespace:
    """What the real CLI does with argv: its own parse (key=value overrides after options too) where it has one."""
    parse = getattr(cli, "parse", None)
    return parse(argv) if callable(parse) else cli.build_parser().parse_args(argv)


@pytest.mark.parametrize("doc", _doc_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_documented_commands_parse_with_the_real_parser(doc):
    commands = _code_commands(doc.read_text())
    if doc.name == "README.md":
        assert len(commands) >= 6
    for command in commands:
        try:
            args = _parse(shlex.split(command)[1:])
        except SystemExit:
            pytest.fail(f"{doc.relative_to(ROOT)}: a command does not parse: {command}")
        assert args.command in command


def test_the_parse_check_catches_a_bad_command():
    with pytest.raises(SystemExit):
        _parse(shlex.split("train --confg configs/quickstart.yaml"))
    assert _parse(shlex.split("train --config c.yaml train.epochs=3 --heads age")).overrides == ["train.epochs=3"]


def test_no_shipped_config_names_the_development_data():
    offenders = [p.relative_to(ROOT).as_posix() for p in (ROOT / "configs").rglob("*")
                 if p.is_file() and "../shared" in p.read_text(errors="replace")]
    assert not offenders, f"{offenders} name ../shared: read data/... and say in the header how to prepare it"


PATH = re.compile(r"(?<![\w./-])((?:\.\./shared|configs|scripts|docs|multitask|tests)/[\w./-]*\w"
                  r"\.(?:py|sh|ya?ml|md|csv|safetensors))(?![\w/])")
MODULE = re.compile(r"^\s*(?:from|import)\s+(multitask(?:\.\w+)*)", re.M)


def test_scripts_and_configs_point_at_files_that_exist():
    missing = []
    for path in sorted([*(ROOT / "scripts").iterdir(), *(ROOT / "configs").rglob("*.yaml")]):
        text = path.read_text()
        for name in PATH.findall(text):
            if name.startswith("../shared") and not (ROOT.parent / "shared").is_dir():
                continue   # the development data: checked where it is present (CI)
            if not (ROOT / name).exists():
                missing.append(f"{path.relative_to(ROOT)}: {name}")
        for module in MODULE.findall(text):
            if importlib.util.find_spec(module) is None:
                missing.append(f"{path.relative_to(ROOT)}: module {module}")
    assert not missing, missing
