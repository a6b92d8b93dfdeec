"""Operators: the sandbox providers' fault settings (actors/clients/faults.py), read and changed at run time.

    GET    /v1/admin/sandbox/faults            every sandbox channel's setting, and what it did
    PUT    /v1/admin/sandbox/faults/{channel}  replace a channel's setting (protocol.faults.FaultSpec); it takes effect now
    DELETE /v1/admin/sandbox/faults/{channel}  clear it

All need the `admin` scope. A body that does not fit is a 400 naming the field; a
channel without a sandbox client (web, or one whose client was replaced) is a 404.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
from quart import Blueprint, Response

from protocol.channels import Channel
from protocol.faults import NO_FAULT, FaultList, FaultSpec
from protocol.problems import FieldError, Problem

from ..clients.faults import SandboxFaults
from .errors import ProblemError, authorize, decode_body, json_response, read_body

if TYPE_CHECKING:  # gateway.py imports this module
    from .gateway import Gateway

_spec_decoder = msgspec.json.Decoder(FaultSpec)


def blueprint(gw: Gateway, faults: SandboxFaults) -> Blueprint:
    bp = Blueprint("sandbox", __name__)

    def sandbox_channel(name: str) -> Channel:
        if name not in {c.value for c in faults.channels()}:
            served = ", ".join(c.value for c in faults.channels()) or "none"
            detail = f"no sandbox client on channel {name!r}: faults apply to the sandbox channels ({served})"
            raise ProblemError(Problem("Not Found", 404, detail, errors=[FieldError("channel", detail)]))
        return Channel(name)

    @bp.get("/v1/admin/sandbox/faults")
    async def list_faults() -> Response:
        await authorize(gw, "admin")
        return json_response(FaultList(faults.views()))

    @bp.put("/v1/admin/sandbox/faults/<channel>")
    async def set_faults(channel: str) -> Response:
        await authorize(gw, "admin")
        which = sandbox_channel(channel)
        spec = decode_body(_spec_decoder, await read_body(gw))
        return json_response(faults.set(which, spec))

    @bp.delete("/v1/admin/sandbox/faults/<channel>")
    async def clear_faults(channel: str) -> Response:
        await authorize(gw, "admin")
        return json_response(faults.set(sandbox_channel(channel), NO_FAULT))

    return bp
