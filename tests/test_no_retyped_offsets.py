"""No PCI register offset, capability ID or field mask typed by hand outside the policy.

The policy (dsl/) names every register and field once and the compiler emits those names
(generated/names.py): code that reads or writes a device itself imports them, and so do the
tests and benchmarks that check it. This test reads the source of pciback/ (but generated/ and
the compiler, which is where the names come from), tests/ and bench/ and fails on what would be
a second, hand-typed copy of them:

- a constant whose name says it is config-space layout (its name, or a `_`-joined prefix of it,
  is the policy's name of a block, layout, register, field or constant, or CAP / EXT / STD /
  CAPABILITY) bound to a value with an integer literal in it: `COMMAND = 0x04`,
  `MSIX_ENABLE = 1 << 15`, `_CAP_NAMES = {1: ..}`, `CAP_NEXT = 1`, `STD_START = 0x40`;
- an access at a literal offset: `read(0x0E, 1)`, `write(cap + 2, 2, v)`, `conf_read(a, 0x34, 1)`
  (the offset argument a literal, or a sum with a literal term; a byte into a named register,
  `COMMAND.offset + 1`, is the name's);
- a capability looked up by a literal ID: `capability(0x11)`, `find_extended(dev, 0x10)`;
- a byte of a config-space buffer at a literal offset: `config[0x34]`.

What the policy does not describe stays where it is, listed in ALLOWED with the reason. A test
whose offsets are not the generated names' to give is listed whole in ALLOWED_FILES: the
registers of its own inline policy, or the specification's layout typed independently of dsl/
so that the policy is checked against something else than itself.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pciback.generated import names

ROOT = Path(__file__).resolve().parents[1]
SCANNED = (ROOT / "pciback", ROOT / "tests", ROOT / "bench")
SKIPPED = ("pciback/generated", "pciback/compiler", "pciback/protocol/abi_prepared.py")

# Calls that take a config-space offset, and which positional argument it is.
OFFSET_ARGUMENT = {
    "read": 0,
    "write": 0,
    "conf_read": 1,
    "conf_write": 1,
    "_probe": 1,
    "_write_byte": 0,
}
# Calls that take a capability ID first.
ID_ARGUMENT = {
    "capability",
    "find_capability",
    "capability_offset",
    "extended_capability",
    "find_extended",
}
GENERIC_WORDS = frozenset({"CAP", "CAPS", "CAPABILITY", "EXT", "EXTENDED", "STD", "STANDARD"})

# (path, the name bound or the call's text): why it is not the policy's to name. The lists'
# links and bounds, an MSI-X table entry and a BAR's low bits are the policy's layouts.
# A test's access to bytes no policy describes (a vendor capability's body, a gap past the
# chain) on purpose: they have no name, and what happens to them is what the test checks.
_UNDESCRIBED = "bytes no policy describes, which the test reaches on purpose"
# Where a device a test builds byte by byte (or a dump the test knows) has its capabilities:
# the device's choice, no register (what is in them is spelt by the policy's names).
_PLACED = "where the test's device (hand-built, or a dump) has this capability: no register"
# What the values of an Enhanced Allocation entry's fields mean (the ECN's encodings): the
# policy names the fields (bar_equivalent, primary_properties), the sim reads their values.
_EA_VALUES = "the values an Enhanced Allocation field takes, not its layout: the policy names none"
ALLOWED: dict[tuple[str, str], str] = {
    ("pciback/protocol/abi.py", "AER_DETECTED"): "pcifront's AER op numbers: the Xen ABI",
    ("pciback/protocol/abi.py", "AER_RESUME"): "pcifront's AER op numbers: the Xen ABI",
    ("pciback/protocol/abi.py", "AER_MMIO"): "pcifront's AER op numbers: the Xen ABI",
    ("pciback/protocol/abi.py", "AER_SLOTRESET"): "pcifront's AER op numbers: the Xen ABI",
    ("pciback/protocol/interrupts.py", "MSI_MAX_VECTORS"): (
        "the most vectors the multiple-message encoding can ask for: a count, no layout"
    ),
    ("pciback/dumps/device.py", "MSI_ADDRESS"): "the x86 interrupt window: a value, no layout",
    **{
        ("pciback/dumps/device.py", name): _EA_VALUES
        for name in (
            "_EA_ROM",
            "_EA_BAR_INDEX",
            "_EA_MEMORY",
            "_EA_PREFETCHABLE",
            "_EA_IO",
            "_EA_BRIDGE_IO",
            "_EA_MEMORY_RESERVED",
        )
    },
    ("pciback/trace/format.py", "BAR_SLOTS"): "six BARs and the ROM: a count, no layout",
    # `version` became layout vocabulary with the AGP table's version register.
    ("pciback/trace/format.py", "VERSION"): "the trace file format's version, not config space",
    ("pciback/engine/snapshot.py", "VERSION"): "the saved view's format version, not config space",
    # Names that only look like layout (a word of them is a block's or register's name).
    ("tests/compiler/test_mutations.py", "MEMORY_LIMIT"): "the mutation child's address space",
    ("tests/protocol/test_linger.py", "CAP"): "the linger window's cap in ns, not config space",
    ("tests/protocol/test_neighbours.py", "CAP"): "the linger window's cap in ns, not config space",
    ("tests/trace/test_bad_files.py", "HEADER"): "a trace file's header record, not config space",
    ("tests/test_no_retyped_offsets.py", "OFFSET_ARGUMENT"): (
        "which argument of a scanned call is the offset: a position, no layout"
    ),
    ("tests/model/test_extended.py", "EXT_UNDESCRIBED"): (
        "an extended capability ID no table describes (none is assigned): the test's point"
    ),
    ("tests/model/test_extended.py", "space.write(pos + 2, 2, 65535)"): (
        "the upper half of an extended capability's header, version and next: the chain's link"
    ),
    ("tests/model/test_extended.py", "space.read(pos + 4, 4)"): _UNDESCRIBED,
    ("tests/model/test_extended.py", "space.write(pos + 4, 2, 1)"): _UNDESCRIBED,
    ("tests/control/test_cli_messages.py", "PM"): _PLACED,
    **{("tests/protocol/test_msi_power_state.py", cap): _PLACED for cap in ("PM", "MSI", "MSIX")},
    ("bench/bench_state_disk.py", "MSI_CAP"): _PLACED,
    ("tests/control/test_release_restore.py", "PM"): _PLACED,
    ("tests/control/test_release_restore.py", "device.config[PMCSR + 1]"): (
        "PMCSR's high byte, where PME status is (PMCSR itself is the dump's PM + PMCSR.offset)"
    ),
    ("tests/model/test_pm_dump.py", "PM"): _PLACED,
    ("tests/model/test_msi.py", "space.write(pos + length - 2, 2, 65535)"): (
        "the last word of an MSI layout whose length is no dword multiple: per layout, no name"
    ),
    ("tests/protocol/simconfig.py", "PM_CAP"): _PLACED,
    ("tests/protocol/simconfig.py", "MSI_CAP"): _PLACED,
    ("tests/protocol/simconfig.py", "MSIX_CAP"): _PLACED,
    ("tests/protocol/simconfig.py", "MSIX_TABLE_SIZE"): "the built table's entries: a count",
    ("tests/protocol/simconfig.py", "MSI_CAPABLE_VECTORS"): "the built MSI's vectors: a count",
    ("tests/protocol/simconfig.py", "INTERRUPT_LINE"): "the built function's IRQ line: a value",
    ("tests/protocol/test_simhost.py", "guest.conf_write(ADDR, 192, 4, 305419896)"): _UNDESCRIBED,
    **{
        ("tests/model/test_permissive.py", call): _UNDESCRIBED
        for call in (
            "space.write(vendor + 4, 4, 287454020)",
            "space.write(vendor + 8, 4, 1432778632)",
            "space.write(vendor + 9, 1, 90)",
            "space.write(vendor + 4, 4, 51966)",
            "space.write(72 + 64, 4, 1)",
            "guest.conf_write(ADDRESS, vendor + 4, 2, 4660)",
            "host.physical(ADDRESS).read(vendor + 4, 2)",
        )
    },
}

# Tests whose literal offsets are the registers of the test's own inline policy (compiled from
# a string in the test), not the policy's: the generated names do not describe them.
_INLINE = "the registers of the test's own inline policy, not the policy's"
# Tests that check the policy against the specification: their offsets and masks are typed from
# the specification on purpose, independently of dsl/, so that a wrong DSL line fails them.
_ORACLE = "the specification's layout typed independently of dsl/, to check the policy against"
ALLOWED_FILES: dict[str, str] = {
    "tests/model/test_described_caps.py": _ORACLE,
    "tests/model/test_other_caps.py": "capabilities no table describes, by design: no names",
    "tests/model/test_fabric_caps.py": _ORACLE,
    "tests/model/test_lane_equalization.py": _ORACLE,
    "tests/model/test_enhanced_allocation.py": _ORACLE,
    "tests/model/test_pcix_ecc.py": _ORACLE,
    "tests/engine/test_reference_model.py": _INLINE
    + " (random layouts, and two made-up registers)",
    "tests/engine/test_merge_rules.py": _INLINE,
    "tests/engine/test_straddling.py": _INLINE,
    "tests/engine/test_capability_fields.py": _INLINE,
    "tests/engine/test_capability_variants.py": _INLINE,
}


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    what: str
    key: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


def vocabulary() -> tuple[frozenset[str], frozenset[str]]:
    """(prefix words, whole names): block and register names are words a constant's name may
    start with; a field's name counts as the whole name, and only one of two words or more
    (BUS_MASTER, INTX_DISABLE; not ERROR or VERSION, which name too much else)."""
    prefixes: set[str] = set(GENERIC_WORDS)
    whole: set[str] = set()
    for space_name in names.__all__:
        space = getattr(names, space_name)
        if not inspect.isclass(space):
            continue
        prefixes.add(space_name)
        for reg_name, reg in vars(space).items():
            if inspect.isclass(reg):
                prefixes.add(reg_name)
                whole.update(n for n in vars(reg) if n.isupper() and "_" in n.strip("_"))
            elif type(reg) is int and reg_name.isupper() and "_" in reg_name.strip("_"):
                # A layout's constant (CAPABILITY_LISTS.STANDARD_START, MEMORY_BAR.TYPE_64)
                # or the policy's, as a field's name.
                whole.add(reg_name)
    return frozenset(prefixes), frozenset(whole)


def layout_name(name: str, prefixes: frozenset[str], whole: frozenset[str]) -> bool:
    bare = name.lstrip("_")
    if not bare.isupper():
        return False
    if bare in whole:
        return True
    words = bare.split("_")
    return any("_".join(words[:n]) in prefixes for n in range(1, len(words) + 1))


def int_expression(node: ast.AST) -> bool:
    """Integer literals and operators only: `0x04`, `1 << 15`, `0x2 | 0x4`."""
    if isinstance(node, ast.Constant):
        return type(node.value) is int
    if isinstance(node, ast.UnaryOp):
        return int_expression(node.operand)
    if isinstance(node, ast.BinOp):
        return int_expression(node.left) and int_expression(node.right)
    return False


def typed_value(node: ast.AST) -> bool:
    """An integer typed here, alone or in a tuple, list, set or dict of them, or given to a
    call (`Bits(mask=0x0001, shift=0, width=1)`)."""
    if isinstance(node, ast.Call):
        return any(typed_value(a) for a in [*node.args, *(k.value for k in node.keywords)])
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return any(typed_value(e) for e in node.elts)
    if isinstance(node, ast.Dict):
        return any(typed_value(e) for e in [*node.keys, *node.values] if e is not None)
    return int_expression(node)


def named_offset(node: ast.AST) -> bool:
    """A register's offset by its name: `COMMAND.offset`, `MSI.DATA.offset(control_addr64=1)`."""
    if isinstance(node, ast.Call):
        node = node.func
    return isinstance(node, ast.Attribute) and node.attr == "offset"


