"""The CLI's contract: a failed command prints exactly one line on stderr, `error: ...` naming the
cause and the fix, and exits with code 2 (usage errors, bad specs, bad overrides, a workdir that
cannot be written, a stage failing inside a Prefect run, an unexpected exception)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def mvlp(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args], cwd=ROOT, capture_output=True, text=True, env=env
    )


def one_line(res: subprocess.CompletedProcess) -> str:
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2 and len(lines) == 1, (res.returncode, res.stderr[-3000:])
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["run"], "Missing argument 'spec'. (see mvlp run --help)"),
        (["run", "demo", "--bogus"], "No such option: --bogus"),
        (["run", "no-such-spec.yaml"], "spec file no-such-spec.yaml not found"),
        (
            ["run", "demo", "--set", "download.timeout={oops"],
            "--set download.timeout={oops: the value is not YAML",
        ),
        (
            ["run", "demo", "--set", "download.image_size=1000000"],
            "download.image_size: Input should be less than or equal to 4096",
        ),
        (
            ["run", "demo", "--set", "download.timeout=.inf"],
            "download.timeout: Input should be a finite number",
        ),
        (["run", "demo", "--set", "cluster.mode=rayjob"], "cluster.mode was replaced by execution.submit"),
        (["run", "demo", "--only", "sharding"], "--only 'sharding': unknown stage"),
        (["run", "demo", "--set", "execution.engines={shard: ray}"], "'ray' is not an engine of shard"),
        (["run", "data_specs"], "is a directory; give a YAML file in it"),
        (["status", "--workdir", "/nonexistent-mvlp-run"], "holds no run (spec.json missing)"),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 40 else None,
)
def test_a_failed_command_is_one_line_and_exit_code_2(args: list[str], expected: str) -> None:
    assert expected in one_line(mvlp(*args))


def test_a_workdir_that_cannot_be_written_is_one_line() -> None:
    line = one_line(mvlp("run", "demo", "--workdir", "/proc/mvlp-run"))
    assert "workdir /proc/mvlp-run cannot be written" in line and "--workdir" in line


def test_a_stage_failing_inside_the_run_is_one_line_naming_the_log(tmp_path: Path) -> None:
    """The stage's error raised inside a Prefect flow run: Prefect's own logs and tracebacks go to
    the run's log file, the terminal gets the one line."""
    line = one_line(mvlp("run", "demo", "--workdir", str(tmp_path), "--only", "shard"))
    assert "shard needs the output of align" in line and "run it first" in line
    log = tmp_path / "logs" / "run.log"
    assert str(log) in line and "Traceback" in log.read_text(encoding="utf-8")


def test_an_unexpected_exception_is_one_line_and_its_trace_goes_to_the_error_log(tmp_path: Path) -> None:
    env = {**os.environ, "MVLP_LOG_DIR": str(tmp_path)}
    res = mvlp("status", "--interval", "oops", env=env)
    assert "Invalid value for '--interval'" in one_line(res)  # a usage error stays a usage error
    bug = "import flows.cli as cli; cli.pipeline.load_saved_spec = lambda w: 1 / 0; cli.main(['status'])"
    crash = subprocess.run([sys.executable, "-c", bug], cwd=ROOT, capture_output=True, text=True, env=env)
    line = one_line(crash)
    assert "ZeroDivisionError: division by zero" in line and str(tmp_path / "errors.log") in line
    assert "Traceback" in (tmp_path / "errors.log").read_text(encoding="utf-8")


@pytest.mark.parametrize("argv", [["--help"], ["status", "--interval", "oops"]])
def test_the_command_leaves_its_objects_to_the_process_exit(argv: list[str]) -> None:
    """`main` ends the process with the heap frozen (succeeding or failing), so the interpreter's
    last cyclic collection does not walk every object Prefect and the stages left."""
    probe = (
        "import atexit, gc, sys; import flows.cli as cli;"
        " atexit.register(lambda: sys.stderr.write(f'frozen={gc.get_freeze_count()}'));"
        f" cli.main({argv!r})"
    )
    res = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True)
    frozen = int(res.stderr.rsplit("frozen=", 1)[1])
    assert frozen > 10_000, res.stderr[-2000:]
