"""Release checks and the version matrix, run by .ci/run (``python3 -m nox``).

* ``sdist``: build the sdist and the wheel, check them with twine, install the
  *sdist* into a fresh virtualenv (so the C extension is built from what the
  sdist carries) and run a smoke test from outside the source tree: a file
  missing from the sdist (a C header, ``py.typed``) fails here.
* ``coverage`` (not run by CI; run it to measure): line and branch coverage
  of the whole suite, threads and subprocesses included.
* ``tests``: the whole test suite on the oldest and the newest CPython the
  package supports that this machine has (3.10 and 3.13, from pyenv); the
  default ``python3`` (3.11) runs it in .ci/run itself. The package is
  installed into the session's virtualenv (not in place), and pytest is run
  by its script rather than ``python -m``, so the tests import the installed
  package, never the source tree.
"""

from __future__ import annotations

import glob
import os
import shutil

import nox

nox.options.error_on_missing_interpreters = True
nox.options.sessions = ["sdist", "tests"]

SUPPORTED = ("3.10", "3.13")  # oldest and newest supported that the machine carries


def interpreter(version: str) -> str | None:
    """The interpreter for ``version``: a pyenv install (whose shims only
    answer for the versions pyenv has made global), else one on PATH."""
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    found = sorted(glob.glob(os.path.join(root, "versions", f"{version}.*", "bin", f"python{version}")))
    return found[-1] if found else shutil.which(f"python{version}")


def _expose(versions: tuple[str, ...]) -> None:
    """Put ``pythonX.Y`` for each version first on PATH, so that the sessions
    are named by version and nox finds the real interpreters, not pyenv shims."""
    bindir = os.path.abspath(os.path.join(".nox", "interpreters"))
    os.makedirs(bindir, exist_ok=True)
    for v in versions:
        target = interpreter(v)
        if target is None:
            continue  # nox then reports the interpreter missing (an error: see options)
        link = os.path.join(bindir, f"python{v}")
        if os.path.lexists(link):
            os.remove(link)
        os.symlink(target, link)
    os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")


_expose(SUPPORTED)


SMOKE = """
import importlib.metadata, pathlib, sys
import netring_chan as nc
from netring_chan.testing import MemorySource
pkg = pathlib.Path(nc.__file__).parent
assert "site-packages" in str(pkg), pkg
assert nc.__version__ == importlib.metadata.version("netring_chan"), nc.__version__
assert (pkg / "py.typed").is_file()
frames = [bytes([i]) * 60 for i in range(100)]
with nc.CaptureService(MemorySource(frames, packets_per_block=16)) as svc:
    got = [p.data for _, p in zip(range(100), svc)]
assert got == frames and svc.stats().balanced
print("smoke test passed:", nc.__version__, sys.version.split()[0], pkg)
"""


@nox.session(python=False)
def sdist(session: nox.Session) -> None:
    """Build, check and install the sdist, then import it from outside the tree."""
    shutil.rmtree("dist", ignore_errors=True)
    session.run("python3", "-m", "build", "--outdir", "dist", ".")
    files = sorted(glob.glob("dist/*"))
    session.run("python3", "-m", "twine", "check", "--strict", *files)
    (tarball,) = glob.glob("dist/*.tar.gz")
    venv = session.create_tmp()
    target = os.path.join(venv, "venv")
    session.run("python3", "-m", "venv", "--clear", target)
    py = os.path.join(target, "bin", "python")
    session.run(py, "-m", "pip", "install", "-q", os.path.abspath(tarball))
    session.run(py, "-c", SMOKE, env={"PYTHONSAFEPATH": "1"}, external=True)
    session.run(py, "-c", "import subprocess, sys; "
                "subprocess.run([sys.prefix + '/bin/netring-chan', '--help'], check=True, "
                "stdout=subprocess.DEVNULL)", external=True)


@nox.session(python=list(SUPPORTED))
def tests(session: nox.Session) -> None:
    """The whole suite on another CPython, against the installed package."""
    session.install(".[test]")
    session.chdir("tests")  # nothing of the source tree on sys.path but the tests
    session.run("pytest", "-p", "no:cacheprovider", "-c", "../pyproject.toml", "--rootdir", "..", *session.posargs)


@nox.session(python=False)
def coverage(session: nox.Session) -> None:
    """Line and branch coverage of the whole suite (not part of CI: measured, reported)."""
    session.run("python3", "-m", "coverage", "erase")
    session.run("python3", "-m", "coverage", "run", "-m", "pytest", "-p", "no:cacheprovider", "-q", *session.posargs)
    session.run("python3", "-m", "coverage", "combine", "-q")
    session.run("python3", "-m", "coverage", "report")

