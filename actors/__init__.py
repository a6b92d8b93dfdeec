"""Herald's actors, their front end, clients, rules and services, and the composition root.

    ingress.py, consumer.py, provider.py, registry.py, scheduler.py, recorder.py
                    the actors: one module each (messages.py: what they send each other)
    api/            the HTTP and WebSocket front end (gateway.py assembles the routes)
    clients/        the channel clients (sandbox files, live web sessions; real providers later)
    domain/         the rules, pure: templates, preferences, tokens, API keys
    services/       the rules over the ports, called directly: users, templates, credentials, DLQ, gates
    app.py          the composition root: Config -> supervision tree
    config.py       the settings; cli.py the `herald` command; startup.py what a failed start says

actors may import reactor (the runtime and the ports, never a backend: reactor.backends
opens them) and protocol; nothing imports actors but the CLI and tests.
"""
