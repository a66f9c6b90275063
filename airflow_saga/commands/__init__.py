"""Subcommands of the ``saga`` CLI; each module exposes ``register(subparsers)``."""
