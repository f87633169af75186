"""The README as a newcomer follows it: its first example prints cards (not "No cards."), and
the `--draft` example file it documents exists and works."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from click.testing import CliRunner

from cds_service.cli import main

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def _commands(prefix: str) -> list[list[str]]:
    out = []
    for line in README.splitlines():
        line = line.split("  #")[0].strip()
        if line.startswith(prefix):
            out.append(shlex.split(line)[1:])
    return out


def test_the_first_example_shows_cards(tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'r.sqlite3'}")
    monkeypatch.chdir(REPO)
    first = _commands(".venv/bin/cds-service invoke")[0]
    result = CliRunner().invoke(main, [*first, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["cards"], f"the README's first example gives no card: {first}"


def test_the_draft_example_file_is_documented_and_works(tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'r.sqlite3'}")
    monkeypatch.chdir(REPO)
    with_draft = [c for c in _commands(".venv/bin/cds-service invoke") if "--draft" in c]
    assert with_draft
    for command in with_draft:
        path = command[command.index("--draft") + 1]
        assert (REPO / path).is_file() and path.startswith("fixtures/")
        assert re.search(rf"as in `{re.escape(path)}`", README)  # its format is described
        result = CliRunner().invoke(main, [*command, "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["cards"]
