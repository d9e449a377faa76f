"""The command line: sizes, defaults and refusals."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

import pytest

from examples.embedded_app.__main__ import build_parser, main, parse_size

if TYPE_CHECKING:
    from pathlib import Path


@pytest.mark.parametrize(
    ("text", "n"),
    [
        ("4096", 4096),
        ("64KiB", 64 << 10),
        ("256MiB", 256 << 20),
        ("1g", 1 << 30),
        ("2 MB", 2 << 20),
    ],
)
def test_parse_size(text: str, n: int) -> None:
    assert parse_size(text) == n


@pytest.mark.parametrize("text", ["", "0", "-1", "12XB", "one"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="not a positive size"):
        parse_size(text)


def test_defaults() -> None:
    args = build_parser().parse_args(["/srv"])
    assert (args.host, args.port, args.memory_limit, args.revalidate) == (
        "127.0.0.1",
        8000,
        256 << 20,
        1.0,
    )


def test_missing_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "nope")]) == 2
    assert "not a directory" in capsys.readouterr().err
