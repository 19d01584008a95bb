"""The ``dspex`` command (typer): one module per command group.

``app`` (cli/app.py) mounts them; ``cluster``, ``jobs``, ``runs``, ``status``,
``dashboard``, ``simlm`` and ``demo`` hold the commands, ``common`` what they
share (exit codes, errors, waits), ``local_cluster`` the ``ray start`` processes
of ``dspex cluster``, ``cluster_access`` finding a cluster and its token.
"""

from dspex.cli.app import app, main

__all__ = ["app", "main"]
