from __future__ import annotations

import os
from typing import Iterator

import pytest

from lab import REQUIRE_ENV, Lab, privilege_problem


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
