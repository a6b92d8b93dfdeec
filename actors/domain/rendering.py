"""Templates, rendering: parse Mustache, compile and validate a template, render it for a recipient.

The locale and variant a recipient gets are chosen by template_choice.py, the limits the
rendered content must keep (SMS segments, push payload) measured by channel_limits.py.
No I/O and no clock here (actors/services/template_service.py adds the store and the
cache), so all of it is property-tested (tests/templates/).

Mustache is parsed by chevron's tokenizer (sections, inverted sections, comments,
standalone lines, set-delimiter tags). The token stream is compiled into a small tree
and rendered here rather than by `chevron.render`, for five reasons:

- escaping is a flag of the part: email HTML escapes `{{x}}` (`{{{x}}}` and `{{& x}}`
  do not), every other part (subject, text, SMS, push, web) is rendered unescaped;
- lookups are strict dictionary keys and list indexes: chevron falls back to `getattr`,
  which would let a template read Python attributes (`{{x.__class__}}`) or call methods;
- partials are refused when saving (chevron would read them from the working
  directory), and lambdas cannot occur (data is JSON);
- rendering has a budget per request (units of work: output characters, section
  iterations, scope lookups), shared by every field the request renders, so nested
  sections over a long list, or a template with many fields, cannot take the node down;
- chevron's renderer mis-nests `{{^l}}` inside `{{#l}}` when `l` is a list (and can
  crash on it); the tree built here cannot.

Where both apply, the output is chevron's (a property test checks it), with three
deliberate differences: `'` is escaped too, booleans print as `true`/`false` and
lists/objects as JSON, and a falsy list item (0, "") still renders its section body,
as the Mustache spec says.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from chevron.tokenizer import tokenize

from protocol.channels import Channel
from protocol.content import Content, EmailContent, PushContent, SmsContent, WebContent, WebhookContent
from protocol.header_safe import header_text_problem
from protocol.problems import FieldError, field_of
from protocol.template_schemas import (
    ChannelPart, EmailPart, Parts, PushPart, SmsInfo, SmsPart, TemplateSpec, Variables, WebhookPart,
)

from .digests import check_window
from .channel_limits import PUSH_MAX_BYTES, SMS_MAX_SEGMENTS, WEB_DATA_MAX_BYTES, push_payload_bytes, sms_info
from .template_choice import choose_parts, locale_chain, normalize_locale, resolve_part, template_tag

# Units of work per request (a send or a preview), shared by all the fields it renders: output
# characters, section iterations and scope lookups. The largest content that passes validation
# (email text and html of 100,000 characters each, plus the small parts) stays well under it.
RENDER_BUDGET = 600_000
MAX_NESTING = 32  # sections inside sections, at most (rendering recurses once per level)


# -- the compiled form of one Mustache source


@dataclass(frozen=True, slots=True)
class Literal:
    text: str


@dataclass(frozen=True, slots=True)
class Var:
    key: str
    escape: bool
    parts: tuple[str, ...] = ()  # the dotted name, split once when parsed

    def __post_init__(self) -> None:
        if not self.parts:
            object.__setattr__(self, "parts", tuple(self.key.split(".")))


@dataclass(frozen=True, slots=True)
class Section:
    key: str
    inverted: bool
    body: tuple[Node, ...]
    parts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.parts:
            object.__setattr__(self, "parts", tuple(self.key.split(".")))


Node = Literal | Var | Section


class TemplateSyntaxError(ValueError):
    """A Mustache source that does not parse, or uses what Herald refuses (partials)."""


class RenderTooLarge(ValueError):
    """Rendering went over its budget of work (output characters, section iterations, lookups)."""


class Budget:
    """The units of rendering work a request has left; every field it renders draws from it.

    `pause` (rendering in a worker thread): called every `pause_every` units, to let the
    event loop's thread take the GIL at once instead of after Python's switch interval.
    """

    __slots__ = ("units", "left", "pause", "pause_every", "_next_pause")

    def __init__(self, units: int = RENDER_BUDGET, *, pause: Callable[[], None] | None = None, pause_every: int = 3000) -> None:
        self.units = units
        self.left = units
        self.pause = pause
        self.pause_every = pause_every
        self._next_pause = units - pause_every if pause is not None else -1

    def charge(self, n: int) -> None:
        """Spend n units; RenderTooLarge once the budget is gone."""
        self.left -= n
        if self.left < 0:
            raise RenderTooLarge(f"rendering went over its budget of {self.units} units (output characters, section iterations, lookups)")
        if self.left < self._next_pause:  # never without a pause: it starts at -1 then
            self._next_pause = self.left - self.pause_every
            assert self.pause is not None
            self.pause()

    @property
    def spent(self) -> int:
        return self.units - self.left


_NAME = re.compile(r"^[^\s.{}#^/!>&=]+(\.[^\s.{}#^/!>&=]+)*$")


def _check_name(key: str) -> None:
    if key != "." and not _NAME.match(key):
        raise TemplateSyntaxError(f"not a variable name: {key!r}" if key else "an empty tag")


def parse(source: str, *, html: bool = False) -> tuple[Node, ...]:
    """Parse a Mustache source; with html=True, `{{x}}` escapes (else nothing does)."""
    try:
        tokens = list(tokenize(source))
    except SyntaxError as exc:  # chevron's ChevronError
        raise TemplateSyntaxError(" ".join(str(exc).split())) from None
    except IndexError:  # chevron's tokenizer on `{{}}`
        raise TemplateSyntaxError("an empty tag") from None
    stack: list[tuple[str, bool, list[Node]]] = [("", False, [])]
    for kind, key in tokens:
        body = stack[-1][2]
        if kind == "literal":
            body.append(Literal(key))
        elif kind in ("variable", "no escape"):
            _check_name(key)
            body.append(Var(key, escape=html and kind == "variable"))
        elif kind in ("section", "inverted section"):
            _check_name(key)
            if len(stack) > MAX_NESTING:
                raise TemplateSyntaxError(f"sections nested deeper than {MAX_NESTING} levels")
            stack.append((key, kind == "inverted section", []))
        elif kind == "end":
            name, inverted, children = stack.pop()  # the tokenizer checked that the names match
            stack[-1][2].append(Section(name, inverted, tuple(children)))
        elif kind == "partial":
            raise TemplateSyntaxError(f"partials are not supported: {{{{> {key}}}}}")
        elif kind == "no escape?":
            raise TemplateSyntaxError(f"unclosed triple mustache: {{{{{{{key}}}}} needs a third closing brace")
        # "set delimiter" tags have done their work in the tokenizer; comments are dropped by it
    return tuple(stack[0][2])


def variables_of(nodes: Sequence[Node]) -> tuple[frozenset[str], frozenset[str]]:
    """(required, optional): names outside any section are required; section names and names inside sections are not."""
    required: set[str] = set()
    optional: set[str] = set()

    def walk(children: Sequence[Node], depth: int) -> None:
        for node in children:
            if isinstance(node, Var) and node.key != ".":
                (required if depth == 0 else optional).add(node.key)
            elif isinstance(node, Section):
                if node.key != ".":
                    optional.add(node.key)
                walk(node.body, depth + 1)

    walk(nodes, 0)
    return frozenset(required), frozenset(optional - required)


# -- rendering


_MISSING: Any = object()
_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#x27;"})


def html_escape(text: str) -> str:
    """Escape & < > " ' for HTML text and attribute values."""
    return text.translate(_ESCAPES)


