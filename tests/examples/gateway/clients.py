"""What the command-line client tests share: reproducible bodies, a clean environment, a runner.

Each client (the AWS CLI, s3cmd, rclone) runs as a subprocess against a real gateway with only
the configuration a user would write. The environment drops every ``AWS_*`` variable first: a
machine-wide ``AWS_CA_BUNDLE`` breaks rclone, and a developer's own profile or keys must not
leak into what the test claims the client did with its defaults.
"""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
from typing import TYPE_CHECKING

from .conftest import GatewayProcess, start_gateway

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from pathlib import Path

MiB = 1 << 20
#: A client command that runs longer than this is hung, not slow.
COMMAND_TIMEOUT = 120


def blob(n: int, seed: int) -> bytes:
    """``n`` reproducible pseudo-random bytes."""
    return random.Random(seed).randbytes(n)


def client_env(home: Path, **extra: str) -> dict[str, str]:
    """This process's environment without ``AWS_*``, with ``HOME`` at ``home``, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return env | {"HOME": str(home)} | extra


@contextlib.contextmanager
def running_gateway(base: Path, *, tls: bool = False) -> Iterator[GatewayProcess]:
    """A gateway process with its data under ``base``, stopped (cleanly) on exit."""
    gw = start_gateway(base, tls=tls)
    try:
        yield gw
    finally:
        assert gw.stop() == 0


class CommandLine:
    """One client program with its fixed leading arguments and environment.

    Attributes:
        argv: the program and the arguments every call starts with.
        env: the environment every call gets (see :func:`client_env`).
    """

    def __init__(self, argv: Sequence[str], env: dict[str, str]) -> None:
        self.argv = list(argv)
        self.env = env

    def _call(self, args: Sequence[str], *, check: bool) -> subprocess.CompletedProcess[bytes]:
        result = subprocess.run(
            [*self.argv, *args], env=self.env, capture_output=True, timeout=COMMAND_TIMEOUT
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(self.argv[:1])} {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout.decode(errors='replace')}\n"
                f"{result.stderr.decode(errors='replace')}"
            )
        return result

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the program with ``args``; its output as text. ``check``: raise on failure.

        Raises:
            AssertionError: ``check`` and the program exited non-zero (its output attached).
        """
        r = self._call(args, check=check)
        return subprocess.CompletedProcess(
            r.args,
            r.returncode,
            r.stdout.decode(errors="replace"),
            r.stderr.decode(errors="replace"),
        )

    def output(self, *args: str) -> bytes:
        """The program's standard output as bytes (for object bodies); it must succeed.

        Raises:
            AssertionError: the program exited non-zero (its output attached).
        """
        return self._call(args, check=True).stdout
