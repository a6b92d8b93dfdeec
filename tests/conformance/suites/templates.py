"""The TemplateStore port's conformance checks (reactor/ports.py, TemplateStore).

What its callers rely on (actors/services/template_service.py, actors/api/template_routes.py):
versions are immutable and numbered 1, 2, ... per template; a new version becomes the
active one; a rollback (activate) moves only the pointer, and the next save takes the
number after the latest, never one that exists; two saves at once get two numbers.
"""

from __future__ import annotations

from typing import Any

import trio

from reactor.ports import TemplateVersion
from tests.conformance.backends import Harness


async def check_create_saves_version_one_once(h: Harness[Any]) -> None:
    async with h.open() as store:
        assert await store.active_version("welcome") is None and await store.versions("welcome") == []
        assert await store.create_template("welcome", b"v1", 1000) == TemplateVersion("welcome", 1, 1000, b"v1")
        assert await store.create_template("welcome", b"again", 1001) is None
        assert await store.get_version("welcome", 1) == TemplateVersion("welcome", 1, 1000, b"v1")  # the refused create changed nothing
        assert await store.active_version("welcome") == 1
        assert await store.versions("welcome") == [(1, 1000)]


async def check_versions_count_up_and_the_newest_is_active(h: Harness[Any]) -> None:
    async with h.open() as store:
        await store.create_template("welcome", b"v1", 1000)
        assert await store.add_version("welcome", b"v2", 2000) == TemplateVersion("welcome", 2, 2000, b"v2")
        assert (await store.add_version("welcome", b"v3", 3000)).version == 3
        assert await store.add_version("nope", b"x", 3000) is None
        assert await store.versions("nope") == [] and await store.active_version("nope") is None
        assert await store.active_version("welcome") == 3
        assert await store.versions("welcome") == [(3, 3000), (2, 2000), (1, 1000)]
        assert [(await store.get_version("welcome", n)).spec for n in (1, 2, 3)] == [b"v1", b"v2", b"v3"]
        assert await store.get_version("welcome", 4) is None


async def check_a_rollback_moves_the_pointer_only(h: Harness[Any]) -> None:
    async with h.open() as store:
        await store.create_template("welcome", b"v1", 1000)
        await store.add_version("welcome", b"v2", 2000)
        await store.add_version("welcome", b"v3", 3000)
        assert await store.activate("welcome", 1, 4000) is True
        assert await store.active_version("welcome") == 1
        assert await store.activate("welcome", 9, 4000) is False
        assert await store.activate("nope", 1, 4000) is False
        assert await store.active_version("welcome") == 1 and await store.active_version("nope") is None
        saved = await store.add_version("welcome", b"v4", 5000)  # after a rollback: the number after the latest
        assert saved == TemplateVersion("welcome", 4, 5000, b"v4")
        assert await store.active_version("welcome") == 4
        assert [(await store.get_version("welcome", n)).spec for n in (1, 2, 3, 4)] == [b"v1", b"v2", b"v3", b"v4"]


async def check_templates_are_apart(h: Harness[Any]) -> None:
    async with h.open() as store:
        await store.create_template("a", b"a1", 1000)
        await store.create_template("b", b"b1", 1000)
        await store.add_version("a", b"a2", 2000)
        assert (await store.active_version("a"), await store.active_version("b")) == (2, 1)
        assert await store.versions("b") == [(1, 1000)]
        assert await store.get_version("b", 2) is None


async def check_concurrent_saves_get_distinct_numbers(h: Harness[Any]) -> None:
    saved: list[TemplateVersion] = []
    async with h.open() as store:
        await store.create_template("busy", b"v1", 1000)

        async def save(i: int) -> None:
            version = await store.add_version("busy", b"edit %d" % i, 2000 + i)
            assert version is not None
            saved.append(version)

        async with trio.open_nursery() as nursery:
            for i in range(10):
                nursery.start_soon(save, i)
        numbers = sorted(v.version for v in saved)
        assert numbers == list(range(2, 12)), numbers
        for version in saved:  # each save kept its own content
            assert await store.get_version("busy", version.version) == version
        assert await store.active_version("busy") in numbers


async def check_templates_survive_a_restart(h: Harness[Any]) -> None:
    async with h.open() as store:
        await store.create_template("welcome", b"v1", 1000)
        await store.add_version("welcome", b"v2", 2000)
        await store.activate("welcome", 1, 3000)
    async with h.open() as store:
        assert await store.active_version("welcome") == 1
        assert await store.versions("welcome") == [(2, 2000), (1, 1000)]
        assert await store.get_version("welcome", 2) == TemplateVersion("welcome", 2, 2000, b"v2")