_MAX_INDEX_DIGITS = 9  # a list index longer than this is past any list (and int() refuses over 4300 digits)


def _walk(data: Any, parts: Sequence[str]) -> Any:
    value = data
    for part in parts:
        if isinstance(value, Mapping):
            if part not in value:
                return _MISSING
            value = value[part]
        elif (
            isinstance(value, list) and part.isascii() and part.isdigit() and len(part) <= _MAX_INDEX_DIGITS
            and int(part) < len(value)
        ):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def lookup(data: Any, key: str) -> Any:
    """Walk a dotted name through dicts (keys) and lists (indexes); _MISSING if it is not there."""
    return _walk(data, key.split("."))


def is_missing(data: Any, key: str) -> bool:
    """True when a required name is absent or null in the data."""
    value = lookup(data, key)
    return value is _MISSING or value is None


def _resolve(node: Var | Section, scopes: list[Any]) -> Any:
    if node.key == ".":
        return scopes[-1]
    for scope in reversed(scopes):
        value = _walk(scope, node.parts)
        if value is not _MISSING:
            return value
    return _MISSING


def _falsy(value: Any) -> bool:
    return value is _MISSING or value is None or value is False or value == "" or value == 0 or value == [] or value == {}


def _text(value: Any) -> str:
    if value is _MISSING or value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, (list, dict)):
        return msgspec.json.encode(value).decode() if value else ""
    return str(value)


