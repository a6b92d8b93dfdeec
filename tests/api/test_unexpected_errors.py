"""An unexpected error in a handler is logged with what it was serving: a request or a WebSocket."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from actors.api.gateway import create_app
from tests.helpers import running_node


async def test_an_unexpected_websocket_error_is_logged_not_raised_again(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with running_node(tmp_path) as herald:
        app = create_app(herald.gateway)

        @app.websocket("/boom")
        async def boom() -> None:
            raise RuntimeError("boom in a websocket")

        @app.get("/boom")
        async def boom_http() -> None:
            raise RuntimeError("boom in a request")

        with caplog.at_level(logging.ERROR, logger="herald.gateway"):
            client = app.test_client()
            response = await client.get("/boom")
            assert response.status_code == 500
            async with client.websocket("/boom") as ws:
                try:
                    await ws.receive()
                except Exception:  # the handler failed: the test client reports it as it may
                    pass
        messages = [r.getMessage() for r in caplog.records if r.name == "herald.gateway"]
        assert "unhandled error on GET /boom" in messages
        assert "unhandled error on WebSocket /boom" in messages
        assert not any("Not within a request context" in (r.exc_text or "") for r in caplog.records)
