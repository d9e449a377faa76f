"""The package as users get it: the wheel holds every module, and the public names resolve.

A hand-kept package list once dropped a new subpackage from the wheel while every test passed
against the source tree; these tests build the wheel and import every module from it instead.
"""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Final

import pytest

import aiocache_inode

ROOT: Final = Path(__file__).resolve().parent.parent
PACKAGE_DIR: Final = ROOT / "aiocache_inode"

#: The names the public contract promises at the top level (the entry points of API.md).
CONTRACT: Final = frozenset(
    {
        "PAGE_SIZE",
        "CacheStore",
        "CachingInode",
        "Attrs",
        "AttrMask",
        "TimeSpec",
        "Range",
        "BackingFile",
        "LocalFile",
        "MemoryBacking",
        "FaultInjector",
        "CacheError",
        "BackingError",
        "WritebackError",
        "ClosedError",
    }
)


def source_modules() -> list[str]:
    """Every module of the source tree, as dotted names (packages included)."""
    found = pkgutil.walk_packages([str(PACKAGE_DIR)], prefix="aiocache_inode.")
    return sorted(["aiocache_inode", *(info.name for info in found)])


def test_discovery_finds_every_module_file() -> None:
    # The import tests below take their list from pkgutil, which walks only packages it can
    # import: a directory without an __init__.py would be skipped silently, with its modules.
    files = {
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in PACKAGE_DIR.rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert set(source_modules()) == files


@pytest.mark.parametrize("module", source_modules())
def test_every_module_lists_what_it_defines_in_its_all(module: str) -> None:
    mod = importlib.import_module(module)
    names = getattr(mod, "__all__", None)
    assert names is not None, f"{module} has no __all__"
    defined = {
        name
        for name, obj in vars(mod).items()
        if not name.startswith("_")
        and (inspect.isclass(obj) or inspect.isfunction(obj))
        and obj.__module__ == module
    }
    unlisted = defined - set(names)
    assert not unlisted, f"{module} defines public {sorted(unlisted)} but its __all__ omits them"


def test_the_top_level_all_is_exactly_what_the_package_exports() -> None:
    exported = aiocache_inode.__all__
    assert len(exported) == len(set(exported)), "duplicate names in __all__"
    for name in exported:
        assert hasattr(aiocache_inode, name), f"__all__ names {name!r}, which does not exist"
    public = {n for n in vars(aiocache_inode) if not n.startswith("_")}
    imported_modules = {
        n for n in public if type(getattr(aiocache_inode, n)).__name__ == "module"
    }  # submodules become attributes once imported; they are not exports
    assert public - imported_modules == set(exported)


def test_the_contract_names_are_all_exported() -> None:
    missing = CONTRACT - set(aiocache_inode.__all__)
    assert not missing, f"public names missing from aiocache_inode.__all__: {sorted(missing)}"


@pytest.mark.parametrize("module", source_modules())
def test_every_all_in_the_package_resolves(module: str) -> None:
    mod = importlib.import_module(module)
    names = mod.__all__
    assert len(names) == len(set(names)), f"duplicate names in {module}.__all__"
    for name in names:
        assert hasattr(mod, name), f"{module}.__all__ names {name!r}, which does not exist"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built from a copy of the tree with the installed setuptools.

    A copy, because setuptools builds in ``build/`` beside the sources, and a stale one there
    would both hide a module missing from the package list and be left behind.
    """
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(
        PACKAGE_DIR, src / PACKAGE_DIR.name, ignore=shutil.ignore_patterns("__pycache__")
    )
    out = tmp_path_factory.mktemp("wheel")
    # No build isolation: the dev extra installs the setuptools the build needs, so the test
    # runs without fetching anything.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(out),
            str(src),
        ],
        check=True,
        cwd=out,
        capture_output=True,
    )
    (built,) = out.glob("aiocache_inode-*.whl")
    return built


def test_the_wheel_holds_every_module_of_the_source_tree(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        files = set(zf.namelist())
    want = {
        str(p.relative_to(ROOT)) for p in PACKAGE_DIR.rglob("*.py") if "__pycache__" not in p.parts
    }
    missing = want - files
    assert not missing, f"the wheel lacks {sorted(missing)}"
    assert "aiocache_inode/py.typed" in files, "the wheel does not mark the package typed"


def test_every_module_imports_from_the_wheel(wheel: Path, tmp_path: Path) -> None:
    # Isolated mode (-I) in an empty directory: neither the working tree nor the editable
    # install is on the path, only the wheel (importable as a zip) and the installed
    # dependencies, so each module's __file__ must come from inside the wheel.
    script = (
        "import importlib, json, sys\n"
        f"sys.path.insert(0, {str(wheel)!r})\n"
        "sys.meta_path[:] = [f for f in sys.meta_path"
        " if 'editable' not in type(f).__module__.lower()"
        " and '__editable__' not in repr(f)]\n"
        "out = {}\n"
        "for name in json.loads(sys.argv[1]):\n"
        "    out[name] = importlib.import_module(name).__file__\n"
        "print(json.dumps(out))\n"
    )
    modules = source_modules()
    done = subprocess.run(
        [sys.executable, "-I", "-c", script, json.dumps(modules)],
        check=True,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    files: dict[str, str] = json.loads(done.stdout)
    assert sorted(files) == modules
    outside = {m: f for m, f in files.items() if not f.startswith(str(wheel))}
    assert not outside, f"imported from outside the wheel: {outside}"
