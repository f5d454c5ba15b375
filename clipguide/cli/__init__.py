"""Command line entry point: ``clipguide SUBCOMMAND ...``.

Each subcommand lives in its own module exposing ``register(subparsers)`` (``generate``,
``score``, ``rerank``); ``args`` holds the argument types and :class:`CLIError`, ``models`` the
models known by name, ``schedulers`` the samplers by name, ``files`` the atomic writer.

Start-up: building the parser (and ``--help``) loads no torch; the subcommand modules import
only cheap modules at their top, and each command imports what it uses when it runs
(``score`` and ``rerank`` never import diffusers). ``tests/test_startup.py`` checks this.

Errors: every error is one line on stderr, ``clipguide CMD: what was wrong``, never a
traceback. Exit status 2: a bad option or argument, found before any model loads (the types in
``clipguide.cli.args`` and each subcommand's own checks); 1: a failure while working (a model
or a file that cannot be read); 130: interrupted. An unexpected internal error also prints one
line (with its exception type) and exits 1; ``-v`` prints the traceback (of the cause, too).
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback

from clipguide.cli import generate, rerank, score
from clipguide.cli.args import CLIError

__all__ = ["main", "build_parser", "CLIError"]

# The subcommands, in the order they appear in --help; each has register(subparsers), which
# adds its parser and sets ``func`` (called with the parsed namespace, returning an exit code).
SUBCOMMANDS = (generate, score, rerank)


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors become ``CLIError`` (one line, no usage dump)."""

    def error(self, message: str):  # type: ignore[override]
        raise CLIError(f"{message} (see {self.prog} --help)", code=2, prog=self.prog)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="clipguide",
        description="OpenCLIP ViT-bigG/14 for diffusers: generate, guide, score and rerank.",
        epilog='example: clipguide generate "two red circles above a blue square" --out out/',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log at INFO level; tracebacks for bugs"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.register(sub)
    return parser


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _report(prog: str, message: str) -> None:
    print(f"{prog}: {_one_line(message)}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run ``clipguide`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:  # named after the subcommand they were given to
            prog = f"clipguide {args.command}" if args.command else "clipguide"
            raise CLIError(
                f"unrecognized arguments: {' '.join(extra)} (see {prog} --help)", prog=prog
            )
    except CLIError as err:
        _report(err.prog or "clipguide", str(err))
        return err.code
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    prog = f"clipguide {args.command}"
    try:
        return int(args.func(args) or 0)
    except CLIError as err:
        if args.verbose and err.__cause__ is not None:
            traceback.print_exception(err.__cause__)
        _report(prog, str(err))
        return err.code
    except KeyboardInterrupt:
        _report(prog, "interrupted")
        return 130
    except Exception as err:  # noqa: BLE001 - one line for users; -v shows the traceback
        if args.verbose:
            raise
        _report(prog, f"internal error ({type(err).__name__}): {err} (run with -v for details)")
        return 1


if __name__ == "__main__":
    sys.exit(main())