class _Output:
    def __init__(self, budget: Budget) -> None:
        self.parts: list[str] = []
        self.budget = budget

    def charge(self, n: int) -> None:
        self.budget.charge(n)

    def write(self, text: str) -> None:
        self.budget.charge(len(text) or 1)  # a node that writes nothing still costs a unit
        self.parts.append(text)


def _render(nodes: Sequence[Node], scopes: list[Any], out: _Output) -> None:
    for node in nodes:
        if isinstance(node, Literal):
            out.write(node.text)
        elif isinstance(node, Var):
            out.charge(len(scopes) * len(node.parts))  # the steps a lookup may take: each part of the name, in each scope
            text = _text(_resolve(node, scopes))
            out.write(html_escape(text) if node.escape else text)
        else:
            out.charge(len(scopes) * len(node.parts))
            value = _resolve(node, scopes)
            if node.inverted:
                if _falsy(value):
                    out.charge(1)
                    _render(node.body, scopes, out)
            elif isinstance(value, list):
                for item in value:
                    out.charge(1)
                    scopes.append(item)
                    _render(node.body, scopes, out)
                    scopes.pop()
            elif not _falsy(value):
                out.charge(1)
                scopes.append(value)
                _render(node.body, scopes, out)
                scopes.pop()


def render_nodes(nodes: Sequence[Node], data: Mapping[str, Any], budget: Budget | int = RENDER_BUDGET) -> str:
    """Render compiled Mustache against data; RenderTooLarge past the budget (a Budget is shared, an int is this call's)."""
    out = _Output(budget if isinstance(budget, Budget) else Budget(budget))
    _render(nodes, [data], out)
    return "".join(out.parts)


def render(source: str, data: Mapping[str, Any], *, html: bool = False) -> str:
    """Parse and render in one step (escaping only with html=True)."""
    return render_nodes(parse(source, html=html), data)


# -- compiling and validating a whole template


@dataclass(frozen=True, slots=True)
class CompiledSource:
    path: str  # the field in the template body: "locales.fr.email.subject"
    nodes: tuple[Node, ...]
    required: frozenset[str]
    optional: frozenset[str]
    shape: Shape  # for the estimate of the work rendering it may take


@dataclass(frozen=True, slots=True)
class Shape:
    """What a cheap estimate of the time rendering a source takes needs: its nodes, lookups, nesting."""

    nodes: int  # literals, variables and sections
    literal_chars: int
    tags: int  # variables and sections
    steps: int  # the parts of their dotted names, summed
    depth: int  # sections inside sections (0: none)


def shape_of(nodes: Sequence[Node]) -> Shape:
    count, literal, tags, steps, depth = 0, 0, 0, 0, 0

    def walk(children: Sequence[Node], level: int) -> None:
        nonlocal count, literal, tags, steps, depth
        for node in children:
            count += 1
            if isinstance(node, Literal):
                literal += len(node.text)
            else:
                tags += 1
                steps += len(node.parts)
                if isinstance(node, Section):
                    depth = max(depth, level + 1)
                    walk(node.body, level + 1)

    walk(nodes, 0)
    return Shape(count, literal, tags, steps, depth)


