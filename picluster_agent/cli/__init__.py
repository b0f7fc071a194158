"""The command line: `picluster` and its subcommands."""

from .app import main

__all__ = ["main"]
