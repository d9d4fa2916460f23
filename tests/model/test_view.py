"""`pciback view`: the guest view of a dump as text lspci decodes, or as raw bytes; and pciutils'
own decoder agreeing that the guest sees the device's capabilities minus the hidden ones."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from pciback.cli import build_parser
from pciback.cli.view import guest_view
from pciback.dumps import format_lspci, parse_lspci_text
from pciback.generated.names import COMMON_HEADER, TYPE0
from pciback.sim.device import SimDevice

from .builders import (
    ADDRESS,
    CAP_MSI,
    CAP_MSIX,
    CAP_PCIE,
    CAP_PM,
    CAP_VENDOR,
    EXT_AER,
    EXT_DSN,
    ConfigBuilder,
    chain,
    endpoint,
    ext_chain,
    fixture_files,
)

LSPCI = shutil.which("lspci")
STATUS = COMMON_HEADER.STATUS.offset  # its low byte holds the capability-list bit
CAPABILITIES_LIST = COMMON_HEADER.STATUS.CAPABILITIES_LIST.mask
CAPABILITY_LINE = re.compile(r"^\s*Capabilities: \[([0-9a-f]+)(?: v\d+)?\] ([^:,\n]*)", re.M)


def rich_dump(tmp_path: Path) -> Path:
    b = endpoint(size=4096)
    b.pm()
    b.msi(addr64=True, masking=True)
    b.msix()
    b.pcie()
    b.vpd()
    b.vendor_cap()
    b.aer()
    b.ext_cap(EXT_DSN, bytes(range(8)))
    path = tmp_path / "rich.txt"
    path.write_text(format_lspci(b.build(), "0000:03:00.0 Ethernet controller: rich"))
    return path


def bridge_dump(tmp_path: Path) -> Path:
    """A PCIe root port: type-1 header, PM, MSI, subsystem IDs (SSVID), PCIe v2 with slot and
    root registers, AER."""
    b = ConfigBuilder(header_type=1, class_code=0x060400, size=4096, command=0x0407)
    b.poke(0x18, 4, 0x00020100)
    b.pm()
    b.msi()
    b.cap(0x0D, struct.pack("<HHH", 0, 0x8086, 0x7270))
    b.pcie(port_type=4)
    b.aer()
    path = tmp_path / "bridge.bin"
    path.write_bytes(b.build())
    return path


def main(argv: list[str]) -> int:
    """`pciback` with only this command loaded: the other commands' modules are not under test."""
    args = build_parser(("pciback.cli.view",)).parse_args(argv)
    status = args.func(args)
    assert isinstance(status, int)
    return status


