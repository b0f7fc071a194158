"""`picluster completion SHELL`: tab completion for bash, zsh and fish, from the parser itself.

argcomplete (not shtab): it covers fish as well as bash and zsh, and it completes from the
live parser at each TAB, so a new subcommand or flag completes with nothing to regenerate.
The script printed here only hooks the shell to it; `main` answers the hook before any
command runs (`answer`), importing argcomplete only then.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

SHELLS = ("bash", "zsh", "fish")


def answer(parser: argparse.ArgumentParser) -> None:
    """When the shell asks for completions (argcomplete's hook sets _ARGCOMPLETE), print
    them and exit; otherwise return at once."""
    if "_ARGCOMPLETE" not in os.environ:
        return
    import argcomplete

    argcomplete.autocomplete(parser)


def cmd_completion(args: argparse.Namespace) -> int:
    import argcomplete

    sys.stdout.write(argcomplete.shellcode(["picluster"], shell=args.shell))
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "completion",
        help="print the shell's tab-completion script (bash, zsh or fish)",
        description="Print a script that makes SHELL complete picluster's subcommands and "
        "flags. bash: `picluster completion bash > /etc/bash_completion.d/picluster`; zsh: "
        "into a directory of $fpath as _picluster; fish: into "
        "~/.config/fish/completions/picluster.fish. The agent role installs all three.",
    )
    p.add_argument("shell", choices=SHELLS)
    p.set_defaults(func=cmd_completion)
