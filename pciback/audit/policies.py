"""A policy from a directory: a dsl/ tree (*.pci, compiled here, on the fly) or a generated/
tree (compiled tables, imported as they are); or from a git revision of one, named as git names
a tree, `REV:PATH` (`HEAD~3:dsl`, `v1.2:generated`), in the repository of the current
directory: a reviewer compares a policy change without checking anything out."""

from __future__ import annotations

import importlib.util
import io
import itertools
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from types import ModuleType

from pciback.engine.policy import Policy, PolicyError
from pciback.policy import installed_hooks
from pciback.tables import PolicyModule

_COUNTER = itertools.count()
GIT_TIMEOUT_S = 60
MAX_GIT_FILES = 1000  # a policy tree has a few dozen
MAX_GIT_BYTES = 16 << 20  # dsl/ is some hundreds of KiB


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
        spec = str(tree)
        if ":" in spec and not tree.exists():
            return _from_git(spec)
        raise PolicyTreeError(f"{tree}: not a directory (give a dsl/ or a generated/ tree)")
    if any(tree.glob("*.pci")):
        return _compile(tree)
    if (tree / "__init__.py").is_file():
        return _import_tree(tree)
    raise PolicyTreeError(f"{tree}: neither *.pci policy files nor compiled tables (__init__.py)")


def _from_git(spec: str) -> tuple[PolicyModule, ...]:
    """The tree `REV:PATH` of the current directory's git repository (PATH from the repository's
    root, as git reads `REV:PATH`), read with `git archive` into a temporary directory (regular
    files only, none outside it, bounded) and compiled there. Only a dsl/ tree: a generated/
    tree is Python that importing would run, and a revision may be anybody's branch."""
    rev, _, path = spec.partition(":")
    parts = Path(path).parts
    if not rev or not path or rev.startswith("-") or Path(path).is_absolute() or ".." in parts:
        raise PolicyTreeError(f"{spec}: not a directory, nor a git REV:PATH (a relative PATH)")
    try:
        top = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
        )
        # From the top: run in a subdirectory, git archive keeps to that subdirectory.
        archive = subprocess.run(
            ["git", "archive", "--format=tar", f"{rev}:{path}"],
            capture_output=True,
            timeout=GIT_TIMEOUT_S,
            cwd=top.stdout.strip() if top.returncode == 0 and top.stdout.strip() else None,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PolicyTreeError(f"{spec}: git cannot read it: {exc}") from None
    if archive.returncode != 0:
        why = archive.stderr.decode("utf-8", "replace").strip().splitlines()
        raise PolicyTreeError(
            f"{spec}: not a directory, nor a git REV:PATH here ({why[0] if why else 'git failed'})"
        )
    if len(archive.stdout) > MAX_GIT_BYTES:
        raise PolicyTreeError(f"{spec}: more than {MAX_GIT_BYTES} bytes: not a policy tree")
    with tempfile.TemporaryDirectory(prefix="pciback-policy-") as tmp:
        root = Path(tmp)
        _unpack(archive.stdout, root, spec)
        if not any(root.glob("*.pci")):
            raise PolicyTreeError(
                f"{spec}: no *.pci policy files there (from git, only a dsl/ tree: a generated/"
                " tree would run its code)"
            )
        return _compile(root)


def _unpack(data: bytes, into: Path, spec: str) -> None:
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        for count, member in enumerate(archive):
            if count >= MAX_GIT_FILES:
                raise PolicyTreeError(f"{spec}: more than {MAX_GIT_FILES} files")
            name = Path(member.name)
            if name.is_absolute() or ".." in name.parts:
                raise PolicyTreeError(f"{spec}: the archive names {member.name!r}")
            if not (into / name).resolve().is_relative_to(into.resolve()):
                raise PolicyTreeError(f"{spec}: the archive names {member.name!r}")
            if member.isdir():
                (into / name).mkdir(parents=True, exist_ok=True)
            elif member.isfile():
                source = archive.extractfile(member)
                assert source is not None  # a regular file has data
                (into / name).parent.mkdir(parents=True, exist_ok=True)
                (into / name).write_bytes(source.read())
            # links and anything else are not a policy's: skipped


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
        return Policy.from_modules(modules, installed_hooks())
    except PolicyError as exc:
        raise PolicyTreeError(f"{tree}: {exc}") from None
