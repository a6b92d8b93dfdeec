"""The TemplateService's cache of compiled versions over the SQLite TemplateStore.

The TemplateStore port itself (immutable versions, one active, rollbacks, restarts) is checked
on every backend by its conformance suite, tests/conformance/suites/templates.py.
"""

import msgspec
import pytest

from actors.domain.rendering import InvalidTemplate
from actors.services.template_service import LRU, TemplateExists, TemplateNotFound, TemplateService
from protocol.template_schemas import TemplateSpec
from reactor.backends.embedded import SqliteTemplateStore


def spec(subject: str) -> TemplateSpec:
    return msgspec.convert({"locales": {"en": {"email": {"subject": subject, "text": "t"}}}}, TemplateSpec)


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


async def test_a_save_or_rollback_on_another_node_is_seen_within_the_active_ttl(tmp_path, mock_clock):
    """Two nodes' services over one store: the pointer each caches goes stale for at most `active_ttl_s`."""
    store = SqliteTemplateStore(tmp_path / "t.sqlite3")
    await store.open()
    try:
        here, there = TemplateService(store, active_ttl_s=5.0), TemplateService(store, active_ttl_s=5.0)
        await here.create("welcome", spec("one"))
        assert (await there.get("welcome")).compiled.version == 1  # cached there
        await here.update("welcome", spec("two"))
        assert (await here.get("welcome")).compiled.version == 2  # here: at once
        assert (await there.get("welcome")).compiled.version == 1  # there: still its cached pointer
        mock_clock.jump(5.0)
        assert (await there.get("welcome")).compiled.version == 2  # within the TTL
        await here.activate("welcome", 1)  # a rollback
        mock_clock.jump(5.0)
        assert (await there.get("welcome")).compiled.version == 1
    finally:
        await store.close()
