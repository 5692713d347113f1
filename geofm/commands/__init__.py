"""The `geofm` subcommands (one module each, see geofm.cli) and what they share."""

from __future__ import annotations

import functools
import logging
import sys
from typing import Callable

from geofm.errors import UserError

MainFn = Callable[[list[str] | None], int]
EXIT_BAD_INPUT, EXIT_NON_FINITE = 2, 3
_OS_WHAT = {FileExistsError: "exists and is not a folder", NotADirectoryError: "lies under a file, not a folder",
            IsADirectoryError: "is a folder where a file is needed"}


def setup_logging(quiet: bool) -> None:
    """geofm's INFO lines to stderr, or WARNING with --quiet; other libraries' INFO (jax's backend
    probing, orbax's per-save / per-restore chatter through absl) hidden either way."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("geofm").setLevel(logging.WARNING if quiet else logging.INFO)
    logging.getLogger("absl").setLevel(logging.WARNING)


def error_exit(prog: str, err: BaseException) -> int | None:
    """The exit code and the one stderr line (prefixed with `prog`) for an error a user can
    cause anywhere in a command, or None for anything else (a bug: let it raise).

    2: a `geofm.errors.UserError` (bad config, run folder, missing model files), a missing
    file, a path that is a file where a folder is needed (or the reverse), no permission;
    3: a non-finite loss or score (FloatingPointError; the last good checkpoint is kept).
    """
    if isinstance(err, FloatingPointError):
        code, msg = EXIT_NON_FINITE, str(err)
    elif isinstance(err, (UserError, FileNotFoundError)):
        code, msg = EXIT_BAD_INPUT, str(err)
    elif isinstance(err, (FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError)):
        what = _OS_WHAT.get(type(err), err.strerror or str(err))
        code, msg = EXIT_BAD_INPUT, f"{err.filename or 'a path'}: {what}"
    else:
        return None
    print(f"{prog}: {msg}", file=sys.stderr)
    return code


def guarded(prog: str) -> Callable[[MainFn], MainFn]:
    """Decorator for a command's `main(argv) -> int`: `error_exit` for what escapes it, so the
    command behaves the same through `geofm COMMAND` and its `python -m` wrapper."""

    def wrap(main: MainFn) -> MainFn:
        @functools.wraps(main)
        def run(argv: list[str] | None = None, **kwargs) -> int:
            try:
                return int(main(argv, **kwargs) or 0)
            except Exception as err:  # noqa: BLE001 - re-raised unless it is a user-facing error
                code = error_exit(kwargs.get("prog", prog), err)
                if code is None:
                    raise
                return code

        return run

    return wrap
