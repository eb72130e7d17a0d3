"""What a wheel ships: every folder of the package with Python files in it is a package setuptools
finds (a folder without __init__.py works in an editable install and is missing from a wheel)."""

from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).parents[1]


def test_every_folder_of_python_files_is_shipped():
    folders = {".".join(path.parent.relative_to(ROOT).parts) for path in (ROOT / "edge_distill").rglob("*.py")
               if "__pycache__" not in path.parts}
    assert folders - set(find_packages(str(ROOT), include=["edge_distill*"])) == set()
