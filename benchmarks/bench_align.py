"""The align machinery vs the raw `eflomal-align` CLI: time on Multi30K en–de, AER on the real
gold sets (en-fr Hansards with Multi30K en–fr appended, ro-en, en-hi).

Both sides get byte-identical tokenized input files (gold sets are pre-tokenized; Multi30K is
tokenized once with mvlp's tokenizers) and both lowercase (eflomal's reader does), so the AER
difference is what the machinery adds on top of eflomal: grow-diag-final-and symmetrization
of its two directions. The raw baseline is the better of the CLI's forward and reverse links
(by median AER). eflomal seeds itself from /dev/urandom: figures are medians over `runs`.
"""

from __future__ import annotations

import gzip
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from itertools import islice
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
if not DATA.exists():
    DATA = Path("/work/shared/data")
GOLD = DATA / "alignment-gold"

Sentences = Sequence[Sequence[str]]


def eflomal_cli() -> str:
    beside = Path(sys.executable).parent / "eflomal-align"
    found = str(beside) if beside.exists() else shutil.which("eflomal-align")
    if not found:
        raise RuntimeError("eflomal-align not found beside the interpreter or on PATH")
    return found


def raw_cli(source: Sentences, target: Sentences) -> tuple[list[set], list[set]]:
    """Forward and reverse links of `eflomal-align -s -t -f -r` on these tokenized sentences."""
    with tempfile.TemporaryDirectory(prefix="mvlp-bench-") as tmp:
        paths = {name: Path(tmp) / name for name in ("src", "tgt", "fwd", "rev")}
        paths["src"].write_text("".join(" ".join(s) + "\n" for s in source), encoding="utf-8")
        paths["tgt"].write_text("".join(" ".join(t) + "\n" for t in target), encoding="utf-8")
        subprocess.run(
            [
                eflomal_cli(),
                "-s",
                str(paths["src"]),
                "-t",
                str(paths["tgt"]),
                "-f",
                str(paths["fwd"]),
                "-r",
                str(paths["rev"]),
            ],
            check=True,
        )
        return tuple(  # type: ignore[return-value]
            [
                {tuple(map(int, item.split("-"))) for item in line.split()}
                for line in paths[d].read_text(encoding="utf-8").splitlines()
            ]
            for d in ("fwd", "rev")
        )


def multi30k(lang: str, n: int | None = None) -> tuple[list[list[str]], list[list[str]]]:
    """Multi30K train en–lang, tokenized with mvlp's tokenizers."""
    from mvlp_core.stages.align.tokenize import tokenize

    with (
        gzip.open(DATA / "multi30k" / "train.en.gz", "rt", encoding="utf-8") as en,
        gzip.open(DATA / "multi30k" / f"train.{lang}.gz", "rt", encoding="utf-8") as xx,
    ):
        pairs = [
            ([w for w, _, _ in tokenize(e, "en")], [w for w, _, _ in tokenize(x, lang)])
            for e, x in islice(zip(en, xx), n)
        ]
    return [s for s, _ in pairs], [t for _, t in pairs]


def gold_set(name: str, context_lines: int | None = None):
    """(source, target, gold (sure, possible) per pair, context source, context target)."""
    from mvlp_core.stages.align import textfiles

    if name == "en-fr":
        src, tgt = textfiles.read_joint(GOLD / "en-fr" / "enfr.src-tgt")
        gold = textfiles.read_gold(GOLD / "en-fr" / "enfr.gold", one_based=True)
        context = multi30k("fr", context_lines)
    elif name == "ro-en":
        src, tgt = textfiles.read_joint(GOLD / "ro-en" / "roen.src-tgt")
        gold = textfiles.read_gold(GOLD / "ro-en" / "roen.gold", one_based=True)
        context = ([], [])
    elif name == "en-hi":
        d = GOLD / "en-hi"
        src, tgt = textfiles.read_lines(d / "test.eng", "wpt"), textfiles.read_lines(d / "test.hin", "wpt")
        gold = textfiles.read_gold(d / "test.eng.hin.wa", "wpt", sentences=d / "test.eng")
        context = (
            [s.split() for s in textfiles.read_lines(d / "trial.eng", "wpt")],
            [t.split() for t in textfiles.read_lines(d / "trial.hin", "wpt")],
        )
    else:
        raise ValueError(f"unknown gold set {name!r}")
    return [s.split() for s in src], [t.split() for t in tgt], gold, *context


