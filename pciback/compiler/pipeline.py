"""The passes in order: read -> parse -> build -> resolve -> check -> elaborate -> emit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from pciback.compiler.build import Builder
from pciback.compiler.check import Program, check
from pciback.compiler.diagnostics import CompileFailed, Diagnostics, Pos
from pciback.compiler.elaborate import elaborate
from pciback.compiler.emit import Output, emit
from pciback.compiler.model import BlockDecl, CapabilityFieldRef, SourceFile, capability_refs
from pciback.compiler.parse import parse
from pciback.compiler.resolve import resolve

PRELUDE = "prelude.pci"


def display_path(path: Path) -> str:
    """Relative to the working directory when below it, so output is the same in any clone."""
    try:
        rel = path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return str(path)
    return rel.as_posix()


def with_preludes(paths: Sequence[Path]) -> list[Path]:
    """A directory's prelude.pci (shared constants and hook declarations) is read first."""
    ordered: list[Path] = []
    seen: set[Path] = set()
    for path in paths:
        prelude = path.parent / PRELUDE
        for candidate in (prelude, path) if prelude.is_file() else (path,):
            key = candidate.resolve()
            if key not in seen:
                seen.add(key)
                ordered.append(candidate)
    return ordered


def load(paths: Sequence[Path], diags: Diagnostics) -> list[SourceFile]:
    files: list[SourceFile] = []
    for path in with_preludes(paths):
        src = _load_one(path, diags)
        if src is not None:
            files.append(src)
    return files + _context(paths, files)


def _load_one(path: Path, diags: Diagnostics) -> SourceFile | None:
    shown = display_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        diags.error(Pos(shown, 1, 1), f"cannot read: {reason}")
        return None
    tree = parse(text, shown, diags)
    if tree is None:
        return None
    builder = Builder(shown, diags)
    src = builder.source(tree, text)
    return None if builder.failed else src


def _context(paths: Sequence[Path], files: list[SourceFile]) -> list[SourceFile]:
    """The files of the same directories that define the capabilities the loaded ones read a
    field of (`pcie.linkcap.max_width`) and do not define themselves: a file checked alone
    is checked with the capabilities it reads."""
    loaded = {Path(src.path).resolve() for src in files}
    siblings = sorted(
        {p.resolve(): p for path in paths for p in policy_sources(path.parent)}.items()
    )
    extra: list[SourceFile] = []
    while True:
        defined = {b.name for src in files + extra for b in src.blocks}
        wanted = {
            ref.block
            for src in files + extra
            for block in src.blocks
            for ref in _capability_reads(block)
        } - defined
        if not wanted:
            return extra
        found = None
        for key, path in siblings:
            if key in loaded:
                continue
            src = _load_one(path, Diagnostics())  # its own errors are its own check's
            loaded.add(key)
            if src is not None and wanted & {b.name for b in src.blocks}:
                found = src
                break
        if found is None:
            return extra
        extra.append(found)


def _capability_reads(block: BlockDecl) -> list[CapabilityFieldRef]:
    exprs = [block.length, *(rest.condition for rest in block.rests)]
    for reg in block.registers:
        exprs += [reg.offset, reg.condition]
        if reg.array is not None:
            exprs += [reg.array.first, reg.array.count]
    return [ref for expr in exprs for ref in capability_refs(expr)]


def whole_directories(paths: Sequence[Path], files: Sequence[SourceFile]) -> set[str]:
    """The loaded files whose directory is read whole in this run (every *.pci of it, each
    parsed): only there can a declaration be known to be unused."""
    loaded = {src.path for src in files}
    complete: set[str] = set()
    for path in with_preludes(paths):
        siblings = [display_path(p) for p in policy_sources(path.parent)]
        if siblings and all(s in loaded for s in siblings):
            complete.update(siblings)
    return complete


def analyse(paths: Sequence[Path], *, strict_reasons: bool = False) -> Program:
    """Every pass up to check, those that report (elaboration cannot fail). Errors raise
    CompileFailed (carrying the warnings too); a program that only has warnings is returned
    with them."""
    diags = Diagnostics()
    files = resolve(load(paths, diags), diags)
    program = check(
        files,
        diags,
        unused_in=whole_directories(paths, files),
        strict_reasons=strict_reasons,
    )
    if diags:
        raise CompileFailed(diags.items)
    return replace(program, warnings=tuple(diags.warnings))


def compile_paths(paths: Sequence[Path]) -> list[Output]:
    return emit(elaborate(analyse(paths)))


def policy_sources(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.pci"), key=lambda p: p.name)
