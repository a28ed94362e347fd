"""download under faults: a worker that dies mid-shard fails the stage loudly
(multiprocessing.Pool, img2dataset's default, waits for the lost shard forever); a connection
dropped mid-body is a connection error; an image its server opts out of (X-Robots-Tag) is an
`opt_out` reject, its body unread; img2dataset's own downloader fetches through the fetch guard,
and `check_guarded` stops the stage when a downloader does not."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import ssl
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from img2dataset import downloader

from mvlp_core import fetchguard
from mvlp_core.contract import StageError
from mvlp_core.spec import DownloadSpec, UrlPolicy
from mvlp_core.stages.download import _distributor, check_guarded, error_reason
from tests.fakes.scripted_server import ScriptedServer


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


# --- X-Robots-Tag opt-outs, through img2dataset's own downloader --------------------------------

BADINPUT = Path(__file__).parents[1] / "badinput" / "images"
BOMB = (BADINPUT / "bomb.png").read_bytes()  # 157 bytes declaring 20000x20000 pixels
DIRECTIVES = {d.lower() for d in DownloadSpec().opt_out_directives}  # as img2dataset's Downloader


@contextlib.contextmanager
def guarded(policy: UrlPolicy, **kw) -> Iterator[None]:
    """The fetch guard installed in this process, as in each download worker, then removed."""
    fetchguard.install(policy, 1 << 20, 10_000_000, **kw)
    try:
        yield
    finally:
        fetchguard.uninstall()


def test_an_x_robots_tag_refusal_is_an_opt_out_reject() -> None:
    message = "Use of image disallowed by X-Robots-Tag directive"  # img2dataset 1.45-1.47
    assert error_reason(message, "failed_to_download") == "opt_out"


@pytest.mark.parametrize(
    "header, token, refused",
    [
        ("noai", "img2dataset", True),  # addressed to every crawler
        ("noimageai, nofollow", None, True),
        ("NoIndex", "img2dataset", True),
        ("img2dataset: noai", "img2dataset", True),  # addressed to the spec's default token
        ("mvlpbot: noimageindex", "mvlpbot", True),  # to a configured token
        ("otherbot: noai", "img2dataset", False),  # to another crawler
        ("img2dataset: noai", None, False),  # no token: addressed directives are someone else's
        ("index, follow", "img2dataset", False),
    ],
)
def test_x_robots_tag_opt_outs_are_refused_before_the_body_is_read(
    header: str, token: str | None, refused: bool
) -> None:
    """Every answer's body is a pixel bomb the guard refuses when it is read: an opt-out is
    `opt_out` (nothing read), anything else `image_too_large` (read, through the guard)."""
    with ScriptedServer() as srv, guarded(UrlPolicy(allow_loopback=True)):
        url = srv.script("/a.png", (200, {"Content-Type": "image/png", "X-Robots-Tag": header}, BOMB))
        key, stream, error = downloader.download_image((7, url), 5, token, DIRECTIVES)
        [(_, sent)] = srv.requests("/a.png")
    assert key == 7 and stream is None
    assert error_reason(error, "failed_to_download") == ("opt_out" if refused else "image_too_large")
    if token:
        assert f"(compatible; {token}; " in sent["User-Agent"]


# --- img2dataset's download path goes through the guard, or the stage stops --------------------


def download_image_with_context(row, timeout, user_agent_token, disallowed_header_directives):
    """img2dataset's download_image as its main branch has it after 1.47.0 (commit 95523bc,
    "Option to ignore SSL certificate"): `urlopen(request, context=ctx, timeout=timeout)`, which
    urllib serves with a fresh opener of its own, past an installed one."""
    key, url = row
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "Mozilla/5.0"})
        with urllib.request.urlopen(request, context=ssl.create_default_context(), timeout=timeout) as r:
            return key, io.BytesIO(r.read()), None
    except Exception as err:
        return key, None, str(err)


def download_image_past_the_guard(row, timeout, user_agent_token, disallowed_header_directives):
    """A downloader that builds its own opener, as urllib does for `urlopen(..., context=ctx)`
    (and as any HTTP library but urllib.request.urlopen would): the guard never sees it."""
    key, url = row
    try:
        own = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ssl.create_default_context()))
        with own.open(url, timeout=timeout) as r:
            return key, io.BytesIO(r.read()), None
    except Exception as err:
        return key, None, str(err)


def test_img2dataset_downloader_fetches_nothing_the_policy_refuses() -> None:
    """img2dataset's own download_image, sent to an address the policy refuses (loopback not
    allowed): the guard refuses it before connecting, and the server sees no connection at all."""
    with ScriptedServer() as srv, guarded(UrlPolicy()):
        url = srv.script("/a.jpg", (200, {"Content-Type": "image/jpeg"}, BOMB))
        _, stream, error = downloader.download_image((0, url), 5, "img2dataset", DIRECTIVES)
        assert fetchguard.requests_seen() == 1
    assert stream is None and error_reason(error, "failed_to_download") == "url_loopback"
    assert srv.connections == 0 and srv.requests("/a.jpg") == []


def test_urlopen_with_an_ssl_context_goes_through_the_guard_too() -> None:
    with ScriptedServer() as srv, guarded(UrlPolicy()):
        url = srv.script("/a.jpg", (200, {"Content-Type": "image/jpeg"}, BOMB))
        _, stream, error = download_image_with_context((0, url), 5, None, None)
        assert srv.connections == 0
        check_guarded(download_image_with_context)  # the stage would run
    assert stream is None and error_reason(error, "failed_to_download") == "url_loopback"


def test_check_guarded_passes_img2dataset_through_the_guard() -> None:
    with guarded(UrlPolicy()):
        check_guarded()
        assert fetchguard.requests_seen() == 2  # the http and the https probe, both refused


def test_check_guarded_stops_a_downloader_that_fetches_past_the_guard() -> None:
    with ScriptedServer() as srv, guarded(UrlPolicy()):
        url = srv.script("/a.jpg", (200, {"Content-Type": "image/jpeg"}, BOMB))
        download_image_past_the_guard((0, url), 5, None, None)
        assert srv.connections == 1  # what such a downloader would do: fetch, unchecked
        with pytest.raises(StageError, match="past the fetch guard") as err:
            check_guarded(download_image_past_the_guard)
    assert "\n" not in str(err.value) and "pyproject.toml" in str(err.value)


def test_check_guarded_stops_the_stage_when_no_guard_is_installed() -> None:
    with pytest.raises(StageError, match="past the fetch guard"):
        check_guarded()


def test_check_guarded_names_a_downloader_it_cannot_call() -> None:
    def changed(url, timeout):
        raise AssertionError("not called")

    with guarded(UrlPolicy()), pytest.raises(StageError, match="takes other arguments"):
        check_guarded(changed)
