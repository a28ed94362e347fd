"""How every `mvlp` command reports a failure: one unwrapped line on stderr, exit code 2.

Unwrapped so that the message (which names the cause and the fix) survives being grepped or
pasted whatever the terminal width. A failure nobody foresaw (an exception other than a spec or
stage error) is a bug or an unhandled case: its full trace goes to the error log, and the one line
names that file.
"""

from __future__ import annotations

import os
import sys
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console

# sys.stderr when the line is printed: a run that points fds 1 and 2 at its log file restores them
# before a failure is reported
_stderr = Console(stderr=True, soft_wrap=True)


def one_line(message: object) -> str:
    """The message with every run of whitespace (newlines included) folded to one space."""
    return " ".join(str(message).split())


def say(message: object) -> None:
    """Print the one error line."""
    _stderr.print(f"[bold red]error:[/] {one_line(message)}", highlight=False, markup=True)


def fail(message: object) -> NoReturn:
    """Inside a command: the one line, then exit code 2."""
    say(message)
    raise typer.Exit(2)


def error_log() -> Path:
    """Where unexpected exceptions' traces go: $MVLP_LOG_DIR/errors.log (default ~/.mvlp/logs)."""
    return Path(os.environ.get("MVLP_LOG_DIR") or Path.home() / ".mvlp" / "logs") / "errors.log"


def crash(err: BaseException) -> NoReturn:
    """An exception no command expected: its trace appended to the error log, one line naming it."""
    log = error_log()
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"--- {datetime.now(UTC).isoformat(timespec='seconds')} mvlp {' '.join(sys.argv[1:])}\n")
            f.write("".join(traceback.format_exception(err)))
        where = f"the full trace is in {log}"
    except OSError as log_err:
        where = f"the trace could not be written to {log} ({log_err.strerror})"
    say(f"{type(err).__name__}: {one_line(err)[:300]} (unexpected: {where}; please report it)")
    raise SystemExit(2)
