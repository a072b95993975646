"""clipft as a user gets it: a wheel built from this checkout, installed (not editable) into a
fresh virtual environment and run from another folder, with only the shipped prompt files."""
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from clipft.commands.sample_data import make_catalogue
from conftest import REPO

# what a checkout may hold besides its sources: environments, build outputs, caches, run folders
LOCAL = (".git", ".venv", "build", "dist", "*.egg-info", ".hypothesis", ".*_cache", "__pycache__", "runs", "demo",
         ".work")


def sh(*args, cwd):
    done = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("install")
    # From a copy without build/: setuptools adds to a build/lib it finds and never prunes it, so
    # files deleted or moved out of the package would still ship.
    source = shutil.copytree(REPO, tmp / "source", ignore=shutil.ignore_patterns(*LOCAL))
    sh(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", tmp / "dist", source,
       cwd=tmp)
    (wheel,) = (tmp / "dist").glob("clipft-*.whl")
    venv.create(tmp / "venv", with_pip=False)
    python = tmp / "venv" / "bin" / "python"
    site = Path(sh(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp).strip())
    # The dependencies (torch and the rest) come from this environment, appended after the
    # fresh environment's own packages; its .pth files (this checkout's editable install) are not run.
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    sh(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", wheel, cwd=tmp)
    return tmp, python


@pytest.mark.slow
def test_a_wheel_installed_elsewhere_runs_with_its_shipped_files(installed):
    tmp, python = installed
    where = sh(python, "-c", "import clipft; print(clipft.__file__)", cwd=tmp)
    assert where.startswith(str(tmp / "venv")), where
    data = make_catalogue(tmp / "catalogue", n=12, size=32, seed=0)
    clipft = tmp / "venv" / "bin" / "clipft"
    out = sh(clipft, "zeroshot", "--prompts", "color", "--prompts", "lid", "--data", data, "--model", "clipft-tiny",
             "--out", tmp / "zs", "--cache-dir", tmp / "cache", cwd=tmp)
    assert "scored 12 of 12 products" in out and (tmp / "zs" / "predictions.csv").is_file()
    assert "align-lite0-minilm" in sh(clipft, "align", "--help", cwd=tmp)
    names = sh(python, "-c", "from clipft.shipped import shipped_names as n; print(n('prompts'), n('configs'))", cwd=tmp)
    assert "'color'" in names and "'photos'" in names and "fashion" not in names  # the benchmarks' recipes stay home


def test_users_keep_their_torch_and_this_machine_keeps_its_exact_versions():
    import configparser

    from packaging.requirements import Requirement

    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    requirements = {r.name: r for r in map(Requirement, filter(None, (
        line.split("#")[0].strip() for line in setup["options"]["install_requires"].splitlines())))}
    for name in ("torch", "torchvision"):
        assert not any(spec.operator == "==" for spec in requirements[name].specifier), requirements[name]
    assert any(spec.operator == "<" for spec in requirements["open_clip_torch"].specifier)  # private internals used
    pins = (REPO / "constraints.txt").read_text().split()
    assert "torch==2.14.1" in pins and "torchvision==0.29.1" in pins
    assert "-c constraints.txt" in (REPO / "Makefile").read_text()
