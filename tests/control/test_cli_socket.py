"""The CLI finds the daemon's control socket without `--socket`: from `--config FILE`, from
$PCIBACK_SOCKET or $PCIBACK_CONFIG, or the default state directory; `--socket` and `--config`
work before the subcommand too; and when nothing answers, one line says what was tried."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pciback.backend import Daemon
from pciback.cli import main
from pciback.cli import socket as cli_socket
from pciback.cli.socket import SocketNotFound, find_socket
from pciback.daemon.config import load_config
from pciback.sim.environment import SimEnvironment

from .harness import DEVICES, NET, RNG


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PCIBACK_SOCKET", raising=False)
    monkeypatch.delenv("PCIBACK_CONFIG", raising=False)


def write_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "pciback.toml"
    path.write_text(f'state_dir = "state"\nhide = "({NET})({RNG})"\nlog_level = "error"\n{extra}')
    return path


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Path]:
    """A daemon started from a configuration file; yields that file."""
    path = write_config(tmp_path)
    daemon = Daemon(load_config(path), SimEnvironment.from_dumps(DEVICES))
    daemon.start()
    try:
        yield path
    finally:
        daemon.stop()


def test_sources_in_order(tmp_path: Path) -> None:
    config = str(write_config(tmp_path))
    other = tmp_path / "other"
    other.mkdir()
    other_config = str(write_config(other, 'socket = "/run/other.sock"\n'))
    env = {"PCIBACK_SOCKET": "/env.sock", "PCIBACK_CONFIG": other_config}
    assert find_socket("/s.sock", config, env).path == Path("/s.sock")
    assert find_socket(None, config, env).path == tmp_path / "state" / "control.sock"
    assert find_socket(None, None, env).path == Path("/env.sock")
    del env["PCIBACK_SOCKET"]
    found = find_socket(None, None, env)
    assert (found.path, found.origin) == (Path("/run/other.sock"), "$PCIBACK_CONFIG")
    found = find_socket(None, None, {})
    assert found.path == Path("/var/lib/pciback/control.sock")
    assert "$PCIBACK_SOCKET and $PCIBACK_CONFIG unset" in found.origin


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("persist = false\n", "persist = false: it has no control socket"),
        ('state_dir = "x"\nstate_dri = "y"\n', "did you mean state_dir"),
    ],
)
def test_a_config_without_a_socket_is_named(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(SocketNotFound) as info:
        find_socket(None, str(path), {})
    assert str(info.value).startswith("--config: ") and fragment in str(info.value)
    with pytest.raises(SocketNotFound, match=r"^\$PCIBACK_CONFIG: .*bad\.toml"):
        find_socket(None, None, {"PCIBACK_CONFIG": str(path)})


def test_global_and_subcommand_options(
    running: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock = str(running.parent / "state" / "control.sock")
    for argv in (
        ["--socket", sock, "slot", "list"],
        ["slot", "list", "--socket", sock],
        ["--config", str(running), "slot", "list"],
        ["slot", "list", "--config", str(running)],
        # the subcommand's own option wins over the global one
        ["--socket", "/nonexistent.sock", "slot", "list", "--socket", sock],
    ):
        assert main(argv) == 0, argv
        assert capsys.readouterr().out.split() == [NET, RNG]
    monkeypatch.setenv("PCIBACK_CONFIG", str(running))
    assert main(["assignable-list"]) == 0
    assert capsys.readouterr().out.split() == [NET, RNG]
    monkeypatch.setenv("PCIBACK_SOCKET", sock)
    monkeypatch.setenv("PCIBACK_CONFIG", "/nonexistent.toml")  # the socket variable comes first
    assert main(["list", "--json"]) == 0
    assert NET in capsys.readouterr().out


def test_nothing_found_is_one_line_naming_what_was_tried(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_socket, "DEFAULT_SOCKET", tmp_path / "none" / "control.sock")
    assert main(["slot", "list"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"cannot reach the daemon at {tmp_path}/none/control.sock" in err
    assert "no --socket, no --config, $PCIBACK_SOCKET and $PCIBACK_CONFIG unset" in err
    monkeypatch.setenv("PCIBACK_CONFIG", str(tmp_path / "missing.toml"))
    assert main(["permissive", "list"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("pciback: no control socket: $PCIBACK_CONFIG: ")
    assert "missing.toml" in err
    monkeypatch.setenv("PCIBACK_SOCKET", str(tmp_path / "gone.sock"))
    assert main(["audit", NET]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "(socket from $PCIBACK_SOCKET)" in err


def test_the_daemon_takes_its_configuration_the_same_ways(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["daemon"]) == 2
    assert capsys.readouterr().err == (
        "pciback daemon: no configuration: --config FILE or $PCIBACK_CONFIG\n"
    )
    bad = tmp_path / "bad.toml"
    bad.write_text("state_dri = 'x'\n")
    # Each way reaches the file: its error (one line, the key and a suggestion) says so.
    for argv, env in ((["--config", str(bad), "daemon"], None), (["daemon"], str(bad))):
        if env is not None:
            monkeypatch.setenv("PCIBACK_CONFIG", env)
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err == f"pciback: {bad}: unknown key(s): state_dri (did you mean state_dir?)\n"
