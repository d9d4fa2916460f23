"""The passes in order: read -> parse -> build -> check -> emit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from pciback.compiler.build import Builder
from pciback.compiler.check import Program, check
from pciback.compiler.diagnostics import CompileFailed, Diagnostics, Pos
from pciback.compiler.emit import Output, emit
from pciback.compiler.model import SourceFile
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
        shown = display_path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            diags.error(Pos(shown, 1, 1), f"cannot read: {reason}")
            continue
        tree = parse(text, shown, diags)
        if tree is None:
            continue
        builder = Builder(shown, diags)
        src = builder.source(tree, text)
        if not builder.failed:
            files.append(src)
    return files


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
    """Every pass but emit. Errors raise CompileFailed (carrying the warnings too); a program
    that only has warnings is returned with them."""
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
    return emit(analyse(paths))


def policy_sources(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.pci"), key=lambda p: p.name)
