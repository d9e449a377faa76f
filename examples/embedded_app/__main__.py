"""``python -m examples.embedded_app DIR [--host H] [--port P] [--memory-limit N]``.

Serves DIR on http://127.0.0.1:8000 by default with uvicorn (uvloop and httptools when
installed), one worker. SIGINT or SIGTERM: requests in flight finish, the cache writes back,
the process exits 0.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import FrameType

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """Bytes from ``1048576``, ``64KiB``, ``256MiB``, ``1G`` (binary units, case-insensitive).

    Raises:
        argparse.ArgumentTypeError: not a positive size.
    """
    m = re.fullmatch(r"\s*(\d+)\s*([kmgt]?)(?:i?b)?\s*", text, re.IGNORECASE)
    if m is None or int(m.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"not a positive size: {text!r} (e.g. 268435456, 256MiB)")
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    from .app import DEFAULT_MEMORY_LIMIT

    p = argparse.ArgumentParser(
        prog="python -m examples.embedded_app",
        description="Serve DIR through an aiocache_inode page cache (a StaticFiles drop-in).",
    )
    p.add_argument("directory", metavar="DIR", help="the directory to serve")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    p.add_argument(
        "--memory-limit",
        type=parse_size,
        default=DEFAULT_MEMORY_LIMIT,
        help="cache budget in bytes, or with a unit: 256MiB (default 256MiB)",
    )
    p.add_argument(
        "--revalidate",
        type=float,
        default=1.0,
        help="seconds between checks that an open file is unchanged (default 1)",
    )
    p.add_argument("--read-only", action="store_true", help="refuse PUT uploads (405)")
    p.add_argument("--access-log", action="store_true", help="log every request")
    return p


def _stopped(signum: int, frame: FrameType | None) -> None:
    """The handler left in place once uvicorn has shut down: the stop was asked for."""


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments and run the server until a signal stops it."""
    args = build_parser().parse_args(argv)
    if not os.path.isdir(args.directory):
        print(f"error: not a directory: {args.directory}", file=sys.stderr)
        return 2
    import uvicorn

    from .app import create_app

    app = create_app(
        args.directory,
        memory_limit=args.memory_limit,
        revalidate=args.revalidate,
        allow_put=not args.read_only,
    )
    print(
        f"serving {os.path.realpath(args.directory)} on http://{args.host}:{args.port}/ "
        f"(cache {args.memory_limit} bytes; metrics at /metrics)",
        flush=True,
    )
    # uvicorn finishes the requests in flight and runs the lifespan shutdown (the write-back),
    # then re-raises the signal it caught with the previous handlers back in place. A stop on
    # request is a clean exit: make those handlers no-ops, so the process exits 0.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stopped)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        lifespan="on",
        access_log=args.access_log,
        log_level="info",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
