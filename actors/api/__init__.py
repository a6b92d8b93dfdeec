"""The HTTP and WebSocket front end: one blueprint per area, assembled by gateway.py (Gateway, FrontEnd).

Besides the routes: errors.py (problem responses, parameter checks, auth), http_server.py
(Hypercorn's trio server, hardened), fast_path.py (POST /v1/notifications without Quart),
realtime.py (WebSocket, SSE, long-poll) with replay.py (what a resuming session missed),
subscriber.py (what browsers may hold and ask), idempotency.py (Idempotency-Key on POSTs:
responses kept in the State).

api imports the actors' mailboxes and messages, services, domain, reactor (runtime and
ports) and protocol; only the composition root (actors/app.py) and tests import api.
"""
