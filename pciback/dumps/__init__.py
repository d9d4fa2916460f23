"""Reading and writing config-space dumps: raw binaries and pciutils' `lspci -x/-xxx/-xxxx` text.

A text dump is a header line per device (`00:03.0 Ethernet controller: ...`) followed by lines
`OFF: xx xx ...` of 16 bytes each; lspci -F reads the same format back.

pciback.dumps.device is a function backed by such bytes (SimDevice): the simulated host's
devices, and the copy on which the audit works out what a release restores. It sits here, below
both, so that the audit need not import the simulated host.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

CONFIG_SIZES = (64, 256, 4096)

_HEX_LINE = re.compile(r"^([0-9a-fA-F]{2,3}):((?:\s+[0-9a-fA-F]{2}){1,16})\s*$")
_DEVICE_LINE = re.compile(r"^(?:([0-9a-fA-F]{4}):)?([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])\s")


class DumpError(ValueError):
    """A dump that cannot be read; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class Dump:
    config: bytes
    address: str | None  # from the text header line, when there is one


def parse_lspci_text(text: str, source: str = "<text>") -> list[Dump]:
    """Every device of an `lspci -x`-style text dump, in order."""
    dumps: list[Dump] = []
    address: str | None = None
    data: dict[int, int] = {}

    def flush() -> None:
        if data:
            dumps.append(Dump(_assemble(data, source), address))

    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        if not line.strip():
            continue
        hexm = _HEX_LINE.match(line.strip())
        if hexm:
            base = int(hexm.group(1), 16)
            if base % 16:
                raise DumpError(f"{source}:{lineno}: offset {base:#x} is not a multiple of 16")
            for i, byte in enumerate(hexm.group(2).split()):
                data[base + i] = int(byte, 16)
            continue
        devm = _DEVICE_LINE.match(line)
        if devm:
            flush()
            data = {}
            dom, bus, dev, fn = devm.groups()
            address = f"{dom or '0000'}:{bus}:{dev}.{fn}".lower()
            continue
        raise DumpError(f"{source}:{lineno}: neither a device line nor a hex line: {line!r}")
    flush()
    if not dumps:
        raise DumpError(f"{source}: no config-space bytes found")
    return dumps


def _assemble(data: dict[int, int], source: str) -> bytes:
    top = max(data) + 1
    size = next((s for s in CONFIG_SIZES if top <= s), None)
    if size is None:
        raise DumpError(f"{source}: config space larger than 4096 bytes")
    out = bytearray(size)
    for off, val in data.items():
        out[off] = val
    return bytes(out)


def load_config(source: bytes | bytearray | str | Path) -> Dump:
    """Config bytes from raw bytes, a raw binary dump file, or an lspci text dump file."""
    if isinstance(source, bytes | bytearray):
        return Dump(validate_config(bytes(source), "<bytes>"), None)
    path = Path(source)
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise DumpError(f"{path}: cannot read: {exc.strerror}") from None
    if _looks_like_text(blob):
        dumps = parse_lspci_text(blob.decode("ascii"), str(path))
        if len(dumps) > 1:
            raise DumpError(f"{path}: holds {len(dumps)} devices; give one")
        return Dump(validate_config(dumps[0].config, str(path)), dumps[0].address)
    return Dump(validate_config(blob, str(path)), None)


def validate_config(blob: bytes, source: str) -> bytes:
    if len(blob) < 64 or len(blob) > 4096:
        raise DumpError(f"{source}: {len(blob)} bytes; a config space has 64 to 4096")
    # A partial dump (lspci -x gives 64 bytes) is padded with zeros to a whole space.
    size = next(s for s in CONFIG_SIZES if len(blob) <= s)
    return blob + bytes(size - len(blob))


def _looks_like_text(blob: bytes) -> bool:
    try:
        text = blob.decode("ascii")
    except UnicodeDecodeError:
        return False
    return bool(re.search(r"^[0-9a-fA-F]{2,3}:\s", text, re.MULTILINE))


def format_lspci(config: bytes, header: str) -> str:
    """`header` then the bytes as lspci prints them with -xxx (256 bytes) or -xxxx (4096)."""
    lines = [header]
    for base in range(0, len(config), 16):
        row = " ".join(f"{b:02x}" for b in config[base : base + 16])
        lines.append(f"{base:02x}: {row}")
    return "\n".join(lines) + "\n"
