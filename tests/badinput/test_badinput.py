"""The bad-input corpus: every case ends with the reject reason or error message it names.

URL-list rows (url_rows.yaml) run through the real ingest and download stages (img2dataset over
a loopback server, through the fetch guard); bad specs (specs/*.yaml, first line `# expect:
REGEX`) must fail to load with a message matching it. Each run also checks the count invariant:
every row is in the output or in the rejects, none twice.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from mvlp_core import contract
from mvlp_core.imageserver import ImageServer
from mvlp_core.spec import SpecError, load_spec
from mvlp_core.stages.download import STAGE as DOWNLOAD_STAGE
from mvlp_core.stages.ingest import STAGE as INGEST_STAGE

HERE = Path(__file__).parent
CASES = yaml.safe_load((HERE / "url_rows.yaml").read_text(encoding="utf-8"))
SPECS = sorted((HERE / "specs").glob("*.yaml"))


def _line(case: dict, urls: dict[str, str]) -> bytes:
    if "raw" in case:
        text = case["raw"]
    else:
        caption = "a " + "very " * 2000 + "long caption" if case["caption"] == "{10kb}" else case["caption"]
        text = f"{caption}\t{case['url'].format(**urls)}"
    return text.encode("latin-1" if case.get("latin1") else "utf-8") + b"\n"


def _run(tmp: Path, phase: str, urls: dict[str, str], overrides: list[str]) -> dict[int, str]:
    """Run the phase's cases as one URL list; returns row index -> reject reason or 'ok'."""
    cases = CASES[phase]
    (tmp / "urls.tsv").write_bytes(b"caption\turl\n" + b"".join(_line(c, urls) for c in cases))
    dataset = {"name": "bad", "url_list": str(tmp / "urls.tsv"), "format": "tsv"}
    spec = load_spec("demo", [f"dataset.spec={json.dumps(dataset)}", *overrides], tmp)
    manifest = INGEST_STAGE.run(spec, {}, tmp / "ingest")
    if phase == "download":
        manifest = DOWNLOAD_STAGE.run(spec, {"ingest": tmp / "ingest"}, tmp / "download")
    out_dir = tmp / phase
    assert manifest.samples_in == len(cases)
    outcome: dict[int, str] = {}
    for rec in contract.read_rejects(out_dir).to_pylist():
        row = (
            int(rec["key"].rsplit("-", 1)[1]) if rec["key"] else int(re.match(r"row (\d+)", rec["detail"])[1])
        )
        assert row not in outcome, f"row {row} rejected twice"
        outcome[row] = rec["reason"]
    pattern = "shard-*.parquet" if phase == "ingest" else "samples-*.parquet"
    for f in sorted(out_dir.glob(pattern)):
        for key in pq.read_table(f, columns=["key"]).column("key").to_pylist():
            row = int(key.rsplit("-", 1)[1])
            assert row not in outcome, f"row {row} both output and rejected"
            outcome[row] = "ok"
    assert len(outcome) == len(cases), "a row vanished: neither output nor rejected"
    return outcome


def _check(phase: str, outcome: dict[int, str]) -> None:
    got = {c["id"]: outcome[i] for i, c in enumerate(CASES[phase])}
    want = {c["id"]: c["expect"] for c in CASES[phase]}
    assert got == want


def test_url_rows_rejected_at_ingest_with_the_production_policy(tmp_path: Path) -> None:
    _check("ingest", _run(tmp_path, "ingest", {}, ["ingest.url_policy.allow_loopback=false"]))


def test_url_rows_fetched_through_the_guard(tmp_path: Path) -> None:
    with ImageServer(HERE, slow_seconds=4) as server, ImageServer(HERE) as secret:
        urls = {"server": server.url, "secret": secret.url}
        outcome = _run(
            tmp_path,
            "download",
            urls,
            [
                f"ingest.url_policy.allowed_ports=[{server.port}]",
                "download.timeout=2",
                f"download.max_response_bytes={1 << 20}",
                f"download.max_image_pixels={10_000_000}",
            ],
        )
        assert secret.request_counts() == {}
    _check("download", outcome)


def test_corpus_is_large_enough() -> None:
    """At least 150 cases across the corpus files, each with the reason or message it must give."""

    def corpus(name: str) -> dict:
        return yaml.safe_load((HERE / f"{name}.yaml").read_text(encoding="utf-8"))

    counts = {
        "url_rows": len(CASES["ingest"]) + len(CASES["download"]),
        "specs": len(SPECS) + len(GENERATED),
        "ingest_files": len(corpus("ingest_files")["cases"]),
        "hostile_fetch": sum(len(group) for group in corpus("hostile_fetch").values()),
        "secrets": len(corpus("secrets")["cases"]),
        "llm_outputs": len(json.loads((HERE / "llm_outputs.json").read_text(encoding="utf-8"))),
    }
    assert all(counts.values()) and sum(counts.values()) >= 150, counts


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_bad_spec_fails_with_its_message(path: Path, tmp_path: Path) -> None:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} must start with '# expect: REGEX'"
    with pytest.raises(SpecError) as err:
        load_spec(path, workdir=tmp_path)
    assert re.search(first.removeprefix("# expect: "), str(err.value)), str(err.value)
    assert "\n" not in str(err.value)  # one line: what the CLI prints


# Spec files that cannot live in the corpus as files (a directory, bytes that are not UTF-8, a
# file past the size bound, nesting past Python's recursion limit): written by the test.
GENERATED = {
    "a_directory": (lambda p: p.mkdir(), r"is a directory; give a YAML file in it"),
    "latin1_bytes": (lambda p: p.write_bytes(b"name: caf\xe9\n"), r"not UTF-8 \(invalid continuation byte"),
    "over_a_mebibyte": (lambda p: p.write_text("# " + "x" * (1 << 20) + "\n"), r"over 1048576 bytes"),
    "nested_past_the_recursion_limit": (lambda p: p.write_text("[" * 100_000), r"nested too deeply|not YAML"),
    "empty_file": (lambda p: p.write_text(""), r"expected a YAML mapping at the top level"),
    "only_a_comment": (lambda p: p.write_text("# nothing\n"), r"expected a YAML mapping at the top level"),
    "a_bare_string": (lambda p: p.write_text("demo\n"), r"expected a YAML mapping at the top level"),
    "tabs_for_indentation": (lambda p: p.write_text("name: x\ndownload:\n\ttimeout: 2\n"), r"not YAML"),
}


@pytest.mark.parametrize("case", sorted(GENERATED))
def test_generated_bad_spec_fails_with_its_message(case: str, tmp_path: Path) -> None:
    write, expect = GENERATED[case]
    path = tmp_path / "spec.yaml"
    write(path)
    with pytest.raises(SpecError) as err:
        load_spec(path, workdir=tmp_path / "run")
    assert re.search(expect, str(err.value)) and "\n" not in str(err.value), str(err.value)
