"""Templates: save (a new immutable version each time), read, list versions, roll back, preview.

Writes need the `admin` scope, reads and previews `read`. A template that does not parse,
or names a default locale it lacks, is a 422 naming the field
(`locales.fr.email.subject`); a preview missing data the template requires is a 422
naming `data.<name>`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from quart import Blueprint, Response, request

from protocol.problems import FieldError, Problem, field_of, invalid
from protocol.template_schemas import TEMPLATE_ID_RE, Parts, RenderRequest, TemplateSpec, TemplateView, Variant, VersionInfo, VersionList
from reactor.clock import iso

from ..domain.rendering import InvalidTemplate
from ..services.template_service import Loaded, TemplateExists, TemplateNotFound, TemplateService
from .errors import ProblemError, authorize, bad_param, decode_body, integer_param, json_response, read_body, readable

_any_decoder = msgspec.json.Decoder()
_render_decoder = msgspec.json.Decoder(RenderRequest)
_KEY_IN = re.compile(r"\s*-\s*at `key` in `\$(?P<path>[^`]*)`\s*$")


def _value_type(container_path: str) -> Any:
    """The type of the values of a dict in a TemplateSpec, by the dict's path."""
    if container_path == "locales" or container_path.endswith(".locales"):
        return Parts
    if container_path == "variants":
        return Variant
    if container_path.endswith(".data"):
        return str
    return None


def _name_keys(raw: Any, path: str) -> str:
    """Replace msgspec's `[...]` (a dict entry) in a path by the key of the entry that does not fit."""
    head, found, rest = path.partition("[...]")
    if not found:
        return path
    container: Any = raw
    for part in head.split("."):
        container = container.get(part) if isinstance(container, dict) else None
    value_type = _value_type(head)
    if not isinstance(container, dict) or value_type is None:
        return path
    for key, value in container.items():
        try:
            msgspec.convert(value, value_type)
        except msgspec.ValidationError:
            return _name_keys(raw, f"{head}.{key}{rest}")
    return path


def _decode_spec(body: bytes) -> TemplateSpec:
    """A TemplateSpec, or a 400 naming the field, dict keys included (`locales.fr.email.subject`)."""
    raw = decode_body(_any_decoder, body)
    try:
        spec: TemplateSpec = msgspec.convert(raw, TemplateSpec)
    except msgspec.ValidationError as exc:
        message = readable(str(exc))
        key_error = _KEY_IN.search(message)
        if key_error:
            path, text = key_error.group("path").lstrip("."), f"{message[: key_error.start()]} (a key)"
        else:
            path, text = field_of(message)
        path = re.sub(r"\[(\d+)\]", r".\1", _name_keys(raw, path))
        raise ProblemError(invalid(f"{text} - at `$.{path}`" if path else text)) from None
    return spec


def _checked_id(template_id: str) -> str:
    if not TEMPLATE_ID_RE.match(template_id):
        raise bad_param("template_id", "1-100 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit")
    return template_id


def _version_param(name: str, value: str | None) -> int | None:
    return integer_param(name, value, 1, 2**31, "a version number (1, 2, ...)")


def _unprocessable(title: str, errors: list[FieldError]) -> ProblemError:
    detail = "; ".join(f"{e.field}: {e.message}" for e in errors)
    return ProblemError(Problem(title=title, status=422, detail=detail, errors=errors))


def _not_found(what: str) -> ProblemError:
    return ProblemError(Problem("Not Found", 404, f"no template {what}", errors=[FieldError("template_id", f"no template {what}")]))


async def _view(templates: TemplateService, loaded: Loaded) -> TemplateView:
    compiled = loaded.compiled
    active = await templates.active_version(compiled.id)
    return TemplateView(
        id=compiled.id,
        version=compiled.version,
        active_version=active or compiled.version,
        created_at=iso(loaded.created_ms),
        template=compiled.spec,
        variables=compiled.variables,
    )


def blueprint(gw: Any, templates: TemplateService) -> Blueprint:
    """The /v1/templates routes, over a TemplateService."""
    bp = Blueprint("templates", __name__)

    async def save(template_id: str, write: Callable[[str, TemplateSpec], Awaitable[Loaded]]) -> Loaded:
        """An admin's write of the request's template with `write`; a template that does not compile is a 422."""
        await authorize(gw, "admin")
        _checked_id(template_id)
        spec = _decode_spec(await read_body(gw))
        try:
            return await write(template_id, spec)
        except InvalidTemplate as exc:
            raise _unprocessable("Invalid template", exc.errors) from None

    @bp.post("/v1/templates/<template_id>")
    async def create(template_id: str) -> Response:
        try:
            loaded = await save(template_id, templates.create)
        except TemplateExists:
            detail = f"template {template_id} exists: PUT saves a new version"
            raise ProblemError(Problem("Conflict", 409, detail, errors=[FieldError("template_id", detail)])) from None
        return json_response(await _view(templates, loaded), 201, {"Location": f"/v1/templates/{template_id}"})

    @bp.put("/v1/templates/<template_id>")
    async def update(template_id: str) -> Response:
        try:
            loaded = await save(template_id, templates.update)
        except TemplateNotFound:
            raise _not_found(f"{template_id} (POST creates it)") from None
        return json_response(await _view(templates, loaded))

    @bp.get("/v1/templates/<template_id>")
    async def get(template_id: str) -> Response:
        await authorize(gw, "read")
        _checked_id(template_id)
        version = _version_param("version", request.args.get("version"))
        loaded = await templates.get(template_id, version)
        if loaded is None:
            raise _not_found(template_id if version is None else f"{template_id} version {version}")
        return json_response(await _view(templates, loaded))

    @bp.get("/v1/templates/<template_id>/versions")
    async def versions(template_id: str) -> Response:
        await authorize(gw, "read")
        _checked_id(template_id)
        active = await templates.active_version(template_id)
        if active is None:
            raise _not_found(template_id)
        saved = await templates.versions(template_id)
        items = [VersionInfo(version, iso(created_ms), version == active) for version, created_ms in saved]
        return json_response(VersionList(template_id, active, items))

    @bp.post("/v1/templates/<template_id>/versions/<version>/activate")
    async def activate(template_id: str, version: str) -> Response:
        await authorize(gw, "admin")
        _checked_id(template_id)
        number = _version_param("version", version)
        assert number is not None
        try:
            loaded = await templates.activate(template_id, number)
        except TemplateNotFound:
            raise _not_found(f"{template_id} version {number}") from None
        return json_response(await _view(templates, loaded))

    @bp.post("/v1/templates/<template_id>/render")
    async def render(template_id: str) -> Response:
        await authorize(gw, "read")
        _checked_id(template_id)
        body = await read_body(gw)
        wanted: RenderRequest = decode_body(_render_decoder, body) if body.strip() else RenderRequest()
        try:
            result = await templates.preview(template_id, wanted)
        except TemplateNotFound as exc:
            raise _not_found(str(exc)) from None
        if isinstance(result, list):
            raise _unprocessable("Unprocessable render", result)
        return json_response(result)

    return bp
