"""The actor runtime (mailbox, ask/reply, supervisor, system) and the ports with their backends.

reactor imports protocol and nothing else of Herald's; actors/ builds on reactor.
"""
