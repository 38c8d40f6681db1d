"""The docs agree with the code: generated references are current, the README's commands exist."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import click
import pytest

from oncosurg import _docgen
from oncosurg.cli import cli
from oncosurg.protocol.engine import compile_protocol
from oncosurg.protocol.model import protocol_from_dict

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(_docgen.OUTPUTS))
def test_generated_docs_are_current(name: str) -> None:
    committed = (ROOT / "docs" / name).read_text(encoding="utf-8")
    assert committed == _docgen.OUTPUTS[name](), f"run `python -m oncosurg._docgen` to refresh docs/{name}"


def test_readme_states_the_two_commands_first() -> None:
    first_block = README.split("```")[1]
    assert "make demo" in first_block and "make test" in first_block


@pytest.mark.parametrize("name", _docgen.command_names())
def test_every_command_has_help_and_is_in_the_readme(name: str) -> None:
    command = cli.commands[name]
    assert command.help and len(command.help) > 20
    assert f"oncosurg {name}" in README


def _readme_invocations() -> list[list[str]]:
    calls = []
    for block in re.findall(r"```(?:sh|console)?\n(.*?)```", README, flags=re.S):
        for line in block.splitlines():
            line = line.split("#")[0].strip().removeprefix("$ ")
            if line.startswith("oncosurg "):
                calls.append(shlex.split(line)[1:])
    return calls


def test_readme_invocations_use_real_commands_and_options() -> None:
    calls = _readme_invocations()
    assert len(calls) >= 8
    for args in calls:
        command = cli.commands.get(args[0])
        assert command is not None, args
        options = {opt for param in command.params if isinstance(param, click.Option) for opt in param.opts}
        for arg in args[1:]:
            if arg.startswith("--"):
                assert arg in options, f"README uses {arg} with `oncosurg {args[0]}`; known: {sorted(options)}"


def test_readme_protocol_example_is_a_valid_protocol() -> None:
    block = next(b for b in re.findall(r"```toml\n(.*?)```", README, flags=re.S) if "[[endpoints]]" in b)
    compile_protocol(protocol_from_dict(tomllib.loads(block), source="README.md"))


# ------------------------------------------------------------------ README and docs vs the CLI reference
CLI_REFERENCE = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")


def _documented_invocations() -> list[tuple[str, list[str]]]:
    """Every ``oncosurg …`` command line of the README and the hand-written docs (code blocks and inline)."""
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        if path.name in _docgen.OUTPUTS:
            continue
        text = path.read_text(encoding="utf-8")
        lines = [line for block in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S) for line in block.splitlines()]
        lines += re.findall(r"`(oncosurg [^`]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
        for line in lines:
            line = line.split(" #")[0].strip().removeprefix("$ ")
            if line.startswith("oncosurg "):
                found.append((path.name, shlex.split(line.split(" > ")[0].split(" | ")[0])[1:]))
    return found


def test_the_cli_reference_names_the_program_oncosurg() -> None:
    assert "Usage: cli" not in CLI_REFERENCE
    assert CLI_REFERENCE.count("Usage: oncosurg") == len(_docgen.command_paths())


def test_documented_commands_are_in_the_cli_reference_with_their_options() -> None:
    calls = _documented_invocations()
    assert len(calls) >= 20
    for source, args in calls:
        command: click.Command = cli
        path: list[str] = []
        for arg in args:
            if isinstance(command, click.Group) and arg in command.commands:
                command = command.commands[arg]
                path.append(arg)
            else:
                break
        assert path, f"{source}: `oncosurg {' '.join(args)}` names no command"
        assert not isinstance(command, click.Group) or len(args) == len(path), f"{source}: {args}"
        title = " ".join(["oncosurg", *path])
        assert f"## `{title}`\n" in CLI_REFERENCE, f"{source}: `{title}` is not in docs/cli.md"
        options = {opt for param in command.params if isinstance(param, click.Option) for opt in param.opts}
        options |= {"--help", "-h"}
        for arg in args[len(path):]:
            if arg.startswith("--"):
                assert arg.split("=")[0] in options, f"{source}: `{title}` has no option {arg}"


# ------------------------------------------------------------------ citations: only files that ship
_SHIPPED = ["README.md", "Makefile", "pyproject.toml", "docs", "src", "studies", "benchmarks", "tests"]


def _shipped_text_files() -> list[Path]:
    files = []
    for name in _SHIPPED:
        path = ROOT / name
        candidates = [path] if path.is_file() else sorted(path.rglob("*"))
        files += [p for p in candidates if p.is_file() and p.suffix in {".md", ".py", ".toml", ".R", ".j2", ".html", ""}
                  and "__pycache__" not in p.parts and not any(part.endswith(".egg-info") for part in p.parts)]
    return files


def test_no_file_cites_documents_that_are_not_in_the_repository() -> None:
    this = Path(__file__).resolve()
    for path in _shipped_text_files():
        if path.resolve() == this:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for name in ("DESIGN" + ".md", "domain" + ".md", "HELPERS" + ".md", "/work/" + "shared"):
            assert name not in text, f"{path.relative_to(ROOT)} cites {name}, which users do not have"


def test_cited_repository_paths_exist() -> None:
    pattern = re.compile(r"(?<![\w/.-])((?:docs|studies|benchmarks|tests)/[A-Za-z0-9_./-]*[a-z0-9_-]"
                         r"\.(?:md|toml|py|R|png))")
    for path in _shipped_text_files():
        if path.is_relative_to(ROOT / "tests"):
            continue
        for cited in pattern.findall(path.read_text(encoding="utf-8", errors="replace")):
            assert (ROOT / cited).exists(), f"{path.relative_to(ROOT)} cites {cited}, which does not exist"


def test_markdown_links_resolve() -> None:
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" in target or target.startswith("mailto:"):
                continue
            assert (path.parent / target).exists(), f"{path.relative_to(ROOT)} links to {target}, which does not exist"
