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
