"""The ``capgate`` command: ``serve`` and the client commands of DESIGN §6.

Each command group lives in its own module and adds its parsers here; every
command prints one line on stderr and exits 2 on an error, never a traceback.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import re
import sys
from collections.abc import Sequence
from typing import NoReturn

from capgate import CapgateError, InvalidArgumentError, __version__
from capgate_cli import (
    _agents,
    _approvals,
    _audit,
    _bench,
    _governance,
    _keys,
    _principals,
    _serve,
    _tokens,
)
from capgate_cli._common import EXIT_ERROR, EXIT_OK, common_options, fail

__all__ = ["main"]

_INVALID_CHOICE = re.compile(r"invalid choice: '([^']*)' \(choose from (.*)\)")


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistyped command gets the closest one suggested."""

    def error(self, message: str) -> NoReturn:
        m = _INVALID_CHOICE.search(message)
        if m is not None:
            choices = re.findall(r"'([^']*)'", m.group(2))
            close = difflib.get_close_matches(m.group(1), choices, n=1, cutoff=0.5)
            if close:
                message += f"; did you mean '{close[0]}'?"
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    common = common_options()
    parser = _Parser(
        prog="capgate",
        parents=[common],
        description="Identity-based access control for AI agents.",
        epilog="Exit status: 0 ok/allowed, 1 denied, 2 error. "
        "Every command takes --json for one JSON object on stdout.",
    )
    parser.add_argument("--version", action="version", version=f"capgate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _serve.add_parsers(sub, common)
    _agents.add_parsers(sub, common)
    _tokens.add_parsers(sub, common)
    _audit.add_parsers(sub, common)
    _keys.add_parsers(sub, common)
    _principals.add_parsers(sub, common)
    _approvals.add_parsers(sub, common)
    _governance.add_parsers(sub, common)
    _bench.add_parsers(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: usage errors exit 2 already; --help exits 0
        return int(e.code or 0)
    logging.basicConfig(
        level=logging.INFO
        if getattr(args, "verbose", False) or args.command == "serve"
        else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.run(args))
    except CapgateError as e:
        return fail(args, e)
    except BrokenPipeError:  # `capgate … | head`: the reader has all it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes
        return EXIT_OK
    except OSError as e:
        return fail(args, InvalidArgumentError(f"{e.strerror or e}: {e.filename or ''}".strip()))
    except KeyboardInterrupt:
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