def literal_offset(node: ast.AST) -> bool:
    """A literal, or a sum or difference with a literal term (`cap + 2`), or a choice of those.
    A byte counted from a named register (`COMMAND.offset + 1`) is the name's, not typed."""
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub):
        if named_offset(node.left) and isinstance(node.right, ast.Constant):
            return False
        return literal_offset(node.left) or literal_offset(node.right)
    if isinstance(node, ast.IfExp):
        return literal_offset(node.body) or literal_offset(node.orelse)
    return False


def _callee(node: ast.Call) -> str:
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    if isinstance(node.func, ast.Name):
        return node.func.id
    return ""


def _is_config(node: ast.AST) -> bool:
    name = node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", "")
    return isinstance(name, str) and "config" in name.lower()


def findings(path: Path, text: str) -> Iterator[Finding]:
    rel = path.relative_to(ROOT).as_posix()
    prefixes, whole = vocabulary()
    for node in ast.walk(ast.parse(text, rel)):
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if node.value is None or not typed_value(node.value):
                continue
            for target in targets:
                elts = target.elts if isinstance(target, ast.Tuple) else [target]
                for elt in elts:
                    if isinstance(elt, ast.Name) and layout_name(elt.id, prefixes, whole):
                        yield Finding(
                            rel, node.lineno, f"{elt.id} = {ast.unparse(node.value)}", elt.id
                        )
        elif isinstance(node, ast.Call):
            callee = _callee(node)
            at = OFFSET_ARGUMENT.get(callee)
            if at is not None and len(node.args) >= at + 2 and literal_offset(node.args[at]):
                yield Finding(rel, node.lineno, ast.unparse(node), ast.unparse(node))
            if callee in ID_ARGUMENT and node.args and int_expression(node.args[0]):
                yield Finding(rel, node.lineno, ast.unparse(node), ast.unparse(node))
        elif isinstance(node, ast.Subscript) and _is_config(node.value):
            index = node.slice
            if isinstance(index, ast.Slice):  # config[at : at + 4]: a literal bound alone
                typed = any(isinstance(b, ast.Constant) for b in (index.lower, index.upper))
            else:
                typed = literal_offset(index)
            if typed:
                yield Finding(rel, node.lineno, ast.unparse(node), ast.unparse(node))


