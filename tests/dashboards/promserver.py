"""A real Prometheus for the tests: started as a plain process, queried over its HTTP API.

Also the Grafana side of a query: the dashboard's variables (``$job``, ``$instance``,
``$__rate_interval``, ...) substituted the way Grafana does before it sends a query, and its
``label_values()`` variable queries answered from Prometheus's label API.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import httpx

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from pathlib import Path

PROMETHEUS: Final = shutil.which("prometheus")
PROMTOOL: Final = shutil.which("promtool")
#: Bounds every wait on Prometheus: start-up, first scrape, enough samples.
DEADLINE: Final = 60.0
#: The scrape interval the tests configure; Grafana's $__rate_interval is four of them.
SCRAPE_INTERVAL: Final = 1.0


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (bind to 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def poll(what: str, check: Callable[[], Any], *, deadline: float = DEADLINE) -> Any:
    """Call ``check`` until it returns something truthy, or fail after ``deadline`` seconds.

    Raises:
        AssertionError: ``check`` never succeeded; the message names ``what`` and the last error.
    """
    end = time.monotonic() + deadline
    last: object = None
    while True:
        try:
            result = check()
        except (httpx.HTTPError, OSError, KeyError, ValueError) as exc:
            result, last = None, exc
        if result:
            return result
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting for {what} after {deadline} s (last: {last!r})")
        time.sleep(0.1)


@dataclass
class Prometheus:
    """A running Prometheus and a client for its API.

    Attributes:
        url: the base URL, ``http://127.0.0.1:PORT``.
        proc: the process.
        log: its stdout and stderr, for failure messages.
    """

    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.url, timeout=10.0)

    def api(self, path: str, **params: Any) -> Any:
        """GET ``/api/v1/<path>`` and return ``data``, raising on an error status.

        Raises:
            AssertionError: Prometheus answered with ``status: error`` (its message attached).
        """
        response = self.client.get(f"/api/v1/{path}", params=params)
        body = response.json()
        assert body["status"] == "success", f"{path} {params}: {body}"
        return body["data"]

    def query(self, expr: str, at: float) -> dict[str, Any]:
        """An instant query at ``at`` (Unix seconds)."""
        data: dict[str, Any] = self.api("query", query=expr, time=f"{at:.3f}")
        return data

    def query_range(self, expr: str, start: float, end: float, step: float) -> dict[str, Any]:
        """A range query over [start, end] every ``step`` seconds."""
        data: dict[str, Any] = self.api(
            "query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=f"{step:g}"
        )
        return data

    def samples(self, job: str, at: float | None = None) -> int:
        """How many successful scrapes of ``job`` Prometheus holds in the last minute."""
        expr = f'count_over_time(up{{job="{job}"}}[1m])'
        data = self.query(expr, time.time() if at is None else at)
        return int(float(data["result"][0]["value"][1])) if data["result"] else 0

    def label_values(self, selector: str, label: str) -> list[str]:
        """What Grafana's ``label_values(selector, label)`` variable query lists."""
        values: list[str] = self.api(f"label/{label}/values", **{"match[]": selector})
        return values

    def close(self) -> None:
        self.client.close()


@contextlib.contextmanager
def run_prometheus(
    tmp_path: Path, scrape: Sequence[tuple[str, str]], rule_files: Sequence[Path] = ()
) -> Iterator[Prometheus]:
    """Start Prometheus scraping each (job, host:port) every second; stop and reap it on exit.

    Storage goes to ``tmp_path``; the rules in ``rule_files`` are evaluated every second.
    Waits for ``/-/ready`` (bounded, polled), not for the first scrape: see :func:`poll`.
    """
    assert PROMETHEUS is not None
    port = free_port()
    config = {
        "global": {
            "scrape_interval": f"{SCRAPE_INTERVAL:g}s",
            "scrape_timeout": f"{SCRAPE_INTERVAL:g}s",
            "evaluation_interval": "1s",
        },
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [target]}]} for job, target in scrape
        ],
    }
    # JSON is YAML: no YAML writer needed.
    (tmp_path / "prometheus.yml").write_text(json.dumps(config), encoding="utf-8")
    log = tmp_path / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--web.enable-lifecycle",
                "--log.level=warn",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    prom = Prometheus(f"http://127.0.0.1:{port}", proc, log)
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"prometheus exited: {log.read_text(errors='replace')}")
            return prom.client.get("/-/ready").status_code == 200

        poll("prometheus /-/ready", ready)
        yield prom
    finally:
        prom.close()
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)


# ---------------------------------------------------------------------------------------------
# Grafana's side of a query
# ---------------------------------------------------------------------------------------------

_LABEL_VALUES = re.compile(r"^label_values\((?:(?P<selector>.+),\s*)?(?P<label>\w+)\)$")


def grafana_variable_query(prom: Prometheus, query: str, variables: dict[str, str]) -> list[str]:
    """Answer a dashboard variable's ``label_values([selector,] label)`` as Grafana would."""
    m = _LABEL_VALUES.match(substitute(query, variables))
    assert m is not None, f"not a label_values() query: {query}"
    selector = m.group("selector") or '{__name__=~".+"}'
    return prom.label_values(selector, m.group("label"))


def substitute(expr: str, variables: dict[str, str]) -> str:
    """Replace ``$name`` / ``${name}`` by ``variables[name]``, longest names first.

    Raises:
        AssertionError: the expression still names a variable ``variables`` does not define.
    """
    for name in sorted(variables, key=len, reverse=True):
        expr = expr.replace("${" + name + "}", variables[name]).replace("$" + name, variables[name])
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    return expr


def regex_of(values: Sequence[str]) -> str:
    """A multi-value variable as Grafana interpolates it into ``=~``: ``(a|b)``, escaped."""
    escaped = [re.sub(r"([\\.+*?()|\[\]{}^$])", r"\\\\\1", v) for v in values]
    return "(" + "|".join(escaped) + ")" if len(escaped) > 1 else escaped[0]


def finite_values(result: dict[str, Any]) -> int:
    """How many finite sample values an instant (vector) or range (matrix) result holds."""
    n = 0
    for series in result["result"]:
        points = series["values"] if result["resultType"] == "matrix" else [series["value"]]
        n += sum(1 for _, v in points if math.isfinite(float(v)))
    return n


_COMPARISON = re.compile(r"(>=|<=|==|!=|>|<)(?!\s*bool\b)")


def with_bool(expr: str) -> str:
    """``expr`` with every comparison outside label matchers made a ``bool`` comparison.

    An alert expression filters: when it is not firing it returns nothing, which says nothing
    about whether its series exist and its two sides match. Its ``bool`` form keeps every series
    (values 0 or 1), so an empty answer then means a wrong name or a label mismatch.
    """
    out: list[str] = []
    depth = 0
    quote: str | None = None
    i = 0
    while i < len(expr):
        c = expr[i]
        if quote:
            out.append(c)
            if c == "\\":
                out.append(expr[i + 1])
                i += 1
            elif c == quote:
                quote = None
        elif c in "\"'`":
            quote = c
            out.append(c)
        elif c == "{":
            depth += 1
            out.append(c)
        elif c == "}":
            depth -= 1
            out.append(c)
        elif depth == 0 and (m := _COMPARISON.match(expr, i)):
            out.append(m.group(1) + " bool")
            i += len(m.group(1))
            continue
        else:
            out.append(c)
        i += 1
    return "".join(out)
