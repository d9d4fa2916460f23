"""generated/names.py: the policy's names, the same registers and fields as the tables."""

from __future__ import annotations

import inspect

from pciback.compiler.emit import names_constant
from pciback.generated import MODULES, names
from pciback.tables import Bits, BlockKind, Register


def _namespace(name: str) -> type:
    space = getattr(names, names_constant(name))
    assert inspect.isclass(space)
    return space


def _groups() -> list[type]:
    """The register groups' spaces (`registers NAME` in the policy)."""
    return [
        space
        for space in vars(names).values()
        if inspect.isclass(space) and (space.__doc__ or "").startswith("registers ")
    ]


def _check_register(space: type, reg: Register) -> None:
    named = getattr(space, names_constant(reg.name))
    assert named.width == reg.width
    if isinstance(reg.offset, int):
        assert named.offset == reg.offset
    else:
        assert callable(named.offset)  # moves with device fields: a function of them
    declared = {n for n in vars(named) if n.isupper()}
    assert declared == {names_constant(f.name) for f in reg.fields if f.name != "_"}
    for fld in reg.fields:
        if fld.name == "_":
            continue
        bits = getattr(named, names_constant(fld.name))
        assert isinstance(bits, Bits)
        assert (bits.mask, bits.shift) == (fld.mask, fld.shift)
        assert bits.mask == ((1 << bits.width) - 1) << bits.shift


def test_every_block_register_and_field_is_named_as_the_tables_have_it() -> None:
    blocks = 0
    for module in MODULES:
        for block in module.blocks:
            blocks += 1
            space = _namespace(block.name)
            if block.kind is BlockKind.HEADER:
                assert space.header_type == block.ident  # type: ignore[attr-defined]
            elif block.kind is not BlockKind.QUIRK:
                assert space.id == block.ident  # type: ignore[attr-defined]
            if isinstance(block.length, int):
                assert space.length == block.length  # type: ignore[attr-defined]
            for reg in block.registers:
                # A register a block takes from a group (`use`) is named in the group's space.
                homes = [space, *_groups()]
                home = next(h for h in homes if hasattr(h, names_constant(reg.name)))
                _check_register(home, reg)
    assert blocks > 30


def test_a_moving_register_is_a_function_of_the_fields_it_moves_with() -> None:
    assert names.MSI.DATA.offset(control_addr64=0) == 0x08
    assert names.MSI.DATA.offset(control_addr64=1) == 0x0C
    assert (
        names.MSI.length(control_addr64=1, control_per_vector_masking=1, control_ext_data_capable=0)
        == 24
    )


def test_a_field_reads_and_sets_its_bits_only() -> None:
    mme = names.MSI.CONTROL.MULTIPLE_MESSAGE_ENABLE
    assert (mme.mask, mme.shift, mme.width) == (0x0070, 4, 3)
    assert mme.get(0x00F5) == 0x7
    assert mme.put(0x00F5, 2) == 0x00A5
    assert mme.put(0, 0xFF) == 0x0070  # cut to the field


def test_registers_the_code_takes_from_either_header_lie_alike_in_both() -> None:
    # The code reads these through TYPE0's names whatever the header type.
    for reg in ("CAPABILITIES_POINTER", "INTERRUPT_LINE", "INTERRUPT_PIN", "BAR0", "BAR1"):
        assert getattr(names.TYPE0, reg).offset == getattr(names.TYPE1, reg).offset, reg
