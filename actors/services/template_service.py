"""Templates, the I/O part: the TemplateStore behind an in-process LRU of compiled versions.

The API (actors/api/template_routes.py) saves, reads and previews through it; the Ingress
calls `apply_template` to turn `template_id` + `data` + `locale` into per-channel
content before the notification goes on the bus.

Rendering never holds the event loop (nor does parsing: a template is compiled in a
worker thread when it is saved or loaded into the cache): each request (a send or a preview) renders with
one budget of work for all its fields (actors.domain.rendering.Budget), and off the Trio thread
(`trio.to_thread.run_sync`, at most `render_threads` at once) when it may take long: a
preview always, a send when a cheap estimate (the template's literal size and tags, the
size of `data`, and section nesting) says it may take more than `inline_steps`. Simple
templates over small data (the common send) render inline: a thread hop costs more
than they do.

Caching: versions are immutable, so a compiled version is cached under
(template_id, version) for good. What changes is which version is active: that pointer
is cached too and dropped on every save or activation. A read that raced with a write
does not cache what it read (an epoch counter tells), so a rollback is seen at once by
every later send on this node. (Several nodes would broadcast the invalidation over the
State's pub/sub; the embedded node is one process.)
"""

from __future__ import annotations

import dataclasses
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec
import trio

from protocol.api import NotificationRequest
from protocol.channels import Channel
from protocol.problems import FieldError, Problem
from protocol.template_schemas import RenderRequest, RenderResult, TemplateSpec
from reactor.clock import wall_ms
from reactor.ports import TemplateStore, TemplateVersion

from ..domain.channel_limits import SMS_MAX_SEGMENTS
from ..domain.rendering import RENDER_BUDGET, Budget, CompiledTemplate, Rendered, compile_template, estimate_work, render_template
from ..domain.template_choice import locale_chain, pick_variant, resolve_part

INLINE_STEPS = 10_000  # estimated Python steps a send may render on the event loop (a few milliseconds at most)

K = TypeVar("K")
V = TypeVar("V")

_spec_decoder = msgspec.json.Decoder(TemplateSpec)