def work_estimate(shape: Shape, data_bytes: int) -> int:
    """An upper bound of the Python steps rendering one source may take, for choosing where to render it.

    One pass: a step per node and per lookup step in each scope, and one per 64
    characters written (copies run at C speed): the literals, and each tag writing at
    most the whole data HTML-escaped (every value comes from `data`, JSON-encoded at most
    as long; an escape is at most 6 characters). Each level of sections may repeat the
    pass over a list of at most data_bytes / 2 + 1 items (a JSON item takes 2 bytes).
    """
    one_pass = shape.nodes + shape.steps * (shape.depth + 1) + (shape.literal_chars + shape.tags * 6 * data_bytes) // 64
    if shape.depth == 0:
        return one_pass
    repeats: int = (data_bytes // 2 + 1) ** min(shape.depth, MAX_NESTING)  # an int: the exponent is >= 1 (typeshed: Any)
    return one_pass * repeats


@dataclass(frozen=True, slots=True)
class CompiledPart:
    channel: Channel
    path: str  # "locales.fr.email", or "variants.B.locales.fr.email"
    locale: str  # as the template spells it
    fields: tuple[tuple[str, CompiledSource], ...]  # ("subject", ...), push data as ("data.<key>", ...)


LocaleParts = dict[str, dict[Channel, CompiledPart]]  # normalized locale -> channel -> part


@dataclass(frozen=True)
class CompiledTemplate:
    id: str
    version: int
    spec: TemplateSpec
    default_locale: str  # normalized
    base: LocaleParts
    variants: dict[str, LocaleParts]
    weights: tuple[tuple[str, int], ...]
    variables: Variables


class InvalidTemplate(ValueError):
    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))
        self.errors = errors


def _part_sources(part: ChannelPart) -> list[tuple[str, str, bool]]:
    """(field name, source, html) of each Mustache source in one channel part."""
    found: list[tuple[str, str | None, bool]]
    if isinstance(part, EmailPart):
        found = [("subject", part.subject, False), ("text", part.text, False), ("html", part.html, True)]
    elif isinstance(part, SmsPart):
        found = [("text", part.text, False)]
    elif isinstance(part, (PushPart, WebhookPart)):
        found = [("title", part.title, False), ("body", part.body, False)]
        found += [(f"data.{key}", value, False) for key, value in part.data.items()]
    else:
        found = [("title", part.title, False), ("body", part.body, False), ("url", part.url, False)]
        found += [(f"data.{key}", value, False) for key, value in part.data.items()]  # the web item's data: declared, rendered
    return [(name, source, html) for name, source, html in found if source is not None]


def _compile_locales(prefix: str, locales: Mapping[str, Parts], errors: list[FieldError], *, base: bool) -> LocaleParts:
    compiled: LocaleParts = {}
    spelled: dict[str, str] = {}
    for locale, parts in locales.items():
        key = normalize_locale(locale)
        if key in spelled:
            errors.append(FieldError(f"{prefix}.{locale}", f"the same locale as {spelled[key]}"))
            continue
        spelled[key] = locale
        compiled[key] = {}
        if base and all(parts.for_channel(c.value) is None for c in Channel):
            errors.append(FieldError(f"{prefix}.{locale}", "has no channel part (email, sms, push, web, webhook)"))
        for channel in Channel:
            part = parts.for_channel(channel.value)
            if part is None:
                continue
            path = f"{prefix}.{locale}.{channel.value}"
            fields = []
            for name, source, html in _part_sources(part):
                try:
                    nodes = parse(source, html=html)
                except TemplateSyntaxError as exc:
                    errors.append(FieldError(f"{path}.{name}", str(exc)))
                    continue
                required, optional = variables_of(nodes)
                fields.append((name, CompiledSource(f"{path}.{name}", nodes, required, optional, shape_of(nodes))))
            compiled[key][channel] = CompiledPart(channel, path, locale, tuple(fields))
    return compiled


def compile_template(template_id: str, version: int, spec: TemplateSpec) -> CompiledTemplate:
    """Parse every source of a template; InvalidTemplate naming each bad field."""
    errors: list[FieldError] = []
    base = _compile_locales("locales", spec.locales, errors, base=True)
    default = normalize_locale(spec.default_locale)
    if default not in base:
        errors.append(FieldError("default_locale", f"{spec.default_locale!r} is not one of the template's locales"))
    variants = {
        name: _compile_locales(f"variants.{name}.locales", variant.locales, errors, base=False)
        for name, variant in spec.variants.items()
    }
    if spec.variants and sum(v.weight for v in spec.variants.values()) == 0:
        errors.append(FieldError("variants", "at least one variant needs a weight above 0"))
    errors += _incomplete_email_parts(default, base, variants, {e.field for e in errors})
    if spec.digest is not None:
        errors += check_window(spec.digest.window, "digest.window")
    if errors:
        raise InvalidTemplate(errors)
    sources = [
        source
        for locales in (base, *variants.values())
        for parts in locales.values()
        for part in parts.values()
        for _, source in part.fields
    ]
    required = frozenset().union(*(s.required for s in sources))
    optional = frozenset().union(*(s.optional for s in sources)) - required
    return CompiledTemplate(
        id=template_id,
        version=version,
        spec=spec,
        default_locale=default,
        base=base,
        variants=variants,
        weights=tuple(sorted((name, v.weight) for name, v in spec.variants.items())),
        variables=Variables(sorted(required), sorted(optional)),
    )


