"""Every cffi declaration of pciback.xen checked by a C compiler against the real Xen headers.

For each declared function the generated C file assigns the header's function to a pointer of
the declared type: a wrong return type, argument type, count or qualifier is an
incompatible-pointer-types error. Typedefs and constants are checked with static assertions.
Skipped where gcc or the Xen headers (Debian: libxen-dev) are missing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from pciback.xen import atomic, domctl, evtchn, gnttab, physdev, xenctrl, xenstore

MODULES = [xenstore, gnttab, evtchn, xenctrl, physdev, domctl]
_DECL = re.compile(r"(?P<ret>.*?)\b(?P<name>\w+)\((?P<args>.*)\);")
GCC = shutil.which("gcc")


def _header_present(header: str) -> bool:
    if GCC is None:
        return False
    probe = subprocess.run(
        [GCC, "-E", "-x", "c", "-o", "/dev/null", "-"],
        input=f"#include <{header}>\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    return probe.returncode == 0


def c_check(module: ModuleType | Any, decls: tuple[str, ...] | None = None) -> str:
    lines = [f"#define {d}" for d in getattr(module, "DEFINES", ())]
    lines += ["#include <stdint.h>", "#include <stdbool.h>", "#include <stddef.h>"]
    lines += [f"#include <{h}>" for h in module.HEADERS]
    for name, target in module.TYPEDEFS.items():
        lines.append(
            f'_Static_assert(__builtin_types_compatible_p({name}, {target}), "typedef {name}");'
        )
    for name, value in module.CONSTANTS.items():
        lines.append(f'_Static_assert(({name}) == ({value}), "constant {name}");')
    for decl in module.DECLS if decls is None else decls:
        m = _DECL.fullmatch(decl)
        assert m is not None, decl
        ret, name, args = m["ret"].strip(), m["name"], m["args"]
        lines.append(f"{ret} (*check_{name})({args}) = {name};")
    return "\n".join(lines) + "\n"


def compile_check(source: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    assert GCC is not None
    path = tmp / "check.c"
    path.write_text(source)
    return subprocess.run(
        [
            GCC,
            "-std=gnu11",
            "-fsyntax-only",
            "-Werror=incompatible-pointer-types",
            "-Werror=discarded-qualifiers",
            "-Werror=implicit-function-declaration",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _need(module: ModuleType) -> None:
    if not all(_header_present(h) for h in module.HEADERS):
        pytest.skip(f"gcc or {module.HEADERS[-1]} missing (Debian: libxen-dev)")


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_declarations_match_the_headers(module: ModuleType, tmp_path: Path) -> None:
    _need(module)
    result = compile_check(c_check(module), tmp_path)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("wrong", "right"),
    [
        ("const char *path, unsigned int *len", "char *path, unsigned int *len"),  # qualifier
        ("bool xs_rm(", "int xs_rm("),  # return type
    ],
)
def test_a_wrong_prototype_fails_the_check(wrong: str, right: str, tmp_path: Path) -> None:
    """The check has teeth: one mutated declaration is rejected."""
    _need(xenstore)
    decls = tuple(d.replace(wrong, right) for d in xenstore.DECLS)
    assert decls != xenstore.DECLS
    result = compile_check(c_check(xenstore, decls), tmp_path)
    assert result.returncode != 0
    assert "incompatible" in result.stderr or "qualifier" in result.stderr


@pytest.mark.parametrize(
    ("constant", "wrong"),
    [
        ("offsetof(xc_domaininfo_t, flags)", 8),  # a field read at the wrong place
        ("XEN_DOMINF_dying", 4),  # the shutdown bit taken for dying
        ("sizeof(xc_domaininfo_t) <= 1024", 0),
    ],
)
def test_a_wrong_layout_fails_the_check(constant: str, wrong: int, tmp_path: Path) -> None:
    """The structure fields the adapters read are checked, not only the prototypes."""
    _need(domctl)
    mutated = SimpleNamespace(
        HEADERS=domctl.HEADERS,
        TYPEDEFS=domctl.TYPEDEFS,
        CONSTANTS={**domctl.CONSTANTS, constant: wrong},
        DECLS=(),
    )
    result = compile_check(c_check(mutated), tmp_path)
    assert result.returncode != 0
    assert "constant" in result.stderr


def test_xs_permissions_layout_is_checked(tmp_path: Path) -> None:
    _need(xenstore)
    mutated = SimpleNamespace(
        HEADERS=xenstore.HEADERS,
        TYPEDEFS={},
        CONSTANTS={**xenstore.CONSTANTS, "offsetof(struct xs_permissions, perms)": 2},
        DECLS=(
            "bool xs_set_permissions(struct xs_handle *h, xs_transaction_t t,"
            " const char *path, struct xs_permissions *perms, int num_perms);",
        ),
    )
    result = compile_check(c_check(mutated), tmp_path)
    assert result.returncode != 0
    assert "xs_set_permissions" in result.stderr and "perms" in result.stderr


def test_a_wrong_typedef_fails_the_check(tmp_path: Path) -> None:
    _need(evtchn)

    wrong = SimpleNamespace(
        HEADERS=evtchn.HEADERS,
        TYPEDEFS={**evtchn.TYPEDEFS, "evtchn_port_t": "uint16_t"},
        CONSTANTS=evtchn.CONSTANTS,
        DECLS=(),
    )
    result = compile_check(c_check(wrong), tmp_path)
    assert result.returncode != 0
    assert "evtchn_port_t" in result.stderr


def _atomic_check(decls: tuple[str, ...], tmp: Path) -> subprocess.CompletedProcess[str]:
    if GCC is None:
        pytest.skip("no gcc")
    path = tmp / "atomic.c"
    path.write_text(
        "#include <stdint.h>\n"
        + "\n".join(decls)
        + f'\n_Static_assert(__ATOMIC_SEQ_CST == {atomic.SEQ_CST}, "SEQ_CST");\n'
    )
    return subprocess.run(
        [GCC, "-std=gnu11", "-fsyntax-only", "-Werror=builtin-declaration-mismatch", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_libatomic_declarations_match_the_compilers_builtins(tmp_path: Path) -> None:
    """libatomic has no header: gcc knows the out-of-line atomics as builtins and rejects a
    declaration that does not match them."""
    result = _atomic_check(atomic.DECLS, tmp_path)
    assert result.returncode == 0, result.stderr
    wrong = tuple(d.replace("uint32_t val", "uint64_t val") for d in atomic.DECLS)
    result = _atomic_check(wrong, tmp_path)
    assert result.returncode != 0 and "__atomic_fetch_or_4" in result.stderr
