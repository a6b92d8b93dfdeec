"""The SQLite TemplateStore and the TemplateService's cache of compiled versions."""

import msgspec
import pytest

from actors.domain.rendering import InvalidTemplate
from actors.services.template_service import LRU, TemplateExists, TemplateNotFound, TemplateService
from protocol.template_schemas import TemplateSpec
from reactor.backends.embedded import SqliteTemplateStore


def spec(subject: str) -> TemplateSpec:
    return msgspec.convert({"locales": {"en": {"email": {"subject": subject, "text": "t"}}}}, TemplateSpec)


async def test_versions_are_immutable_one_is_active_and_all_survive_a_reopen(tmp_path):
    store = SqliteTemplateStore(tmp_path / "templates.sqlite3")
    await store.open()
    first = await store.create_template("welcome", b"v1", 1000)
    assert (first.version, first.created_ms) == (1, 1000)
    assert await store.create_template("welcome", b"again", 1001) is None
    assert (await store.get_version("welcome", 1)).spec == b"v1"  # the refused create changed nothing
    assert (await store.add_version("welcome", b"v2", 2000)).version == 2
    assert (await store.add_version("welcome", b"v3", 3000)).version == 3
    assert await store.add_version("nope", b"x", 3000) is None
    assert await store.active_version("welcome") == 3
    assert await store.activate("welcome", 1, 4000)
    assert not await store.activate("welcome", 9, 4000)
    await store.close()
    await store.close()

    reopened = SqliteTemplateStore(tmp_path / "templates.sqlite3")
    await reopened.open()
    assert await reopened.active_version("welcome") == 1
    assert await reopened.versions("welcome") == [(3, 3000), (2, 2000), (1, 1000)]
    assert (await reopened.get_version("welcome", 2)).spec == b"v2"
    assert await reopened.get_version("welcome", 4) is None
    assert await reopened.active_version("nope") is None and await reopened.versions("nope") == []
    assert (await reopened.add_version("welcome", b"v4", 5000)).version == 4  # after a rollback: the next number
    await reopened.close()


def test_lru_forgets_the_least_recently_used():
    cache: LRU[str, int] = LRU(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1
    cache.put("c", 3)
    assert (cache.get("a"), cache.get("b"), cache.get("c"), len(cache)) == (1, None, 3, 2)
    cache.pop("a")
    assert cache.get("a") is None


async def test_service_caches_compiled_versions_and_sees_every_update_and_rollback(tmp_path):
    store = SqliteTemplateStore(tmp_path / "t.sqlite3")
    await store.open()
    service = TemplateService(store)
    try:
        await service.create("welcome", spec("one"))
        with pytest.raises(TemplateExists):
            await service.create("welcome", spec("dup"))
        with pytest.raises(InvalidTemplate):
            await service.update("welcome", spec("{{#x}}"))
        with pytest.raises(TemplateNotFound):
            await service.update("other", spec("x"))
        assert (await service.get("welcome")).compiled.spec.locales["en"].email.subject == "one"
        hits = service.hits
        assert (await service.get("welcome")).compiled.version == 1
        assert service.hits == hits + 1  # served from the cache, no store read

        await service.update("welcome", spec("two"))
        assert (await service.get("welcome")).compiled.version == 2  # the active pointer was invalidated
        rolled = await service.activate("welcome", 1)
        assert rolled.compiled.version == 1
        assert (await service.get("welcome")).compiled.spec.locales["en"].email.subject == "one"
        with pytest.raises(TemplateNotFound):
            await service.activate("welcome", 7)
        assert await service.get("welcome", 7) is None
        assert await service.get("missing") is None

        cold = TemplateService(store, cache_size=1)  # another node's view: everything from the store
        assert (await cold.get("welcome")).compiled.version == 1
        assert (await cold.get("welcome", 2)).compiled.spec.locales["en"].email.subject == "two"
        assert cold.misses == 2
    finally:
        await store.close()