def _incomplete_email_parts(default: str, base: LocaleParts, variants: dict[str, LocaleParts], bad: set[str]) -> list[FieldError]:
    """Email parts without a subject, or without text and html, even after falling back field by field
    (a field already refused, `bad`, is not named twice)."""
    shape = CompiledTemplate("", 0, TemplateSpec(locales={}), default, base, variants, (), Variables([], []))
    errors: list[FieldError] = []
    for variant, locales in (("", base), *variants.items()):
        for locale, parts in locales.items():
            part = parts.get(Channel.EMAIL)
            if part is None:
                continue
            chain = locale_chain(locale, default)
            merged = resolve_part(shape, Channel.EMAIL, chain, variant)
            names = {name for name, _ in merged.fields} if merged is not None else set()
            where = f"here or in a locale it falls back to ({', '.join(chain)})"
            if "subject" not in names and f"{part.path}.subject" not in bad:
                errors.append(FieldError(f"{part.path}.subject", f"needs a subject, {where}"))
            if not names & {"text", "html"} and not bad & {f"{part.path}.text", f"{part.path}.html"}:
                errors.append(FieldError(part.path, f"needs text or html, {where}"))
    return errors


def validate(spec: TemplateSpec) -> list[FieldError]:
    """Every problem with a template, each naming its field ([] when it is valid)."""
    try:
        compile_template("check", 1, spec)
    except InvalidTemplate as exc:
        return exc.errors
    return []


# -- rendering a whole template


@dataclass(frozen=True)
class Rendered:
    content: Content
    locales: dict[str, str]  # channel -> the template locale whose part was used
    variant: str
    tag: str
    sms: SmsInfo | None = None
    push_bytes: int | None = None
    web_data: dict[str, str] = field(default_factory=dict)  # the web part's declared `data`, rendered: the web item's data


_ONE_LINE = re.compile(r"\s*[\r\n]+\s*")
_SINGLE_LINE_FIELDS = {Channel.EMAIL: "subject", Channel.PUSH: "title", Channel.WEB: "title", Channel.WEBHOOK: "title"}
_CONTENT_TYPES: dict[Channel, Any] = {
    Channel.EMAIL: EmailContent, Channel.SMS: SmsContent, Channel.PUSH: PushContent, Channel.WEB: WebContent,
    Channel.WEBHOOK: WebhookContent,
}


class UnsafeHeader(ValueError):
    """A rendered email header (the subject) that cannot go in an email: the error names the data or the field."""

    def __init__(self, error: FieldError) -> None:
        super().__init__(f"{error.field}: {error.message}")
        self.error = error


def _check_header(source: CompiledSource, data: Mapping[str, Any], text: str) -> None:
    """Refuse a subject with a line break, control or encoded word that came from `data` or from the template.

    The data a subject names is checked first, so that the error names `data.<name>`;
    what is left (a value read inside a section, the template's own text) names the field.
    """
    for name in sorted(source.required | source.optional):
        value = lookup(data, name)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            problem = header_text_problem(_text(value))
            if problem is not None:
                raise UnsafeHeader(FieldError(f"data.{name}", f"used in the email subject ({source.path}): {problem}"))
    problem = header_text_problem(text)
    if problem is not None:
        raise UnsafeHeader(FieldError(source.path, f"renders to a subject that {problem}"))


