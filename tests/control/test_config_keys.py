"""Configuration errors name the key (with its section) and suggest the key meant; the README's
table of keys is held to the code, so that neither can drift from the other."""

from __future__ import annotations

import re
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pciback.daemon import config as config_module
from pciback.daemon.config import _KEYS, Config, ConfigError, load_config, parse_config
from pciback.toolstack.attach import DEFAULT_TIMEOUT
from pciback.xen.environment import DEFAULT_LINGER_NS

README = Path(__file__).resolve().parents[2] / "README.md"
ROW = re.compile(r"^\| `\[?([a-z_.]+)\]?` \| (.+?) \| (.+) \|$")


def readme_rows() -> dict[str, str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("### Configuration keys", 1)[1].split("\n#", 1)[0]
    rows = {}
    for line in section.splitlines():
        match = ROW.match(line)
        if match:
            rows[match.group(1)] = match.group(2)
    return rows


def nested(key: str, value: Any) -> dict[str, Any]:
    """`a.b` = v as TOML nests it: {"a": {"b": v}}."""
    head, _, rest = key.partition(".")
    return {head: nested(rest, value) if rest else value}


def effective(cfg: Config) -> Config:
    """What the daemon runs with: None stands for a default the daemon fills in."""
    timeout = DEFAULT_TIMEOUT if cfg.toolstack_timeout_s is None else cfg.toolstack_timeout_s
    return replace(cfg, toolstack_timeout_s=timeout)


def test_readme_lists_every_key_and_no_other() -> None:
    rows = readme_rows()
    assert set(rows) == (_KEYS - {"sim"}) | {"sim.devices"}
    doc = config_module.__doc__ or ""
    assert all(key.split(".")[-1] in doc for key in rows)  # the docstring's sample too


def test_readme_defaults_are_the_code_defaults() -> None:
    """Writing the documented default changes nothing; a computed default is in italics."""
    absent = effective(parse_config({}))
    checked = 0
    for key, default in readme_rows().items():
        if default.startswith("_") and default.endswith("_"):
            continue
        literal = re.fullmatch(r"`(.+)`", default)
        assert literal, f"{key}: default {default!r} is neither `TOML` nor _computed_"
        value = tomllib.loads(f"x = {literal.group(1)}")["x"]
        assert effective(parse_config(nested(key, value))) == absent, key
        checked += 1
    assert checked >= 12
    linger = readme_rows()["op_linger_us"]
    assert f"{DEFAULT_LINGER_NS // 1000} on xen" in linger


def test_a_wrong_default_in_the_table_would_be_caught() -> None:
    """The check above can fail: a default other than the code's changes the config."""
    absent = effective(parse_config({}))
    for key, value in (
        ("topology", "passthrough"),
        ("toolstack_timeout_s", 11),
        ("hide", "(1:0.0)"),
    ):
        assert effective(parse_config({key: value})) != absent, key


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("state_dri = 'x'", "unknown key(s): state_dri (did you mean state_dir?)"),
        ("log_levle = 'info'", "log_levle (did you mean log_level?)"),
        ("colour = 1", "unknown key(s): colour"),
        ("[sim]\ndevcies = {}", "[sim]: unknown key(s): devcies (did you mean devices?)"),
        ("backend = 'xne'", "backend = 'xne': expected one of sim, xen (did you mean xen?)"),
        ('hide = "(03:00.0"', "hide = '(03:00.0': column 9"),
        ('permissive = ["03:00.0", "03:00.*"]', "permissive[1] = '03:00.*': column 1: wildcards"),
        ('allow_interrupt_control = ["zz"]', "allow_interrupt_control[0] = 'zz': column 1"),
        ('quirks = ["03:00.0-41:2:1"]', "quirks[0] = '03:00.0-41:2:1': column 9: register 0x41"),
        ('[sim.devices]\n"03:00.9" = "a.bin"', "[sim.devices] '03:00.9': column"),
        ('[sim.devices]\n"03:00.0" = 1', "[sim.devices] '03:00.0': expected a dump file"),
        ("sim = 1", "sim: expected a table"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "pciback.toml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message == f"{path}: {message.split(': ', 1)[1]}" and "\n" not in message
    assert expected in message


def test_suggestions_stay_short_for_hostile_keys() -> None:
    data = {f"k{'x' * 5000}{i}": 1 for i in range(100)}
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert len(str(info.value)) < 1000
