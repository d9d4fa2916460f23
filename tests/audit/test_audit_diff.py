"""`pciback audit --diff OLD NEW DUMP`: a policy changed in a copy of dsl/ shows exactly the bits
it changed."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pciback.audit.diff import diff
from pciback.audit.policies import PolicyTreeError, load_policy
from pciback.cli import main

from .support import audit_of, qemu, qemu_dumps

REPO = Path(__file__).resolve().parents[2]
ENDPOINT = "e1000e-8086-10d3.bin"
needs_fixtures = pytest.mark.skipif(not qemu_dumps(), reason="../shared/fixtures/qemu is absent")
SPECIAL_CYCLES = (
    "        special_cycles  [3]     hw ro  permissive rw  \"one of Linux's PCI_COMMAND_GUEST bits:"
)


def changed_copy(tmp_path: Path) -> Path:
    """dsl/ with the command register's special-cycles bit made writable in normal mode."""
    copy = tmp_path / "dsl"
    shutil.copytree(REPO / "dsl", copy)
    prelude = copy / "prelude.pci"
    text = prelude.read_text(encoding="utf-8")
    assert SPECIAL_CYCLES in text
    prelude.write_text(
        text.replace(SPECIAL_CYCLES, SPECIAL_CYCLES.replace("hw ro  permissive rw", "hw rw")),
        encoding="utf-8",
    )
    return copy


@needs_fixtures
def test_a_changed_bit_is_the_only_change(tmp_path: Path) -> None:
    old = audit_of(qemu(ENDPOINT), policy=load_policy(REPO / "dsl"))
    new = audit_of(qemu(ENDPOINT), policy=load_policy(changed_copy(tmp_path)))
    changes = diff(old, new)
    assert [(c.offset, c.bit) for c in changes] == [(0x04, 3)]
    assert changes[0].old == "command.special_cycles[3] ro/rw"
    assert changes[0].new == "command.special_cycles[3] rw/rw"


@needs_fixtures
def test_the_command_line_diff(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    new = changed_copy(tmp_path)
    dump = str(qemu(ENDPOINT))
    assert main(["audit", "--diff", str(REPO / "dsl"), str(new), dump]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1:] == [
        "0x004.3  command.special_cycles[3] ro/rw  ->  command.special_cycles[3] rw/rw"
    ]
    # The committed tables are the same policy as dsl/: nothing differs.
    assert main(["audit", "--diff", str(REPO / "generated"), str(REPO / "dsl"), dump]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == ["none"]


@needs_fixtures
def test_hiding_a_capability_in_the_policy_shows_its_bits(tmp_path: Path) -> None:
    copy = tmp_path / "dsl"
    shutil.copytree(REPO / "dsl", copy)
    msi = copy / "msi.pci"
    text = msi.read_text(encoding="utf-8")
    head = text.index("capability msi")
    brace = text.index("{", head) + 1
    msi.write_text(text[:brace] + '\n    policy hide "audit test"\n' + text[brace:], "utf-8")
    changes = diff(
        audit_of(qemu(ENDPOINT), policy=load_policy(REPO / "dsl")),
        audit_of(qemu(ENDPOINT), policy=load_policy(copy)),
    )
    where = {c.offset for c in changes}
    # MSI at 0xd0 (14 bytes): its registers become hidden; its link leaves the chain.
    assert where and min(where) >= 0xC8 and max(where) <= 0xDD
    assert all(c.new.endswith("hidden/hidden") for c in changes if c.offset >= 0xD2)


def test_a_bad_tree_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(PolicyTreeError, match="not a directory"):
        load_policy(tmp_path / "missing")
    with pytest.raises(PolicyTreeError, match="neither"):
        load_policy(tmp_path)
    (tmp_path / "bad.pci").write_text("capability x id 0x100 { }\n", encoding="utf-8")
    with pytest.raises(PolicyTreeError, match=r"does not compile: .*bad\.pci:1:17: error"):
        load_policy(tmp_path)


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(repo), *args],
        check=True,
        capture_output=True,
        env={
            **os.environ,
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@t",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@t",
        },
    )


@needs_fixtures
@pytest.mark.skipif(shutil.which("git") is None, reason="no git here")
def test_git_revisions_as_policies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`REV:PATH` names a policy tree in the current directory's git repository, as git names
    a tree: a reviewer diffs a change without checking anything out."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    shutil.copytree(REPO / "dsl", repo / "dsl")
    git(repo, "add", "dsl")
    git(repo, "commit", "-q", "-m", "policy")
    changed_copy(tmp_path / "work")  # the changed prelude, copied over the tracked one
    shutil.copy(tmp_path / "work" / "dsl" / "prelude.pci", repo / "dsl" / "prelude.pci")
    git(repo, "commit", "-q", "-am", "special cycles writable")
    monkeypatch.chdir(repo)
    dump = str(qemu(ENDPOINT))
    assert main(["audit", "--diff", "HEAD~1:dsl", "HEAD:dsl", dump]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == [
        "0x004.3  command.special_cycles[3] ro/rw  ->  command.special_cycles[3] rw/rw"
    ]
    assert main(["audit", "--diff", "HEAD~1:dsl", str(REPO / "dsl"), dump]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == ["none"]
    # What is neither a directory nor a revision here is one line, as a bad directory is.
    for bad in (
        "HEAD~5:dsl",
        "HEAD:nothing",
        "--upload-pack=x:dsl",
        f"HEAD:{REPO / 'dsl'}",  # an absolute path is no tree of the revision
        "HEAD:dsl/../dsl",
        "HEAD:",
    ):
        with pytest.raises(PolicyTreeError, match=r"nor a git REV:PATH"):
            load_policy(Path(bad))
    # PATH is from the repository's root, as git reads REV:PATH, wherever the command runs.
    monkeypatch.chdir(repo / "dsl")
    assert main(["audit", "--diff", "HEAD~1:dsl", "HEAD:dsl", dump]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    # Compiled tables from a revision would be code run by importing them: refused.
    shutil.copytree(REPO / "generated", repo / "generated")
    git(repo, "add", "generated")
    git(repo, "commit", "-q", "-m", "tables")
    with pytest.raises(PolicyTreeError, match=r"only a dsl/ tree"):
        load_policy(Path("HEAD:generated"))
