"""The lean HTTP/1.1 client now lives in :mod:`tillit.http1` (the preference center uses it too)."""

from tillit.http1 import HTTP1Pool, UpstreamTransportError

__all__ = ["HTTP1Pool", "UpstreamTransportError"]
