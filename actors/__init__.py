"""Herald's actors, channel clients, HTTP/WebSocket gateway and composition root.

actors may import reactor and protocol; nothing imports actors but the CLI and tests.
"""