class LRU(Generic[K, V]):
    """A bounded mapping that forgets the least recently used entry first."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        """The value (now the most recently used), or None."""
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        """Store, evicting the least recently used entry past the size."""
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def pop(self, key: K) -> None:
        """Forget a key (if present)."""
        self._items.pop(key, None)

    def __len__(self) -> int:
        return len(self._items)


def _give_up_the_gil() -> None:
    time.sleep(0)  # releases the GIL; a thread waiting for it (the event loop's) may take it


class TemplateExists(Exception):
    pass


class TemplateNotFound(Exception):
    pass


class Applied(msgspec.Struct, frozen=True, gc=False):
    """A submission after the template step: its content, the log's template tag, and the web item's `data`
    (a Struct: made per item, cheaper than a frozen dataclass)."""

    request: NotificationRequest
    template: str  # "welcome@3#B", or "" for inline content
    web_data: Mapping[str, Any]  # inline: the send's `data`; templated: only what the web part declares


@dataclass(frozen=True, slots=True)
class Loaded:
    """A compiled version and when it was saved."""

    compiled: CompiledTemplate
    created_ms: int


def _unprocessable(errors: list[FieldError]) -> Problem:
    detail = "; ".join(f"{e.field}: {e.message}" for e in errors)
    return Problem(title="Unprocessable notification", status=422, detail=detail, errors=errors)


class TemplateService:
    """Save, read, activate and render templates; compiled versions cached in process.

    A version never changes once saved, so compiled versions are cached for good. The
    template id -> active version pointer is cached for `active_ttl_s` (Trio's clock) and
    dropped at once by a save or an activation on this node: a save or a rollback made on
    another node is seen here within `active_ttl_s`.
    """

    def __init__(
        self, store: TemplateStore, *, sms_max_segments: int = SMS_MAX_SEGMENTS, cache_size: int = 256,
        render_threads: int = 2, budget: int = RENDER_BUDGET, inline_steps: int = INLINE_STEPS, active_ttl_s: float = 5.0,
    ) -> None:
        self.store = store
        self.sms_max_segments = sms_max_segments
        self.compiled: LRU[tuple[str, int], Loaded] = LRU(cache_size)
        self.active: LRU[str, tuple[int, float]] = LRU(cache_size * 4)  # id -> (active version, cached until)
        self.active_ttl_s = active_ttl_s
        self._epoch = 0
        self.hits = 0
        self.misses = 0
        self.budget = budget  # units of work per request, shared by all its fields
        self.inline_steps = inline_steps
        self.limiter = trio.CapacityLimiter(max(1, render_threads))  # rendering threads at once (the GIL: few help)
        self.rendered_inline = 0
        self.rendered_in_thread = 0

    async def _compile(self, template_id: str, version: int, spec: TemplateSpec) -> CompiledTemplate:
        """Parse a template in a worker thread: a large one takes tens of milliseconds (InvalidTemplate as compile_template)."""
        return await trio.to_thread.run_sync(compile_template, template_id, version, spec, limiter=self.limiter)

    async def render(
        self, template: CompiledTemplate, channels: Sequence[Channel], data: Mapping[str, Any], *, locale: str | None,
        variant: str, in_thread: bool = False,
    ) -> Rendered | list[FieldError]:
        """Render with one budget for the request: inline when the estimate is small, else in a worker thread."""

        def run(budget: Budget) -> Rendered | list[FieldError]:
            return render_template(
                template, channels, data, locale=locale, variant=variant, sms_max_segments=self.sms_max_segments, budget=budget,
            )

        if not in_thread:
            data_bytes = len(msgspec.json.encode(data))
            in_thread = estimate_work(template, channels, data_bytes, locale=locale, variant=variant) > self.inline_steps
        if not in_thread:
            self.rendered_inline += 1
            return run(Budget(self.budget))
        self.rendered_in_thread += 1
        # The thread gives the GIL up every few thousand units (a millisecond or so): the event loop's thread,
        # waiting for it, then runs at once instead of after the 5 ms switch interval, once per thread in its way.
        return await trio.to_thread.run_sync(run, Budget(self.budget, pause=_give_up_the_gil), limiter=self.limiter)

    def _saved(self, template_id: str, saved: TemplateVersion, compiled: CompiledTemplate) -> Loaded:
        self._epoch += 1
        self.active.pop(template_id)
        loaded = Loaded(compiled, saved.created_ms)
        self.compiled.put((template_id, saved.version), loaded)
        return loaded

    async def create(self, template_id: str, spec: TemplateSpec) -> Loaded:
        """Validate and save version 1; InvalidTemplate or TemplateExists."""
        compiled = await self._compile(template_id, 1, spec)
        saved = await self.store.create_template(template_id, msgspec.json.encode(spec), wall_ms())
        if saved is None:
            raise TemplateExists(template_id)
        return self._saved(template_id, saved, compiled)

    async def update(self, template_id: str, spec: TemplateSpec) -> Loaded:
        """Validate, save the next version and activate it; InvalidTemplate or TemplateNotFound."""
        compiled = await self._compile(template_id, 1, spec)  # validate before writing
        saved = await self.store.add_version(template_id, msgspec.json.encode(spec), wall_ms())
        if saved is None:
            raise TemplateNotFound(template_id)
        return self._saved(template_id, saved, dataclasses.replace(compiled, version=saved.version))

    async def activate(self, template_id: str, version: int) -> Loaded:
        """Make a saved version active again (a rollback); TemplateNotFound if there is none."""
        if not await self.store.activate(template_id, version, wall_ms()):
            raise TemplateNotFound(f"{template_id}@{version}")
        self._epoch += 1
        self.active.pop(template_id)
        loaded = await self.get(template_id, version)
        assert loaded is not None, "an activated version exists"
        return loaded

    async def active_version(self, template_id: str) -> int | None:
        """The active version (cached for `active_ttl_s`, or until the next save or activation here)."""
        cached = self.active.get(template_id)
        if cached is not None and trio.current_time() < cached[1]:
            return cached[0]
        epoch = self._epoch
        version = await self.store.active_version(template_id)
        if version is not None and epoch == self._epoch:
            self.active.put(template_id, (version, trio.current_time() + self.active_ttl_s))
        return version

    async def get(self, template_id: str, version: int | None = None) -> Loaded | None:
        """A compiled version (the active one by default), None if there is no such version."""
        if version is None:
            version = await self.active_version(template_id)
            if version is None:
                return None
        cached = self.compiled.get((template_id, version))
        if cached is not None:
            self.hits += 1
            return cached
        self.misses += 1
        saved = await self.store.get_version(template_id, version)
        if saved is None:
            return None
        loaded = Loaded(await self._compile(template_id, version, _spec_decoder.decode(saved.spec)), saved.created_ms)
        self.compiled.put((template_id, version), loaded)
        return loaded

    async def versions(self, template_id: str) -> list[tuple[int, int]]:
        """(version, created_ms), newest first."""
        return await self.store.versions(template_id)

    async def render_for(self, request: NotificationRequest) -> Applied | Problem:
        """The request with its content rendered from its template, the log's template tag and the web data; or a 422."""
        assert request.template_id is not None
        loaded = await self.get(request.template_id)
        if loaded is None:
            return _unprocessable([FieldError("template_id", f"no template {request.template_id!r}")])
        template = loaded.compiled
        variant = pick_variant(template.id, request.user_id or "", template.weights)
        result = await self.render(template, request.channels, request.data, locale=request.locale, variant=variant)
        if isinstance(result, list):
            return _unprocessable(result)
        return Applied(msgspec.structs.replace(request, content=result.content), result.tag, result.web_data)

    async def preview(self, template_id: str, wanted: RenderRequest) -> RenderResult | list[FieldError]:
        """Render for a preview: the parts, the SMS segments, the push size; TemplateNotFound."""
        loaded = await self.get(template_id, wanted.version)
        if loaded is None:
            raise TemplateNotFound(template_id if wanted.version is None else f"{template_id}@{wanted.version}")
        template = loaded.compiled
        if wanted.variant is not None and wanted.user_id is not None:
            return [FieldError("variant", "give user_id (to pick as for a send) or variant, not both")]
        if wanted.variant is not None and wanted.variant not in template.variants:
            names = ", ".join(sorted(template.variants)) or "none"
            return [FieldError("variant", f"not one of the template's variants ({names})")]
        variant = wanted.variant or (pick_variant(template.id, wanted.user_id, template.weights) if wanted.user_id else "")
        chain = locale_chain(wanted.locale, template.default_locale)
        channels = wanted.channels or [c for c in Channel if resolve_part(template, c, chain, variant) is not None]
        result = await self.render(template, channels, wanted.data, locale=wanted.locale, variant=variant, in_thread=True)
        if isinstance(result, list):
            return result
        return RenderResult(
            id=template.id,
            version=template.version,
            template=result.tag,
            content=result.content,
            locales=result.locales,
            variant=variant,
            sms=result.sms,
            push_bytes=result.push_bytes,
            web_data=result.web_data,
        )


def inline_content(request: NotificationRequest) -> Applied | None:
    """apply_template's answer to a request with inline content and no template (nothing to render); None otherwise."""
    if request.content is None or request.template_id is not None:
        return None
    return Applied(request, "", request.data)


async def apply_template(
    renderer: TemplateService | None, request: NotificationRequest, preferred_locale: str | None = None
) -> Applied | Problem:
    """The Ingress's template step: exactly one of content and template_id; a template's parts become the content.

    The locale is the request's, else the user's preferred one, else the template's default.
    What of `data` reaches the browser: with inline content (which nothing renders) the
    send's `data` is the web item's data; with a template, `data` is the template's input
    and the web item carries only the keys its web part declares, rendered.
    """
    if request.content is not None and request.template_id is not None:
        return _unprocessable([FieldError("template_id", "give content or template_id, not both")])
    inline = inline_content(request)
    if inline is not None:
        return inline
    if request.template_id is None:
        return _unprocessable([FieldError("content", "required, unless template_id names a template")])
    if renderer is None:
        return _unprocessable([FieldError("template_id", "templates are not enabled on this node")])
    if request.locale is None and preferred_locale is not None:
        request = msgspec.structs.replace(request, locale=preferred_locale)
    return await renderer.render_for(request)
