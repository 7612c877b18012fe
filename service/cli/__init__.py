"""The ``weaver`` command line: one Typer app, each command group in its own module registering itself.

- ``core``: ``simulate``, ``fit``, ``eval``; ``serve``: ``serve``, ``worker``; ``online``: ``models ...`` and
  ``online ...``; ``distill``: ``distill``; ``cascade``: ``cascade``. ``common`` holds what they share;
  ``tables`` lays tables out.
"""

from __future__ import annotations

import typer

from service.cli import cascade, core, distill, online, serve

app = typer.Typer(
    name="weaver",
    help="Inference-time reranking: sample N candidates, verify them with weak verifiers, select the best.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
for group in (core, serve, online, distill, cascade):
    group.register(app)
