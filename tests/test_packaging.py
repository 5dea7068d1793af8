"""What a wheel of slimbert holds: one top-level name, and every subpackage."""

from pathlib import Path

from setuptools import find_packages

from tests.conftest import ROOT


def test_only_slimbert_is_installed_as_a_top_level_name():
    from importlib.metadata import packages_distributions

    ours = sorted(name for name, dists in packages_distributions().items() if "slimbert" in dists)
    assert ours == ["slimbert"]


def test_every_folder_of_modules_is_a_package_the_wheel_ships():
    # a folder without __init__.py imports from a checkout (namespace package) but is left out of a wheel
    folders = {p.parent for p in (ROOT / "slimbert").rglob("*.py")}
    want = {".".join(f.relative_to(ROOT).parts) for f in folders}
    assert want <= set(find_packages(str(ROOT), include=["slimbert*"])), want - set(find_packages(str(ROOT), include=["slimbert*"]))
    assert Path(ROOT / "slimbert" / "kernels" / "__init__.py").exists()
