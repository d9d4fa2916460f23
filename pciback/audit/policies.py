"""A policy from a directory: a dsl/ tree (*.pci, compiled here, on the fly) or a generated/
tree (compiled tables, imported as they are)."""

from __future__ import annotations

import importlib.util
import itertools
import sys
import tempfile
from pathlib import Path
from types import ModuleType

from pciback.engine.policy import Policy, PolicyError
from pciback.tables import PolicyModule

_COUNTER = itertools.count()


class PolicyTreeError(Exception):
    """A directory that gives no policy; the message is one line naming it."""


def load_policy(tree: Path) -> Policy:
    return _from_modules(load_modules(tree), tree)


def load_policy_and_modules(tree: Path) -> tuple[Policy, tuple[PolicyModule, ...]]:
    """The policy and the compiled files it was made of (their sources' hashes name it)."""
    modules = load_modules(tree)
    return _from_modules(modules, tree), modules


def load_modules(tree: Path) -> tuple[PolicyModule, ...]:
    if not tree.is_dir():
        raise PolicyTreeError(f"{tree}: not a directory (give a dsl/ or a generated/ tree)")
    if any(tree.glob("*.pci")):
        return _compile(tree)
    if (tree / "__init__.py").is_file():
        return _import_tree(tree)
    raise PolicyTreeError(f"{tree}: neither *.pci policy files nor compiled tables (__init__.py)")


def _compile(tree: Path) -> tuple[PolicyModule, ...]:
    try:
        from pciback.compiler.diagnostics import CompileFailed
        from pciback.compiler.pipeline import compile_paths, policy_sources
    except ImportError as exc:
        raise PolicyTreeError(
            f"{tree}: compiling a policy needs the compiler extra ({exc.name} is missing)"
        ) from None
    try:
        outputs = compile_paths(policy_sources(tree))
    except CompileFailed as failed:
        first = failed.diagnostics[0] if failed.diagnostics else "errors"
        raise PolicyTreeError(f"{tree}: does not compile: {first}") from None
    # The tables import each other relatively: they need to be a package on disk.
    with tempfile.TemporaryDirectory(prefix="pciback-audit-") as tmp:
        for out in outputs:
            (Path(tmp) / out.name).write_text(out.text, encoding="utf-8")
        return _import_tree(Path(tmp))


def _import_tree(tree: Path) -> tuple[PolicyModule, ...]:
    name = f"_pciback_audit_policy_{next(_COUNTER)}"
    spec = importlib.util.spec_from_file_location(
        name, tree / "__init__.py", submodule_search_locations=[str(tree)]
    )
    if spec is None or spec.loader is None:
        raise PolicyTreeError(f"{tree}: cannot be imported")
    package: ModuleType = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    try:
        spec.loader.exec_module(package)
        modules = getattr(package, "MODULES", None)
    except Exception as exc:  # a broken tree of any kind is one line for the operator
        raise PolicyTreeError(f"{tree}: cannot be imported: {exc}") from None
    finally:
        # The tables are plain data once built: nothing needs the package kept importable.
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[key]
    if not isinstance(modules, tuple):
        raise PolicyTreeError(f"{tree}: __init__.py defines no MODULES")
    return modules


def _from_modules(modules: tuple[PolicyModule, ...], tree: Path) -> Policy:
    try:
        return Policy.from_modules(modules)
    except PolicyError as exc:
        raise PolicyTreeError(f"{tree}: {exc}") from None
