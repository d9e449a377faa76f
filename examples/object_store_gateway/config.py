"""The gateway's settings: command-line flags, each with an ``AIOCACHE_GW_<NAME>`` variable.

A flag on the command line wins over its environment variable, which wins over the default.
Credentials come only from the environment (``AIOCACHE_GW_ACCESS_KEY``,
``AIOCACHE_GW_SECRET_KEY``), so they never show in a process listing.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["ENV_PREFIX", "ConfigError", "GatewayConfig", "parse_args", "parse_size"]

ENV_PREFIX: Final = "AIOCACHE_GW_"

DEFAULTS: Final = {
    "host": "127.0.0.1",
    "port": "9000",
    "data_dir": "./data",
    "memory_limit": "256MiB",  # the cache's byte budget
    "certfile": "",
    "keyfile": "",
    "backend": "local",  # or s3://BUCKET[/PREFIX]?endpoint=URL: a caching proxy (proxy.py)
    "revalidate": "1",  # seconds; proxy mode only
    "access_key": "aiocache",
    "secret_key": "aiocache-secret",
    "region": "us-east-1",
    "max_open_bodies": "1024",  # body files held open (with their inodes) at once
}

_UNITS: Final = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "kib": 1 << 10,
    "kb": 10**3,
    "m": 1 << 20,
    "mib": 1 << 20,
    "mb": 10**6,
    "g": 1 << 30,
    "gib": 1 << 30,
    "gb": 10**9,
    "t": 1 << 40,
    "tib": 1 << 40,
    "tb": 10**12,
}
_SIZE: Final = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")


class ConfigError(ValueError):
    """A setting has a value the gateway cannot use; the message says which and why."""


def parse_size(text: str) -> int:
    """Parse a byte count: ``268435456``, ``256MiB``, ``1.5GiB``, ``64k`` (binary), ``1MB``.

    Raises:
        ConfigError: not a positive size with a known unit.
    """
    m = _SIZE.fullmatch(text)
    unit = m.group(2).lower() if m else ""
    if m is None or unit not in _UNITS:
        raise ConfigError(f"not a size: {text!r} (use bytes or a unit such as 256MiB, 1GiB)")
    value = int(float(m.group(1)) * _UNITS[unit])
    if value <= 0:
        raise ConfigError(f"size must be positive: {text!r}")
    return value


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Everything the gateway needs to start.

    Attributes:
        host: address to listen on.
        port: TCP port (0 picks a free one).
        data_dir: where metadata and bodies live.
        memory_limit: the cache's budget in bytes.
        certfile: PEM certificate for TLS ("" for plain HTTP).
        keyfile: PEM private key for TLS.
        backend: "local", or ``s3://BUCKET[/PREFIX]?endpoint=URL`` for proxy mode.
        revalidate: seconds proxy mode trusts what it knows of a key before asking again.
        access_key: the one access key accepted.
        secret_key: its secret.
        region: the region reported by GetBucketLocation and expected in SigV4 scopes.
        max_open_bodies: how many body files (and their inodes) stay open between requests.
        min_part_size: the smallest multipart part but the last (S3: 5 MiB).
        zero_copy: how object bodies are sent (``aiocache_inode.asgi``): None probes whether
            the server lets go of body objects, True sends pool views straight away (uvicorn,
            measured), False always copies.
    """

    host: str = DEFAULTS["host"]
    port: int = int(DEFAULTS["port"])
    data_dir: str = DEFAULTS["data_dir"]
    memory_limit: int = 256 << 20
    certfile: str = ""
    keyfile: str = ""
    backend: str = "local"
    revalidate: float = 1.0
    access_key: str = DEFAULTS["access_key"]
    secret_key: str = DEFAULTS["secret_key"]
    region: str = DEFAULTS["region"]
    max_open_bodies: int = int(DEFAULTS["max_open_bodies"])
    min_part_size: int = 5 << 20
    zero_copy: bool | None = None

    @property
    def tls(self) -> bool:
        """Whether the gateway serves HTTPS."""
        return bool(self.certfile)

    @property
    def scheme(self) -> str:
        """``https`` with a certificate, else ``http``."""
        return "https" if self.tls else "http"


def _check_backend(value: str) -> str:
    if value in ("", "local"):
        return "local"
    if value.startswith("s3://"):
        from .proxy import parse_backend

        try:
            parse_backend(value)
        except ValueError as exc:
            raise ConfigError(f"--backend {exc}") from None
        return value
    raise ConfigError(f"--backend {value!r}: expected 'local' or s3://BUCKET[/PREFIX]?endpoint=URL")


def parse_args(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> GatewayConfig:
    """Build the configuration from flags, then ``AIOCACHE_GW_*`` variables, then defaults.

    Raises:
        ConfigError: a value is invalid (the message names the flag).
        SystemExit: ``--help``, or an unknown flag (argparse's usage message).
    """
    env = os.environ if environ is None else environ

    def default(name: str) -> str:
        return env.get(ENV_PREFIX + name.upper(), DEFAULTS[name])

    p = argparse.ArgumentParser(
        prog="python -m examples.object_store_gateway",
        description="An S3-compatible object store served through aiocache_inode. Every flag "
        "can also be set as AIOCACHE_GW_<NAME> (e.g. AIOCACHE_GW_PORT); credentials only so: "
        "AIOCACHE_GW_ACCESS_KEY, AIOCACHE_GW_SECRET_KEY.",
    )
    p.add_argument("--host", default=default("host"), help="listen address (127.0.0.1)")
    p.add_argument("--port", default=default("port"), help="TCP port (9000; 0 = any free)")
    p.add_argument("--data-dir", default=default("data_dir"), help="data directory (./data)")
    p.add_argument("--memory-limit", default=default("memory_limit"), help="cache budget (256MiB)")
    p.add_argument("--certfile", default=default("certfile"), help="TLS certificate (PEM)")
    p.add_argument("--keyfile", default=default("keyfile"), help="TLS private key (PEM)")
    p.add_argument(
        "--backend",
        default=default("backend"),
        help="local, or s3://BUCKET[/PREFIX]?endpoint=URL to cache another S3 store",
    )
    p.add_argument(
        "--revalidate", default=default("revalidate"), help="proxy-mode revalidation seconds"
    )
    p.add_argument(
        "--max-open-bodies", default=default("max_open_bodies"), help="open body files (1024)"
    )
    a = p.parse_args(argv)
    try:
        port = int(a.port)
    except ValueError:
        raise ConfigError(f"--port {a.port!r}: not a number") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port {port}: out of range 0-65535")
    try:
        revalidate = float(a.revalidate)
        max_open = int(a.max_open_bodies)
    except ValueError as exc:
        raise ConfigError(f"--revalidate / --max-open-bodies: {exc}") from None
    if revalidate < 0:
        raise ConfigError(f"--revalidate {revalidate}: must not be negative")
    if max_open < 1:
        raise ConfigError(f"--max-open-bodies {max_open}: must be at least 1")
    if bool(a.certfile) != bool(a.keyfile):
        raise ConfigError("--certfile and --keyfile go together")
    for path in (a.certfile, a.keyfile):
        if path and not os.path.isfile(path):
            raise ConfigError(f"TLS file not found: {path}")
    return GatewayConfig(
        host=a.host,
        port=port,
        data_dir=a.data_dir,
        memory_limit=parse_size(a.memory_limit),
        certfile=a.certfile,
        keyfile=a.keyfile,
        backend=_check_backend(a.backend),
        revalidate=revalidate,
        access_key=default("access_key"),
        secret_key=default("secret_key"),
        region=default("region"),
        max_open_bodies=max_open,
    )
