"""The real server fixture (compat_server.py) for the client-compatibility tests."""

from tests.compat.compat_server import server  # noqa: F401  (a session fixture, found by name)