def scanned_files() -> Iterator[Path]:
    for top in SCANNED:
        for path in sorted(top.rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if not rel.startswith(SKIPPED):
                yield path


def all_findings() -> list[Finding]:
    found: list[Finding] = []
    for path in scanned_files():
        found.extend(findings(path, path.read_text(encoding="utf-8")))
    return found


def allowed(f: Finding) -> bool:
    return (f.path, f.key) in ALLOWED or f.path in ALLOWED_FILES


def test_no_offset_or_capability_id_is_typed_outside_the_policy() -> None:
    found = [f for f in all_findings() if not allowed(f)]
    assert not found, (
        "config-space layout typed by hand: import it from pciback.generated.names"
        " (name it in dsl/ if the policy lacks it):\n" + "\n".join(map(str, found))
    )


def test_every_allowance_is_still_needed() -> None:
    found = all_findings()
    used = {(f.path, f.key) for f in found}
    assert not set(ALLOWED) - used
    assert not set(ALLOWED_FILES) - {f.path for f in found}


def test_a_layout_typed_again_is_caught() -> None:
    """What the policy's layouts name, typed by hand as it was before they did (and a layout's
    own names typed): each is a finding, wherever in pciback/ it would stand."""
    retyped = {
        "CAP_ID, CAP_NEXT = 0, 1": {"CAP_ID", "CAP_NEXT"},
        "STD_START, STD_END = 0x40, 0x100": {"STD_START", "STD_END"},
        "EXT_NEXT = Bits(mask=0xFFF00000, shift=20, width=12)": {"EXT_NEXT"},
        "EXT_LINK = 4": {"EXT_LINK"},
        "MSIX_ENTRY_SIZE = 16": {"MSIX_ENTRY_SIZE"},
        "_ADDRESS_MASKS = {1: 0xFFFFFFFC}": {"_ADDRESS_MASKS"},
        "STANDARD_START = 0x40": {"STANDARD_START"},
        "TYPE_64 = 2": {"TYPE_64"},
        "VECTOR_CONTROL = 12": {"VECTOR_CONTROL"},
    }
    for line, keys in retyped.items():
        found = {f.key for f in findings(ROOT / "pciback" / "engine" / "chain.py", line)}
        assert found == keys, line
