"""How every `mvlp` command reports a failure: one unwrapped line on stderr, exit code 2.

Unwrapped so that the message (which names the cause and the fix) survives being grepped or
pasted whatever the terminal width.
"""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console

_stderr = Console(stderr=True, soft_wrap=True)


def fail(message: object) -> NoReturn:
    _stderr.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(2)
