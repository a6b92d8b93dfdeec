"""The /docs page: the OpenAPI document rendered as one self-contained HTML reference, server-side.

No script, no font, no image, nothing fetched: one inline style sheet, and links only to
anchors within the page. Pure: `render(spec)` takes the document openapi.build_spec made.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:72em;margin:2em auto;padding:0 1em;color:#1d1d1f;line-height:1.45}
code,pre{font-family:ui-monospace,monospace;font-size:.92em}pre{background:#f5f5f7;padding:.6em;overflow:auto}
table{border-collapse:collapse;width:100%;margin:.4em 0 1em}th,td{text-align:left;vertical-align:top;border-bottom:1px solid #ddd;padding:.25em .5em}
th{background:#f5f5f7}.m{display:inline-block;min-width:4.5em;font-weight:bold;font-family:ui-monospace,monospace}
.GET{color:#0a6}.POST{color:#06c}.PUT{color:#a60}.DELETE{color:#c03}.WS{color:#707}
section.op{border-top:2px solid #eee;padding-top:.4em;margin-top:1.4em}nav ul{columns:2}.req{color:#c03}
.muted{color:#666}
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _prose(text: str) -> str:
    """Escaped paragraphs with `code` and **bold**: the little Markdown the descriptions use."""
    paragraphs = []
    for block in filter(None, re.split(r"\n\s*\n", text.strip())):
        escaped = _e(block.replace("\n", " "))
        escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
        escaped = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", escaped)
        paragraphs.append(f"<p>{escaped}</p>")
    return "".join(paragraphs)


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def type_of(schema: dict[str, Any]) -> str:
    """A schema as a short HTML type expression, components linked."""
    if "$ref" in schema:
        name = _ref_name(schema["$ref"])
        return f'<a href="#schema-{_e(name)}">{_e(name)}</a>'
    if "anyOf" in schema or "oneOf" in schema:
        return " | ".join(type_of(s) for s in schema.get("anyOf", schema.get("oneOf", [])))
    if "const" in schema:
        return f"<code>{_e(json.dumps(schema['const']))}</code>"
    if "enum" in schema:
        return " | ".join(f"<code>{_e(json.dumps(v))}</code>" for v in schema["enum"])
    kind = schema.get("type")
    if kind == "array":
        return f"array of {type_of(schema.get('items', {}))}"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"map of string to {type_of(schema['additionalProperties'])}"
    if isinstance(kind, list):
        return " | ".join(_e(k) for k in kind)
    return _e(kind or "any")


_CONSTRAINTS = (
    ("minLength", "length &ge; {}"), ("maxLength", "length &le; {}"), ("minimum", "&ge; {}"), ("maximum", "&le; {}"),
    ("exclusiveMinimum", "&gt; {}"), ("exclusiveMaximum", "&lt; {}"), ("minItems", "items &ge; {}"), ("maxItems", "items &le; {}"),
    ("minProperties", "entries &ge; {}"), ("maxProperties", "entries &le; {}"),
)


def constraints(schema: dict[str, Any]) -> str:
    """Bounds, patterns and the default of a schema, including those inside a nullable anyOf."""
    parts = []
    for inner in [schema, *schema.get("anyOf", [])]:
        for key, text in _CONSTRAINTS:
            if key in inner:
                parts.append(text.format(_e(inner[key])))
        if "pattern" in inner:
            parts.append(f"matches <code>{_e(inner['pattern'])}</code>")
        if "pattern" in inner.get("propertyNames", {}):
            parts.append(f"keys match <code>{_e(inner['propertyNames']['pattern'])}</code>")
    if "default" in schema:
        parts.append(f"default <code>{_e(json.dumps(schema['default']))}</code>")
    return "; ".join(parts)


def _parameters(parameters: list[dict[str, Any]]) -> str:
    rows = "".join(
        f"<tr><td><code>{_e(p['name'])}</code>{' <span class=req>required</span>' if p.get('required') else ''}</td>"
        f"<td>{_e(p['in'])}</td><td>{type_of(p['schema'])}</td><td>{constraints(p['schema'])}</td><td>{_prose(p.get('description', ''))}</td></tr>"
        for p in parameters
    )
    return f"<h4>Parameters</h4><table><tr><th>name</th><th>in</th><th>type</th><th>constraints</th><th></th></tr>{rows}</table>"


def _media(content: dict[str, Any]) -> str:
    return "<br>".join(f"<code>{_e(media)}</code> {type_of(value.get('schema', {}))}" for media, value in content.items())


def _responses(responses: dict[str, Any], spec: dict[str, Any]) -> str:
    rows = []
    for status, answer in responses.items():
        if "$ref" in answer:
            answer = spec["components"]["responses"][_ref_name(answer["$ref"])]
        headers = ", ".join(
            f"<code>{_e(name)}</code>{'' if h.get('required') else ' (optional)'}" for name, h in answer.get("headers", {}).items()
        )
        rows.append(
            f"<tr><td><strong>{_e(status)}</strong></td><td>{_prose(answer.get('description', ''))}</td>"
            f"<td>{_media(answer.get('content', {}))}</td><td>{headers}</td></tr>"
        )
    return f"<h4>Responses</h4><table><tr><th>status</th><th></th><th>body</th><th>headers</th></tr>{''.join(rows)}</table>"


def _auth(operation: dict[str, Any]) -> str:
    auth = operation.get("x-herald-auth", {})
    kind, scope = auth.get("kind", "none"), auth.get("scope")
    text = {
        "none": "no credential",
        "api_key": f"API key with scope <code>{_e(scope)}</code>",
        "api_key_or_subscriber_token": f"API key with scope <code>{_e(scope)}</code>, or the subscriber token of the user in the path",
        "subscriber_token": "subscriber token (<code>?token=</code> or <code>Authorization: Bearer</code>)",
        "unsubscribe_token": "the signed <code>?token=</code> of an unsubscribe link; no API key",
    }.get(kind, _e(kind))
    return f"<p><strong>Auth:</strong> {text}</p>"


def _operation(path: str, method: str, operation: dict[str, Any], spec: dict[str, Any]) -> str:
    parts = [
        f'<section class="op" id="op-{_e(operation["operationId"])}">',
        f'<h3><span class="m {_e(method.upper())}">{_e(method.upper())}</span> <code>{_e(path)}</code></h3>',
        f"<p><strong>{_e(operation.get('summary', ''))}</strong> <span class=muted>({_e(operation['operationId'])})</span></p>",
        _prose(operation.get("description", "")),
        _auth(operation),
    ]
    if operation.get("parameters"):
        parts.append(_parameters(operation["parameters"]))
    if "requestBody" in operation:
        request = operation["requestBody"]
        required = "required" if request.get("required") else "optional"
        parts.append(f"<h4>Body ({required})</h4><p>{_media(request['content'])}</p>{_prose(request.get('description', ''))}")
    parts.append(_responses(operation["responses"], spec))
    parts.append("</section>")
    return "".join(parts)


def _websocket(path: str, socket: dict[str, Any]) -> str:
    codes = "".join(f"<tr><td>{_e(code)}</td><td>{_e(text)}</td></tr>" for code, text in socket.get("closeCodes", {}).items())
    client = ", ".join(type_of(ref) for ref in socket.get("clientFrames", []))
    return (
        f'<section class="op" id="ws-{_e(path.strip("/").replace("/", "-"))}">'
        f'<h3><span class="m WS">WS</span> <code>{_e(path)}</code></h3><p><strong>{_e(socket.get("summary", ""))}</strong> '
        "<span class=muted>(not in OpenAPI: <code>x-websockets</code>)</span></p>"
        f"{_prose(socket.get('description', ''))}{_parameters(socket.get('parameters', []))}"
        f"<p><strong>Client frames:</strong> {client}. <strong>Server frames:</strong> {type_of(socket.get('serverFrames', {}))}.</p>"
        f"<h4>Close codes</h4><table><tr><th>code</th><th></th></tr>{codes}</table></section>"
    )


def _schema(name: str, schema: dict[str, Any]) -> str:
    head = f'<section id="schema-{_e(name)}"><h3><code>{_e(name)}</code></h3>{_prose(schema.get("description", ""))}'
    properties = schema.get("properties")
    if properties is None:
        return f"{head}<p>{type_of(schema)}</p></section>"
    required = set(schema.get("required", []))
    rows = "".join(
        f"<tr><td><code>{_e(field)}</code>{' <span class=req>required</span>' if field in required else ''}</td>"
        f"<td>{type_of(value)}</td><td>{constraints(value)}</td></tr>"
        for field, value in properties.items()
    )
    closed = "" if schema.get("additionalProperties") is not False else "<p class=muted>No other fields are accepted.</p>"
    return f"{head}<table><tr><th>field</th><th>type</th><th>constraints</th></tr>{rows}</table>{closed}</section>"


def render(spec: dict[str, Any]) -> str:
    """The whole page."""
    info = spec["info"]
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {tag["name"]: [] for tag in spec.get("tags", [])}
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            by_tag.setdefault(operation["tags"][0], []).append((path, method, operation))
    tag_text = {tag["name"]: tag.get("description", "") for tag in spec.get("tags", [])}
    nav, body = [], []
    for tag, operations in by_tag.items():
        if not operations:
            continue
        links = "".join(
            f'<li><a href="#op-{_e(op["operationId"])}"><span class="m {_e(m.upper())}">{_e(m.upper())}</span> {_e(p)}</a></li>'
            for p, m, op in operations
        )
        nav.append(f"<h3>{_e(tag)}</h3><ul>{links}</ul>")
        body.append(f'<h2 id="tag-{_e(tag)}">{_e(tag)}</h2>{_prose(tag_text.get(tag, ""))}')
        body.extend(_operation(p, m, op, spec) for p, m, op in operations)
        if tag == "realtime":
            body.extend(_websocket(path, socket) for path, socket in spec.get("x-websockets", {}).items())
    schemas = "".join(_schema(name, schema) for name, schema in spec["components"]["schemas"].items())
    schemes = "".join(
        f"<tr><td><code>{_e(name)}</code></td><td>{_e(s.get('type'))} {_e(s.get('scheme', s.get('in', '')))}</td>"
        f"<td>{_prose(s.get('description', ''))}</td></tr>"
        for name, s in spec["components"].get("securitySchemes", {}).items()
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">'
        f"<title>{_e(info['title'])} API {_e(info['version'])}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{_e(info['title'])} API <span class=muted>{_e(info['version'])}</span></h1>"
        f'{_prose(info.get("description", ""))}<p>Machine-readable: <a href="openapi.json">openapi.json</a> (OpenAPI {_e(spec["openapi"])}).</p>'
        f"<h2>Credentials</h2><table><tr><th>scheme</th><th>kind</th><th></th></tr>{schemes}</table>"
        f"<nav><h2>Operations</h2>{''.join(nav)}</nav>{''.join(body)}<h2>Schemas</h2>{schemas}</body></html>"
    )
