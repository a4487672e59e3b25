"""The wheel builds from a copy of the source, holds the typed package and nothing else, has no
dependencies, and imports from the wheel alone."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1]


def test_the_wheel_builds_and_imports_alone(tmp_path: Path) -> None:
    tree = tmp_path / "src-copy"
    tree.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(SOURCE / name, tree / name)
    shutil.copytree(SOURCE / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "dist"
    # No build isolation: the backend (setuptools) is the one scripts/test put in the venv, so
    # the build needs no download.
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "-q", "-w", str(out), str(tree)],
        check=True,
    )
    (wheel,) = out.glob("vigil_reporter-0.1.0-py3-none-any.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read("vigil_reporter-0.1.0.dist-info/METADATA").decode()
    assert {"vigil_reporter/__init__.py", "vigil_reporter/_reporter.py", "vigil_reporter/_client.py", "vigil_reporter/_loop.py", "vigil_reporter/py.typed"} <= names
    assert not [n for n in names if not n.startswith(("vigil_reporter/", "vigil_reporter-0.1.0.dist-info/"))], names
    assert "Requires-Dist" not in metadata
    assert "Name: vigil-reporter" in metadata
    assert "Reporter(" in metadata, "the README is the long description"
    # A pure wheel is a zip that Python imports from directly: proof that it is complete.
    shown = subprocess.run(
        [sys.executable, "-I", "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
         "import vigil_reporter; print(vigil_reporter.__version__, vigil_reporter.__file__)", str(wheel)],
        check=True, capture_output=True, text=True, cwd=tmp_path,
    ).stdout.split()
    assert shown[0] == "0.1.0"
    assert shown[1].startswith(str(wheel))