def compare_aer(name: str, context_lines: int | None = None) -> dict[str, float]:
    """One run of ours and of the raw CLI on one gold set: AER of each."""
    from mvlp_core.stages.align.aer import score
    from mvlp_core.stages.align.textfiles import align_sentences

    src, tgt, gold, ctx_src, ctx_tgt = gold_set(name, context_lines)
    ours = align_sentences(src, tgt, context=(ctx_src, ctx_tgt))
    fwd, rev = raw_cli(list(ctx_src) + src, list(ctx_tgt) + tgt)
    k = len(ctx_src)

    def aer(links) -> float:
        return score((a, s, p) for a, (s, p) in zip(links, gold)).aer

    return {"ours": aer(ours), "raw_fwd": aer(fwd[k:]), "raw_rev": aer(rev[k:])}


def _time_stage(source: Sentences, target: Sentences, raw_en: list[str], raw_de: list[str]):
    """Seconds of the align stage (tokenize + eflomal + symmetrize + write) over Multi30K en–de
    built as download/translate stage folders, and of the raw CLI on the tokenized text."""
    from mvlp_core.spec import PipelineSpec
    from mvlp_core.stages.align import STAGE
    from tests.testkit.stage_outputs import save_stage

    with tempfile.TemporaryDirectory(prefix="mvlp-bench-") as tmp:
        tmp = Path(tmp)
        keys = [f"m30k-{i:09d}" for i in range(len(raw_en))]
        captions = [{"key": k, "caption": c} for k, c in zip(keys, raw_en)]
        save_stage(tmp / "download", "download", "samples-00000.parquet", captions)
        translations = [{"key": k, "lang": "de", "text": t} for k, t in zip(keys, raw_de)]
        save_stage(tmp / "translate", "translate", "00000.parquet", translations)
        spec = PipelineSpec.model_validate(
            {
                "name": "bench",
                "workdir": str(tmp),
                "languages": ["de"],
                "dataset": {"spec": {"name": "m30k", "url_list": "x", "format": "tsv"}},
            }
        )
        started = time.perf_counter()
        manifest = STAGE.run(
            spec, {"download": tmp / "download", "translate": tmp / "translate"}, tmp / "align", force=True
        )
        ours = time.perf_counter() - started
        assert manifest.samples_out == len(raw_en), manifest
    started = time.perf_counter()
    raw_cli(source, target)
    return ours, time.perf_counter() - started


def run(runs: int = 3) -> list[dict]:
    results = []
    with gzip.open(DATA / "multi30k" / "train.en.gz", "rt", encoding="utf-8") as f:
        raw_en = [line.strip() for line in f]
    with gzip.open(DATA / "multi30k" / "train.de.gz", "rt", encoding="utf-8") as f:
        raw_de = [line.strip() for line in f]
    source, target = multi30k("de")
    timings = [_time_stage(source, target, raw_en, raw_de) for _ in range(runs)]
    ours, raw = (statistics.median(t[i] for t in timings) for i in (0, 1))
    results.append(
        {
            "name": "align_vs_eflomal",
            "value": round(ours, 2),
            "unit": "s",
            "baseline": "eflomal-align CLI (pre-tokenized files)",
            "baseline_value": round(raw, 2),
            "ratio": round(ours / raw, 3),
            "runs": runs,
            "higher_is_better": False,
            "notes": f"{len(raw_en)} pairs; ours = the align stage (tokenize, eflomal, grow-diag-final-and, "
            "parquet, dictionary), one chunk; baseline excludes tokenization",
        }
    )
    notes = {
        "en-fr": "447 Hansard gold pairs + Multi30K en-fr train (29,000) appended",
        "ro-en": "248 gold pairs alone (no larger ro-en corpus here)",
        "en-hi": "90 gold pairs + 25 trial pairs, both sides identical for both",
    }
    for name in ("en-fr", "ro-en", "en-hi"):
        aers = [compare_aer(name) for _ in range(runs)]
        med = {k: statistics.median(a[k] for a in aers) for k in aers[0]}
        best = min(("raw_fwd", "raw_rev"), key=med.get)
        results.append(
            {
                "name": f"align_aer_{name.replace('-', '_')}",
                "value": round(med["ours"], 4),
                "unit": "AER",
                "baseline": f"eflomal-align CLI {best[4:]} links",
                "baseline_value": round(med[best], 4),
                "ratio": round(med["ours"] / med[best], 3),
                "runs": runs,
                "higher_is_better": False,
                "notes": f"{notes[name]}; raw fwd {med['raw_fwd']:.4f}, rev {med['raw_rev']:.4f}; "
                "ours = grow-diag-final-and of the same eflomal run's directions",
            }
        )
    return results


if __name__ == "__main__":
    for row in run(int(sys.argv[1]) if len(sys.argv) > 1 else 1):
        print(row)