def run_view(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(["view", *args])
    out = capsys.readouterr()
    return status, out.out, out.err


def test_text_output_is_a_dump_of_what_the_guest_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dump = rich_dump(tmp_path)
    status, text, err = run_view(capsys, str(dump))
    assert status == 0 and err == ""
    [parsed] = parse_lspci_text(text)
    expected, space = guest_view(dump)
    assert parsed.config == expected and parsed.address == "0000:03:00.0"
    assert len(expected) == 4096
    assert [i for _, i in chain(space)] == [CAP_PM, CAP_MSI, CAP_MSIX, CAP_PCIE, 0x03, CAP_VENDOR]


def test_binary_output_and_an_output_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dump = rich_dump(tmp_path)
    out = tmp_path / "guest.bin"
    status, text, _ = run_view(capsys, str(dump), "--format", "binary", "-o", str(out))
    assert status == 0 and text == ""
    assert out.read_bytes() == guest_view(dump)[0]


def test_the_host_irq_is_the_interrupt_line_the_guest_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A dump taken in dom0 holds the firmware's interrupt line; the guest reads dom0's IRQ."""
    dump = rich_dump(tmp_path)
    status, text, _ = run_view(capsys, str(dump), "--host-irq", "23")
    [parsed] = parse_lspci_text(text)
    line, pin = TYPE0.INTERRUPT_LINE.offset, TYPE0.INTERRUPT_PIN.offset
    assert status == 0 and parsed.config[line] == 23 and parsed.config[pin] == 1
    assert parsed.config[:line] == guest_view(dump)[0][:line]
    with pytest.raises(SystemExit):
        main(["view", str(dump), "--host-irq", "-1"])


def test_hidden_capabilities_by_number_and_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dump = rich_dump(tmp_path)
    args = ["--hide-cap", "msi", "--hide-cap", "0x11", "--hide-ext-cap", "aer", "-o"]
    status, _, _ = run_view(capsys, str(dump), *args, str(tmp_path / "g.txt"))
    assert status == 0
    [parsed] = parse_lspci_text((tmp_path / "g.txt").read_text())
    shown, space = guest_view(parsed.config)
    assert shown == parsed.config  # the view of a view is itself
    assert [i for _, i in chain(space)] == [CAP_PM, CAP_PCIE, 0x03, CAP_VENDOR]
    assert [i for _, i in ext_chain(space)] == [EXT_DSN]


def test_a_runtime_quirk_and_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dump = rich_dump(tmp_path)
    status, _, _ = run_view(capsys, str(dump), "--quirk", "fc:4:ffffffff")
    assert status == 0
    status, _, err = run_view(capsys, str(dump), "--quirk", "fc:3:ff")
    assert status == 2 and "size 3" in err
    (tmp_path / "junk.txt").write_text("00: zz\n")
    status, _, err = run_view(capsys, str(tmp_path / "junk.txt"))
    assert status == 1 and "junk.txt" in err
    with pytest.raises(SystemExit):
        main(["view", str(dump), "--hide-cap", "0x100"])


def test_problems_of_the_device_go_to_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    b = endpoint()
    b.msix(table=(5, 0))
    path = tmp_path / "bad.bin"
    path.write_bytes(b.build())
    status, text, err = run_view(capsys, str(path))
    assert status == 0 and "MSI-X" in err and "hidden" in err
    assert not parse_lspci_text(text)[0].config[STATUS] & CAPABILITIES_LIST


def test_a_64_byte_dump_views_without_its_capabilities(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    b = endpoint()
    b.pm()
    short = tmp_path / "short.txt"
    short.write_text(format_lspci(b.build()[:64], "03:00.0 Ethernet controller: lspci -x"))
    status, text, err = run_view(capsys, str(short))
    assert status == 0 and err.count("beyond the 64 bytes") == 1
    [parsed] = parse_lspci_text(text)
    assert len(parsed.config) == 64
    pointer = TYPE0.CAPABILITIES_POINTER.offset
    assert parsed.config[pointer] == 0 and not parsed.config[STATUS] & CAPABILITIES_LIST


# -- pciutils' decoder -------------------------------------------------------------------------
def lspci_capabilities(path: Path) -> list[tuple[int, str]]:
    assert LSPCI is not None
    result = subprocess.run(
        [LSPCI, "-F", str(path), "-vvv"], capture_output=True, text=True, timeout=30, check=True
    )
    found = [(int(off, 16), name.strip()) for off, name in CAPABILITY_LINE.findall(result.stdout)]
    return [c for c in found if c[1] != "Null"]  # ID 0: the head of a hidden extended list


def cases() -> list[tuple[str, Path | None, tuple[int, ...], tuple[int, ...]]]:
    out: list[tuple[str, Path | None, tuple[int, ...], tuple[int, ...]]] = []
    for path in fixture_files():
        out.append((path.name, path, (), ()))
        if SimDevice(ADDRESS, path).find_capability(CAP_MSIX) is not None:
            out.append((f"{path.name}-hide-msix", path, (CAP_MSIX,), ()))
    out.append(("bridge", Path("bridge"), (), ()))
    out.append(("bridge-hide-msi", Path("bridge"), (CAP_MSI,), ()))
    out.append(("rich", None, (), ()))
    out.append(("rich-hide-pm-msi-aer", None, (CAP_PM, CAP_MSI), (EXT_AER,)))
    out.append(("rich-hide-pcie-dsn", None, (CAP_PCIE,), (EXT_DSN,)))
    return out


@pytest.mark.skipif(LSPCI is None, reason="pciutils' lspci is not installed")
@pytest.mark.parametrize(("name", "path", "hide", "hide_ext"), cases(), ids=[c[0] for c in cases()])
def test_lspci_decodes_the_same_capabilities_minus_the_hidden(
    tmp_path: Path, name: str, path: Path | None, hide: tuple[int, ...], hide_ext: tuple[int, ...]
) -> None:
    if path == Path("bridge"):
        source = bridge_dump(tmp_path)
    else:
        source = path if path is not None else rich_dump(tmp_path)
    physical = tmp_path / "physical.txt"
    if source.suffix == ".txt":
        config = parse_lspci_text(source.read_text())[0].config
    else:
        config = source.read_bytes()
    physical.write_text(format_lspci(config, "0000:03:00.0 physical"))
    view, space = guest_view(config, hide=hide, hide_extended=hide_ext)
    guest = tmp_path / "guest.txt"
    guest.write_text(format_lspci(view, "0000:03:00.0 guest"))

    placed = space.standard + space.extended
    hidden_at = {p.found.offset for p in placed if p.hidden}
    before = lspci_capabilities(physical)
    after = lspci_capabilities(guest)
    assert len(before) == len(placed)  # the decoder sees what the engine found
    # A decoder reads extended space only behind a PCI Express capability (so does a guest
    # kernel): hiding that one takes the extended capabilities out of sight too.
    pcie = space.capability_offset(CAP_PCIE) is not None
    assert after == [c for c in before if c[0] not in hidden_at and (c[0] < 0x100 or pcie)]
    if hide or hide_ext:
        assert len(after) < len(before)
