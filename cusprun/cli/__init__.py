"""`cusprun` command line. Each subcommand group lives in its own module with `register(sub)`."""
from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import sys

from cusprun.cli.errors import (INTERRUPTED_EXIT, report_user_error,
                                user_errors_without_tracebacks)
from cusprun.errors import CusprunError

# Modules that add subcommands; each defines register(subparsers).
SUBCOMMAND_MODULES = ["cusprun.cli.models", "cusprun.cli.corpora", "cusprun.cli.pipeline",
                      "cusprun.cli.demo", "cusprun.cli.reports", "cusprun.cli.export"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cusprun", description="Prune a general LLM into a compact customized expert (Cus-Prun).")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true",
                        help="debug logging, and the traceback of user errors too")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            continue  # subcommand group not installed in this build
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose or args.debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "httpcore", "urllib3", "botocore", "s3fs", "aiobotocore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)  # one line per HTTP request otherwise
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    quiet = contextlib.nullcontext() if args.debug else user_errors_without_tracebacks()
    try:
        with quiet:
            return int(args.func(args) or 0)
    except CusprunError as e:
        return report_user_error(e, args.debug)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return INTERRUPTED_EXIT


if __name__ == "__main__":
    sys.exit(main())
