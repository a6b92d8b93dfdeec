"""What the actors and the front end call directly, not through a mailbox: the domain rules (actors/domain/)
over the ports (reactor/ports.py), with their caches.

    user_directory.py   users' profiles (preferences, devices): cache-aside over the UserStore
    template_service.py templates: the TemplateStore behind an LRU of compiled versions; rendering off the loop
    credentials.py      API keys against the KeyStore, the bootstrap key, the signing key ring
    dead_letters.py     the dead-letter queue: list, replay through the normal path, discard
    gate.py             a Provider's gate: its provider's token bucket and breaker, shared through the State, waited on

services import domain, reactor (the ports and the runtime, never a backend) and protocol;
the actors, the front end (actors/api/) and the composition root import services.
"""
