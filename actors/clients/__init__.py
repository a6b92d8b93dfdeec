"""Channel clients: the sandbox ones (files on disk, live web sessions) and, later, real providers.

A client is what a Provider calls (actors.provider.ChannelClient); clients import reactor
(files, clock, runtime) and protocol; the composition root picks them.
"""
