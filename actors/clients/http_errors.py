"""The transport errors of the HTTP providers' clients, whichever protocol carried the request: no answer, and why."""

from __future__ import annotations


def why(exc: BaseException) -> str:
    """What broke, for a transport error's text: the cause's own words (the OS's, ssl's), at most 200 characters."""
    cause = exc.__cause__ or exc.__context__
    text = str(cause or exc) or type(cause or exc).__name__
    return text[:200]


class TransportError(Exception):
    """No answer: the connection failed, broke, or what the server sent is not HTTP."""


class ConnectError(TransportError):
    pass


class ReadError(TransportError):
    pass


class WriteError(TransportError):
    pass


class RemoteProtocolError(TransportError):
    pass


class RequestError(TransportError):
    """A request the client cannot write (a header with a control character): the configuration's fault, never sent."""


class Timeout(TransportError):
    """A step took longer than its timeout (its class names which: PoolTimeout, ConnectTimeout, WriteTimeout, ReadTimeout)."""


class PoolTimeout(Timeout):
    pass


class ConnectTimeout(Timeout):
    pass


class WriteTimeout(Timeout):
    pass


class ReadTimeout(Timeout):
    pass


STEP_TIMEOUTS: dict[str, type[Timeout]] = {"pool": PoolTimeout, "connect": ConnectTimeout, "write": WriteTimeout,
                                           "read": ReadTimeout}
