"""img2dataset's logger process, forked from the download stage's forkserver: it starts without
re-importing img2dataset and still writes img2dataset's summary lines into the stage's log."""

from __future__ import annotations

import json
import multiprocessing.popen_forkserver
from pathlib import Path

from mvlp_core.stages.download_logger import ForkedLogger


def test_forked_logger_writes_img2datasets_lines_to_the_log(tmp_path: Path) -> None:
    shards, log = tmp_path / "webdataset", tmp_path / "img2dataset.log"
    shards.mkdir()
    stats = {
        "count": 10,
        "successes": 9,
        "failed_to_download": 1,
        "failed_to_resize": 0,
        "start_time": 100.0,
        "end_time": 101.0,
        "status_dict": {"success": 9, "HTTP Error 404: Not Found": 1},
    }
    (shards / "00000_stats.json").write_text(json.dumps(stats))
    logger = ForkedLogger(log, str(shards), False, "", {})
    logger.start()
    assert isinstance(logger._popen, multiprocessing.popen_forkserver.Popen)  # not spawned
    logger.join()  # img2dataset's join: "stop", then the last pass over the stats files
    assert logger.exitcode == 0
    text = log.read_text()
    assert "total   - success: 0.900 - failed to download: 0.100" in text
    assert text.count("count: 10") == 2  # the shard's line and the total's
