from __future__ import annotations

import os
import warnings
from typing import Iterator

import pytest

from lab import REQUIRE_ENV, Lab, privilege_problem

# On a failure, hypothesis' pytest plugin imports its patch writer, whose
# import raises a DeprecationWarning; with filterwarnings=error that turns a
# readable falsifying example into an INTERNALERROR. Import it once, quietly.
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    try:
        import hypothesis.extra._patching  # noqa: F401
    except ImportError:
        pass


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A test that builds a lab needs root whatever its module says: mark it
    # privileged, so the unprivileged CI run (-m "unprivileged and not
    # privileged") leaves it out even in a module marked unprivileged.
    for item in items:
        if {"lab", "lab_factory", "world"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.privileged)


def need_privileges() -> None:
    """Skip (locally) or fail (under CI, NETRING_REQUIRE_PRIVILEGED=1)."""
    why = privilege_problem()
    if why:
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(f"privileged test cannot run: {why} ({REQUIRE_ENV} is set)")
        pytest.skip(why)


@pytest.fixture
def lab() -> Iterator[Lab]:
    need_privileges()
    world = Lab()
    try:
        with world.inside():
            yield world
    finally:
        world.close()


@pytest.fixture
def lab_factory() -> Iterator[type[Lab]]:
    need_privileges()
    made: list[Lab] = []

    class _Factory:
        @staticmethod
        def __call__(**kw: object) -> Lab:
            world = Lab(**kw)  # type: ignore[arg-type]
            made.append(world)
            return world

    try:
        yield _Factory()  # type: ignore[misc]
    finally:
        for w in made:
            w.close()
