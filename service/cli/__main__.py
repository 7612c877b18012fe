"""``python -m service.cli``: the ``weaver`` command line."""

from service.cli import app

app()
