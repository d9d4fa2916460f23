"""Finding the libraries and the dom0 nodes: what is missing is named, never a traceback."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from pciback.xen import atomic, domctl, environment, evtchn, gnttab, xenctrl, xenstore
from pciback.xen._loader import DEV_XEN, XenUnavailable, check_domid, missing_nodes

MODULES: list[tuple[ModuleType, str]] = [
    (xenstore, "library"),
    (gnttab, "gnttab_library"),
    (evtchn, "library"),
    (xenctrl, "library"),
    (domctl, "library"),
]


@pytest.mark.usefixtures("no_libraries")
@pytest.mark.parametrize(
    ("module", "loader", "package"),
    [
        (m, f, p)
        for (m, f), p in zip(
            MODULES,
            ["libxenstore4", "libxengnttab1", "libxenevtchn1", "libxenctrl", "libxenctrl"],
            strict=True,
        )
    ],
)
def test_a_missing_library_names_itself_and_its_package(
    module: ModuleType, loader: str, package: str
) -> None:
    name = module.__name__.rsplit(".", 1)[-1]
    lib = {"gnttab": "xengnttab", "evtchn": "xenevtchn", "domctl": "xenctrl"}.get(name, name)
    with pytest.raises(XenUnavailable, match=rf"lib{lib} not found \(tried .*{package}"):
        getattr(module, loader)()


def test_missing_nodes_are_named(tmp_path: Path) -> None:
    proc, dev = tmp_path / "proc-xen", tmp_path / "dev-xen"
    missing = missing_nodes(proc, dev)
    assert [m.split()[0] for m in missing] == [str(proc), str(dev)]
    proc.mkdir()
    dev.mkdir()
    assert missing_nodes(proc, dev) == []


@pytest.mark.usefixtures("no_libraries")
def test_open_environment_lists_everything_missing_at_once(tmp_path: Path) -> None:
    with pytest.raises(XenUnavailable) as info:
        environment.open_environment(tmp_path / "sys", tmp_path / "no-proc", tmp_path / "no-dev")
    text = str(info.value)
    for part in (
        "no-proc",
        "no-dev",
        "libxenstore",
        "libxengnttab",
        "libxenevtchn",
        "libxenctrl",
        "libatomic",
    ):
        assert part in text


def test_sysfs_writes_on_the_real_sys_need_the_explicit_opt_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even with every library and node present, the real /sys is not driven unless asked."""
    (tmp_path / "proc").mkdir()
    (tmp_path / "dev").mkdir()
    monkeypatch.delenv("PCIBACK_ALLOW_SYSFS_WRITES", raising=False)
    monkeypatch.setattr(environment, "LIBRARIES", {"libnothing": lambda: None})
    with pytest.raises(XenUnavailable, match="PCIBACK_ALLOW_SYSFS_WRITES=1"):
        environment.open_environment(Path("/sys/bus/pci"), tmp_path / "proc", tmp_path / "dev")


@pytest.mark.parametrize(
    ("module", "loader"), [*MODULES, (atomic, "library")], ids=lambda v: getattr(v, "__name__", v)
)
def test_every_declared_function_is_exported_by_the_installed_library(
    module: ModuleType, loader: str
) -> None:
    try:
        lib = getattr(module, loader)()
    except XenUnavailable as exc:
        pytest.skip(str(exc))
    for decl in module.DECLS:
        name = decl.split("(")[0].split()[-1].lstrip("*")
        assert getattr(lib, name) is not None, name


@pytest.mark.skipif(DEV_XEN.exists(), reason="a Xen host: the tests never open its devices")
@pytest.mark.parametrize(
    ("opener", "loader"),
    [
        (xenstore.XenStoreClient, xenstore.library),
        (gnttab.GrantTable, gnttab.gnttab_library),
        (xenctrl.XenHypervisor, xenctrl.library),
        (domctl.XenDomainResources, domctl.library),
    ],
    ids=["xs_open", "xengnttab_open", "xc_interface_open", "xc_interface_open (domctl)"],
)
def test_opening_without_xen_fails_cleanly(opener: Any, loader: Any) -> None:
    """The real libraries, on a machine with no /dev/xen: a message, not a crash."""
    try:
        atomic.library()
        loader()
    except XenUnavailable as exc:
        pytest.skip(str(exc))
    with pytest.raises(XenUnavailable, match="failed"):
        opener()


@pytest.mark.skipif(DEV_XEN.exists(), reason="a Xen host: the tests never open its devices")
def test_binding_without_xen_fails_cleanly() -> None:
    try:
        evtchn.library()
    except XenUnavailable as exc:
        pytest.skip(str(exc))
    with pytest.raises(XenUnavailable, match="xenevtchn_open failed"):
        evtchn.XenEventPort(5, 7)


@pytest.mark.parametrize("bad", [0, -1, 0x7FF0, 0xFFFF, True, "1"])
def test_guest_domain_ids_are_checked(bad: Any) -> None:
    with pytest.raises(ValueError):
        check_domid(bad)
    assert check_domid(0, allow_dom0=True) == 0
    assert check_domid(0x7FEF) == 0x7FEF