def _build(part: CompiledPart, data: Mapping[str, Any], budget: Budget) -> tuple[Any, dict[str, str]]:
    """Render one part into its protocol.content struct and its declared `data` map (push: inside the content too);
    raises RenderTooLarge, UnsafeHeader or msgspec.ValidationError."""
    values: dict[str, Any] = {}
    push_data: dict[str, str] = {}
    for name, source in part.fields:
        text = render_nodes(source.nodes, data, budget)
        if name == _SINGLE_LINE_FIELDS.get(part.channel):
            text = _ONE_LINE.sub(" ", text).strip()  # a line break of the template in a header or a title: one space
        if part.channel is Channel.EMAIL and name == "subject":
            _check_header(source, data, text)
        if name.startswith("data."):
            push_data[name[5:]] = text
        elif name == "url" and not text:
            continue
        else:
            values[name] = text
    if part.channel in (Channel.PUSH, Channel.WEBHOOK):
        values["data"] = push_data
    return msgspec.convert(values, _CONTENT_TYPES[part.channel]), push_data


def render_template(
    template: CompiledTemplate,
    channels: Sequence[Channel],
    data: Mapping[str, Any],
    *,
    locale: str | None = None,
    variant: str = "",
    sms_max_segments: int = SMS_MAX_SEGMENTS,
    budget: Budget | None = None,
) -> Rendered | list[FieldError]:
    """Render the requested channels for one recipient, or the errors naming what is wrong.

    Every field drawn from one Budget (a new RENDER_BUDGET unless given): the first part
    that runs out of it is the one error.
    """
    budget = budget or Budget()
    parts = choose_parts(template, channels, locale, variant)
    if isinstance(parts, list):
        return parts
    errors: list[FieldError] = []
    missing: dict[str, str] = {}
    for part in parts.values():
        for _, source in part.fields:
            for name in sorted(source.required):
                if name not in missing and is_missing(data, name):
                    missing[name] = source.path
    if missing:
        return [FieldError(f"data.{name}", f"required by the template ({path})") for name, path in sorted(missing.items())]
    built: dict[str, Any] = {}
    sms: SmsInfo | None = None
    push_bytes: int | None = None
    web_data: dict[str, str] = {}
    for channel, part in parts.items():
        try:
            content, declared = _build(part, data, budget)
        except RenderTooLarge as exc:
            return [FieldError(part.path, str(exc))]  # the budget is the request's: the other parts have none left
        except UnsafeHeader as exc:
            errors.append(exc.error)
            continue
        except msgspec.ValidationError as exc:
            path, message = field_of(str(exc))
            errors.append(FieldError(f"{part.path}.{path}" if path else part.path, f"rendered: {message}"))
            continue
        if channel is Channel.SMS:
            sms = sms_info(content.text, sms_max_segments)
            if sms.segments > sms_max_segments:
                errors.append(FieldError(
                    f"{part.path}.text",
                    f"renders to {sms.segments} {sms.encoding} segments ({sms.units} units); the limit is {sms_max_segments}",
                ))
        elif channel is Channel.PUSH:
            push_bytes = push_payload_bytes(content)
            if push_bytes > PUSH_MAX_BYTES:
                errors.append(FieldError(part.path, f"the push payload is {push_bytes} bytes of JSON; the limit is {PUSH_MAX_BYTES}"))
        elif channel is Channel.WEB:
            web_data = declared
            size = len(msgspec.json.encode(web_data))
            if size > WEB_DATA_MAX_BYTES:
                errors.append(FieldError(f"{part.path}.data", f"renders to {size} bytes of JSON; the limit is {WEB_DATA_MAX_BYTES}"))
        built[channel.value] = content
    if errors:
        return errors
    return Rendered(
        content=Content(**built),
        locales={c.value: p.locale for c, p in parts.items()},
        variant=variant,
        tag=template_tag(template.id, template.version, variant),
        sms=sms,
        push_bytes=push_bytes,
        web_data=web_data,
    )


def estimate_work(
    template: CompiledTemplate, channels: Sequence[Channel], data_bytes: int, *, locale: str | None = None, variant: str = "",
) -> int:
    """An upper bound of the Python steps rendering these channels may take (work_estimate); cheap, renders nothing."""
    parts = choose_parts(template, channels, locale, variant)
    if isinstance(parts, list):
        return 0  # refused before rendering anything
    return sum(work_estimate(source.shape, data_bytes) for part in parts.values() for _, source in part.fields)

