"""The actor runtime and the ports.

    runtime     mailbox.py, ask.py, supervisor.py, system.py, clock.py
    ports       ports.py: the typed interfaces every backend serves (Bus, State, Store, ...)
    shared      token_bucket.py, circuit_breaker.py, partitioner.py (pure state machines and
                functions, fed with `now`); files.py (durable, private file writes)
    backends/   one package per engine (embedded/ now), opened by reactor.backends.open_backends

reactor imports protocol and nothing else of Herald's; actors/ builds on reactor and
names no backend: it is typed by the ports, and only the composition root (and the
offline CLI) opens the backends, through reactor.backends.
"""
