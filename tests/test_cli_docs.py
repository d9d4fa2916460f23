"""The man page and the bash completion are written from the CLI's parsers: every command and
option is in both, the tree's copies are current, the page renders without a roff warning,
and the completion completes in a real bash."""

from __future__ import annotations

import io
import shutil
import subprocess
from contextlib import redirect_stdout
from pathlib import Path

import pytest

import pciback.cli.docs as docs
from pciback.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_every_command_and_option_is_in_the_man_page() -> None:
    root = docs._root()
    page = (REPO / docs.MAN_PAGE).read_text(encoding="utf-8")
    leaves = [c for c in docs.walk(root) if c.path and not c.children]
    assert len(leaves) > 15 and {c.path for c in leaves} >= {("trace", "record"), ("daemon",)}
    for command in leaves:
        assert f".SS {docs._roff(' '.join(command.path))}\n" in page
        for option in command.options:
            for flag in option.flags:
                assert f"\\fB{docs._roff(flag)}\\fR" in page


def test_the_trees_copies_are_current_and_a_stale_one_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert docs.main(["--check"]) == 0
    monkeypatch.setattr(docs, "REPO", tmp_path)
    assert docs.main(["--check"]) == 1  # nothing written there yet
    assert "docs/man/pciback.8" in capsys.readouterr().out
    assert docs.main([]) == 0
    assert docs.main(["--check"]) == 0
    capsys.readouterr()
    (tmp_path / docs.BASH_COMPLETION).write_text("# edited by hand\n", encoding="utf-8")
    assert docs.main(["--check"]) == 1
    assert capsys.readouterr().out.startswith("contrib/completion/pciback.bash: stale")


def test_the_completion_command_prints_the_trees_script() -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["completion", "bash"]) == 0
    assert out.getvalue() == (REPO / docs.BASH_COMPLETION).read_text(encoding="utf-8")


@pytest.mark.skipif(shutil.which("groff") is None, reason="no groff here")
def test_the_man_page_renders_without_warnings() -> None:
    run = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww", "-z", str(REPO / docs.MAN_PAGE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0 and run.stderr == ""


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash here")
def test_bash_completes_commands_subcommands_options_and_paths(tmp_path: Path) -> None:
    (tmp_path / "boot.jsonl").write_text("", encoding="utf-8")
    script = f"""
source {REPO / docs.BASH_COMPLETION}
cd {tmp_path}
t() {{
    COMP_WORDS=("$@"); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1))
    _pciback; echo "${{COMPREPLY[*]}}"
}}
t pciback sl
t pciback slot ''
t pciback trace r
t pciback trace record --dev
t pciback trace replay b
t pciback trace replay x --dump boo
t pciback completion ''
"""
    run = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "slot"
    assert lines[1].split()[:3] == ["add", "remove", "list"] and "--socket" in lines[1]
    assert lines[2] == "record replay"
    assert lines[3] == "--device"
    assert lines[4] == ""  # a trace file is a positional: no word starts with b
    assert lines[5] == "boot.jsonl"  # --dump takes a path
    assert lines[6].split()[0] == "bash"
