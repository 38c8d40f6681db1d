"""docs/web.md agrees with the code: settings, web-only rules, GET pages, and every command shown."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from oncosurg.cli import cli
from oncosurg.web.services.forms import WEB_RULES
from oncosurg.web.settings import SETTINGS

ROOT = Path(__file__).resolve().parents[1]
WEB_MD = (ROOT / "docs" / "web.md").read_text(encoding="utf-8")
README = (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_every_setting_is_documented_with_its_default(setting) -> None:  # type: ignore[no-untyped-def]
    default = str(setting.default).lower() if isinstance(setting.default, bool) else str(setting.default)
    row = re.search(rf"^\| `{setting.name}` \| `?{re.escape(default)}`? \|", WEB_MD, flags=re.M)
    assert row, f"docs/web.md: add a settings row for {setting.name} (default {default})"


def test_every_web_rule_is_documented() -> None:
    for code, (name, description) in WEB_RULES.items():
        assert f"| `{code}` | `{name}` | {description} |" in WEB_MD


def test_every_page_is_documented(tmp_path: Path) -> None:
    from oncosurg.web import Settings, create_app

    app = create_app(Settings(db_url=f"sqlite:///{tmp_path / 'x.db'}"))
    paths = [p for p, ops in app.openapi()["paths"].items() if "get" in ops]
    assert len(paths) >= 10
    for path in paths:
        assert f"`{path}" in WEB_MD or f"{path}`" in WEB_MD, f"docs/web.md does not mention {path}"
    app.state.store.dispose()


def _invocations(text: str) -> list[list[str]]:
    calls = []
    for block in re.findall(r"```(?:sh|console)?\n(.*?)```", text, flags=re.S):
        calls += [line for line in block.splitlines()]
    calls += re.findall(r"`(oncosurg [^`]+)`", text)
    out = []
    for line in calls:
        line = line.split("  #")[0].strip().removeprefix("$ ")
        if line.startswith("oncosurg "):
            out.append(shlex.split(line)[1:])
    return out


@pytest.mark.parametrize("source", ["docs/web.md", "README.md"])
def test_commands_shown_are_real_down_to_subcommands(source: str) -> None:
    text = WEB_MD if source == "docs/web.md" else README
    calls = [c for c in _invocations(text) if c and c[0] in ("serve", "user", "audit")]
    assert len(calls) >= 3
    for args in calls:
        command: click.Command = cli
        rest = list(args)
        while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
            name = rest.pop(0)
            assert name in command.commands, f"{source}: unknown command {name!r} in {args}"
            command = command.commands[name]
        options = {opt for param in command.params if isinstance(param, click.Option) for opt in param.opts}
        for arg in rest:
            if arg.startswith("--"):
                assert arg in options, f"{source}: {arg} is not an option of {args}"
        assert command.help and len(command.help) > 20
