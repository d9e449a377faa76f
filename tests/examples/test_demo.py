"""The demo that ``make run`` runs: it finishes, exits 0 and narrates hits and misses."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from examples import demo

if TYPE_CHECKING:
    from pathlib import Path


def test_demo_runs_and_reports_hits_and_misses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert demo.main(["--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "demo.bin").stat().st_size == demo.DEFAULT_SIZE
    assert "miss" in out
    assert "hit" in out
    assert "Usage stayed within the budget" in out
    assert "aiocache_inode_cache_hits_total" in out
    assert "aiocache_inode_cache_misses_total" in out
    assert "store.dirty_bytes = 0" in out


def test_demo_reuses_the_file_and_accepts_small_sizes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert demo.main(["--data-dir", str(tmp_path), "--size", "5000"]) == 0
    assert "created" in capsys.readouterr().out
    assert demo.main(["--data-dir", str(tmp_path), "--size", "5000"]) == 0
    out = capsys.readouterr().out
    assert "reusing" in out
    assert "fits in the budget" in out


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8388608", 8 << 20),
        ("8M", 8 << 20),
        ("8MiB", 8 << 20),
        ("512kib", 512 << 10),
        ("1g", 1 << 30),
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    assert demo.parse_size(text) == expected


@pytest.mark.parametrize("text", ["0", "-1", "8 parsecs", ""])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="size"):
        demo.parse_size(text)


def test_pattern_pages_name_themselves() -> None:
    data = demo.pattern(3 * 4096 + 10)
    assert len(data) == 3 * 4096 + 10
    assert data[2 * 4096 :].startswith(b"demo.bin page 000002 | ")
