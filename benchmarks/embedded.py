"""Hot files over HTTP: ``examples.embedded_app`` against Starlette's own ``StaticFiles``.

Both applications serve the same directory (a 4 KiB and a 256 KiB file, fixed seed) from their
own uvicorn process with the same settings: uvloop, httptools, one worker, no access log. The
subject is ``create_app(DIR)``; the baseline is ``Starlette(routes=[Mount("/",
app=StaticFiles(directory=DIR))])``. Both are warm (the kernel page cache holds the files; the
subject's cache holds them after the warm-up round) and checked to return the files' bytes.

The load generator is wrk (Debian package ``wrk``): one thread, 32 keep-alive connections, a
bounded duration per repetition. Subject and baseline alternate repetition by repetition (A B A B
...), and the ratio is the median of the paired req/s ratios (see ``_harness.ratio_result``). On
the 2-core machine wrk and the server each get about one core, so absolute numbers are modest;
the ratio is what the target reads.

Target: at least 3x StaticFiles' req/s for both files.

Run alone: ``python -m benchmarks.embedded``. ``--serve {cached,static} DIR PORT`` is the server
process the benchmark starts (not for use by hand).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final

import httpx

from ._harness import KIB, Result, print_results, ratio_result, rng

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

WORKLOAD: Final = "embedded"
FILES: Final = {"4 KiB": ("small.bin", 4 * KIB), "256 KiB": ("medium.bin", 256 * KIB)}
#: Seconds per wrk run; warm-up runs are shorter.
DURATION: Final = float(os.environ.get("BENCH_EMBEDDED_SECONDS", "4"))
WARMUP: Final = 2.0
#: Timed repetitions per file and application (each DURATION seconds).
REPEATS: Final = max(5, int(os.environ.get("BENCH_EMBEDDED_REPEATS", "5")))
CONNECTIONS: Final = 32
TARGET: Final = 3.0
#: The same uvicorn settings for both applications.
UVICORN: Final = {
    "loop": "uvloop",
    "http": "httptools",
    "workers": 1,
    "access_log": False,
    "log_level": "warning",
    "lifespan": "on",
}
_REPO: Final = Path(__file__).resolve().parent.parent


def serve(kind: str, directory: str, port: int) -> None:
    """The server process: run one application under uvicorn until SIGTERM."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.staticfiles import StaticFiles

    from examples.embedded_app import create_app

    if kind == "cached":
        app = create_app(directory, memory_limit=64 << 20, allow_put=False)
    elif kind == "static":
        app = Starlette(routes=[Mount("/", app=StaticFiles(directory=directory))])
    else:
        raise SystemExit(f"unknown application {kind!r}")
    uvicorn.run(app, host="127.0.0.1", port=port, **UVICORN)  # type: ignore[arg-type]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class _Server:
    """One application in its own uvicorn process."""

    def __init__(self, kind: str, directory: Path) -> None:
        self.kind = kind
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.embedded",
                "--serve",
                kind,
                str(directory),
                str(self.port),
            ],
            cwd=_REPO,
        )
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the {kind} server exited with {self.proc.returncode}")
            try:
                httpx.get(self.url + "/", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"the {kind} server did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


_RPS = re.compile(rb"Requests/sec:\s+([\d.]+)")
_BAD = re.compile(rb"Non-2xx or 3xx responses:\s+(\d+)")


def wrk(url: str, seconds: float) -> float:
    """Requests per second of one wrk run against ``url``."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds:g}s", url],
        capture_output=True,
        check=True,
        timeout=seconds + 30,
    ).stdout
    bad = _BAD.search(out)
    if bad is not None:
        raise RuntimeError(f"{bad.group(1).decode()} failed responses from {url}")
    m = _RPS.search(out)
    if m is None:
        raise RuntimeError(f"no Requests/sec in wrk's output: {out!r}")
    return float(m.group(1))


def _servers(directory: Path) -> Iterator[_Server]:
    for kind in ("cached", "static"):
        yield _Server(kind, directory)


def run() -> list[Result]:
    """Start both servers, load them in turns with wrk, return one result per file."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (Debian package wrk)")
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-embedded-") as tmp:
        root = Path(tmp)
        data = {}
        for i, (name, size) in enumerate(FILES.values()):
            data[name] = rng(100 + i).randbytes(size)
            (root / name).write_bytes(data[name])
        servers: list[_Server] = []
        try:
            servers.extend(_servers(root))
            subject, baseline = servers
            for label, (name, _size) in FILES.items():
                for s in servers:
                    r = httpx.get(f"{s.url}/{name}")
                    if r.status_code != 200 or r.content != data[name]:
                        raise RuntimeError(f"{s.kind} served {r.status_code}, wrong bytes")
                    wrk(f"{s.url}/{name}", WARMUP)
                mine: list[float] = []
                theirs: list[float] = []
                for _ in range(REPEATS):
                    mine.append(wrk(f"{subject.url}/{name}", DURATION))
                    theirs.append(wrk(f"{baseline.url}/{name}", DURATION))
                results.append(
                    ratio_result(
                        WORKLOAD,
                        f"hot {label} file GET, embedded_app",
                        mine,
                        "Starlette StaticFiles",
                        theirs,
                        unit="req/s",
                        target=TARGET,
                        higher_is_better=True,
                        note=(
                            f"wrk -t1 -c{CONNECTIONS} -d{DURATION:g}s x{REPEATS}; req/s "
                            f"embedded_app {sorted(round(x) for x in mine)}, "
                            f"StaticFiles {sorted(round(x) for x in theirs)}"
                        ),
                    )
                )
        finally:
            for s in servers:
                s.stop()
    return results


def main(argv: Sequence[str]) -> int:
    """``--serve KIND DIR PORT`` runs a server; no arguments runs the benchmark."""
    if argv[:1] == ["--serve"] and len(argv) == 4:
        serve(argv[1], argv[2], int(argv[3]))
        return 0
    if argv:
        print("usage: python -m benchmarks.embedded [--serve {cached,static} DIR PORT]")
        return 2
    print_results(run(), "hot files over HTTP: embedded_app vs Starlette StaticFiles")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
