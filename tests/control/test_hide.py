"""The xen-pciback.hide syntax, the slot strings and the quirk strings."""

from __future__ import annotations

import pytest

from pciback.control.hide import (
    MAX_TEXT,
    HidePattern,
    HideSyntaxError,
    hides,
    parse_device,
    parse_hide,
    parse_quirk,
    parse_slot,
)


def test_full_and_short_forms() -> None:
    patterns = parse_hide("(0000:03:00.0)(04:1f.7)")
    assert patterns == [HidePattern(0, 3, 0, 0), HidePattern(0, 4, 0x1F, 7)]
    assert patterns[0].matches("0000:03:00.0")
    assert not patterns[0].matches("0000:03:00.1")
    assert patterns[1].matches("0000:04:1f.7")


def test_short_form_means_domain_zero() -> None:
    (p,) = parse_hide("(04:00.1)")
    assert p.matches("0000:04:00.1")
    assert not p.matches("0001:04:00.1")


def test_nonzero_domain_and_case() -> None:
    (p,) = parse_hide("(AbCd:Ff:1A.3)")
    assert p == HidePattern(0xABCD, 0xFF, 0x1A, 3)
    assert p.matches("abcd:ff:1a.3")


def test_function_wildcard() -> None:
    (p,) = parse_hide("(0000:04:00.*)")
    assert [p.matches(f"0000:04:00.{f}") for f in range(8)] == [True] * 8
    assert not p.matches("0000:04:01.0")
    assert len(list(p.addresses())) == 8
    (q,) = parse_hide("(04:02.*)")
    assert q == HidePattern(0, 4, 2, None)


def test_slot_wildcard_covers_the_bus() -> None:
    full, short = parse_hide("(0002:05:*.*) (06:*.*)")
    assert full == HidePattern(2, 5, None, None)
    assert short == HidePattern(0, 6, None, None)
    assert full.matches("0002:05:1f.7")
    assert not full.matches("0002:06:00.0")
    assert len(list(short.addresses())) == 256


def test_whitespace_between_groups_and_empty() -> None:
    assert parse_hide("") == []
    assert parse_hide("  \n") == []
    assert len(parse_hide(" (00:01.0)  ( 00:02.0)\n")) == 2


def test_hides_helper_and_bad_addresses_never_match() -> None:
    patterns = parse_hide("(0000:03:00.0)(04:00.*)")
    assert hides(patterns, "0000:04:00.5")
    assert not hides(patterns, "0000:05:00.0")
    assert not hides(patterns, "garbage")
    assert not hides(patterns, "0000:04:00.9")
    assert not hides(patterns, "0000:04:20.0")


@pytest.mark.parametrize(
    ("text", "column", "fragment"),
    [
        ("0000:03:00.0", 1, "'('"),
        ("(0000:03:00.0", 14, "')'"),
        ("(0000:03:00.0)x", 15, "'('"),
        ("(0000:03:00.8)", 13, "function"),
        ("(0000:03:20.0)", 10, "device"),
        ("(10000:03:00.0)", 2, "domain or bus"),
        ("(0000:100:00.0)", 7, "bus"),
        ("(100:00.0)", 2, "bus"),
        ("(1:0:0)", 7, "'.'"),
        ("(0000:03:*.0)", 12, "'*'"),
        ("(0000:03:00.-1)", 13, "function"),
        ("(0x3:00.0)", 3, "':'"),
        ("()", 2, "domain or bus"),
        ("(000000000:00.0)", 2, "digits"),
        ("(03:00.0)(", 11, "domain or bus"),
    ],
)
def test_invalid_hide_names_column_and_form(text: str, column: int, fragment: str) -> None:
    with pytest.raises(HideSyntaxError) as info:
        parse_hide(text)
    assert info.value.column == column, str(info.value)
    assert fragment in str(info.value)
    assert "(DDDD:BB:DD.F) or (BB:DD.F)" in str(info.value)


def test_oversized_text_refused() -> None:
    with pytest.raises(HideSyntaxError, match="longer"):
        parse_hide("(00:00.0)" * (MAX_TEXT // 9 + 1))


def test_slot_strings() -> None:
    assert parse_slot("0000:03:00.0\n") == HidePattern(0, 3, 0, 0)
    assert parse_slot("03:00.*") == HidePattern(0, 3, 0, None)
    assert parse_slot("0001:03:*.*") == HidePattern(1, 3, None, None)
    with pytest.raises(HideSyntaxError) as info:
        parse_slot("(03:00.0)")
    assert info.value.column == 1
    with pytest.raises(HideSyntaxError):
        parse_slot("03:00.0 junk")


def test_device_strings_refuse_wildcards() -> None:
    assert parse_device("3:0.1") == "0000:03:00.1"
    with pytest.raises(HideSyntaxError, match="wildcards"):
        parse_device("03:00.*")


def test_quirk_strings() -> None:
    q = parse_quirk("0000:03:00.0-40:4:ffff0000")
    assert (q.address, q.offset, q.size, q.mask) == ("0000:03:00.0", 0x40, 4, 0xFFFF0000)
    assert parse_quirk("03:00.0-3e:2:ff\n").address == "0000:03:00.0"
    for bad, fragment in [
        ("03:00.0-1000:4:0", "register"),
        ("03:00.0-40:3:0", "size"),
        ("03:00.0-41:2:0", "aligned"),
        ("03:00.0-40:1:100", "mask"),
        ("03:00.*-40:1:1", "wildcards"),
        ("03:00.0:40:1:1", "'-'"),
    ]:
        with pytest.raises(HideSyntaxError, match=fragment):
            parse_quirk(bad)
