"""download under faults: a worker that dies mid-shard fails the stage loudly
(multiprocessing.Pool, img2dataset's default, waits for the lost shard forever); a connection
dropped mid-body is a connection error."""

from __future__ import annotations

import os
import signal

import pytest

from mvlp_core.contract import StageError
from mvlp_core.stages.download import _distributor, error_reason


def _downloader(shard: int) -> tuple[bool, int]:
    if shard == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return True, shard


def _flaky(row: tuple[int, str]) -> tuple[bool, tuple[int, str]]:
    """Fails shard 2 until its marker file exists (img2dataset's retrier gets it the second time).
    The marker's path travels with the shard: the workers fork from a forkserver that keeps the
    environment it started with."""
    shard, marker = row
    if shard == 2 and not os.path.exists(marker):
        open(marker, "w").close()
        return False, row
    return True, row


NO_GUARD = (None, 1 << 20, 10**8)


def test_dead_worker_is_a_stage_error_not_a_hang() -> None:
    with pytest.raises(StageError, match="img2dataset worker process died"):
        _distributor(1, _downloader, iter([0, 1, 2]), None, 1, guard=NO_GUARD)


def test_failed_shards_are_retried(tmp_path, capfd) -> None:
    marker = str(tmp_path / "failed-once")
    _distributor(2, _flaky, iter([(shard, marker) for shard in range(4)]), None, 1, guard=NO_GUARD)
    assert (tmp_path / "failed-once").exists()
    assert "Retrying 1 shards" in capfd.readouterr().out


def test_body_cut_short_is_a_connection_error() -> None:
    assert (
        error_reason("IncompleteRead(386 bytes read, 387 more expected)", "failed_to_download")
        == "connection_error"
    )
