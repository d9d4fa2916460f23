"""`pip install .` gives a working runtime: the wheel carries the compiled tables."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("setuptools")
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "grammar.lark"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "pciback", src / "pciback", symlinks=True, ignore=ignore)
    shutil.copytree(ROOT / "generated", src / "generated", ignore=ignore)
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-build-isolation",
            "--no-deps",
            "-q",
            "-w",
            str(out),
            str(src),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    (built,) = out.glob("pciback-*.whl")
    return built


def test_wheel_installs_the_generated_tables_as_pciback_generated(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    generated = sorted(p.name for p in (ROOT / "generated").glob("*.py"))
    for name in generated:
        assert f"pciback/generated/{name}" in names
    assert "pciback/compiler/grammar.lark" in names
    assert "pciback/compiler/templates/module.py.j2" in names
    assert not [n for n in names if n.startswith("generated/")]


def test_installed_runtime_loads_tables_without_the_compiler(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    code = (
        "import sys\n"
        "from pciback.policy import default_policy\n"
        "policy = default_policy()\n"
        "assert 0 in policy.headers, policy.headers\n"
        "assert 'lark' not in sys.modules and 'jinja2' not in sys.modules\n"
        "import pciback\n"
        f"assert pciback.__file__.startswith({str(target)!r}), pciback.__file__\n"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "-c",
            f"import sys; sys.path.insert(0, {str(target)!r})\n" + code,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
