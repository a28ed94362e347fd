"""`kill -9` of a run mid-download leaves nothing working: img2dataset's forkserver and workers and
Prefect's API server die with it (mvlp_core.reaper), and once the next holder has the workdir lock,
no process of the killed run fetches or writes."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import chaos_harness as harness
import pytest
from PIL import Image

from flows import concurrency

pytestmark = pytest.mark.chaos
ROWS = 400  # at 0.3 s an image and 4 threads, a download of about 30 s: it is killed well inside it


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), "green").save(buf, "JPEG")
    return buf.getvalue()


class SlowImages(ThreadingHTTPServer):
    """Every path answers the same JPEG after 0.3 s; `requests` counts what was asked."""

    daemon_threads = True

    def __init__(self) -> None:
        body, server = _jpeg(), self
        self.requests = 0
        self.lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                with server.lock:
                    server.requests += 1
                time.sleep(0.3)  # the server's pace, not the test's synchronisation
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)


def files(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def test_kill_mid_download_leaves_no_process_fetching_or_writing(tmp_path: Path) -> None:
    server = SlowImages()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    (tmp_path / "urls.tsv").write_text(
        "caption\turl\n" + "".join(f"a green square {i}\t{url}{i}.jpg\n" for i in range(ROWS))
    )
    dataset = {"name": "orphans", "url_list": str(tmp_path / "urls.tsv"), "format": "tsv"}
    workdir = tmp_path / "run"
    args = [sys.executable, "-m", "flows.cli", "run", "demo", "--workdir", str(workdir), "--to", "download"]
    for item in (
        f"dataset.spec={json.dumps(dataset)}",
        "ingest.shard_size=50",
        "download.processes=1",
        "download.threads=4",
        "download.timeout=10",
    ):
        args += ["--set", item]
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # its own Prefect server
    log = tmp_path / "run.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            args, cwd=harness.ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        harness.wait_for(lambda: server.requests >= 12, proc, log, "the download under way", timeout=300)
        assert not (workdir / "download" / "_manifest.json").exists()
        os.kill(proc.pid, signal.SIGKILL)  # the run only: what it started must follow by itself
        proc.wait()
        with concurrency.workdir_lock(workdir):  # what a re-run does first
            written, fetched = files(workdir / "download"), server.requests
            deadline = time.monotonic() + 60
            while harness.session(proc.pid):  # the killed run's processes, none left to kill by hand
                assert time.monotonic() < deadline, f"outlived the run: {harness.session(proc.pid)}"
                time.sleep(0.05)
            assert files(workdir / "download") == written, "a process of the killed run wrote here"
            assert server.requests == fetched, "a process of the killed run fetched after it died"
        assert fetched < ROWS  # it was killed mid-download
    finally:
        harness.kill_group(proc)
        server.shutdown()
