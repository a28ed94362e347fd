"""`mvlp align` and `mvlp align-eval`: word-align any parallel text files with the align stage's
machinery (tokenizers, eflomal, priors, grow-diag-final-and) and score links against gold."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from flows.errors import fail
from mvlp_core.stages.align import textfiles
from mvlp_core.stages.align.aer import score
from mvlp_core.stages.align.eflomal_runner import check_priors

console = Console(stderr=True)


def align(
    src: Annotated[Path | None, typer.Option(help="source sentences, one per line")] = None,
    tgt: Annotated[Path | None, typer.Option(help="target sentences, line-parallel")] = None,
    joint: Annotated[Path | None, typer.Option(help="instead of --src/--tgt: 'src ||| tgt' lines")] = None,
    src_lang: Annotated[str, typer.Option(help="source language (picks the tokenizer)")] = "en",
    tgt_lang: Annotated[
        str | None, typer.Option(help="target language; needed unless --pretokenized")
    ] = None,
    pretokenized: Annotated[bool, typer.Option(help="split input lines on spaces (gold sets are)")] = False,
    input_format: Annotated[str, typer.Option(help="plain, or wpt for <s snum=N>...</s> lines")] = "plain",
    corpus_src: Annotated[
        Path | None,
        typer.Option(help="extra parallel corpus aligned along (more statistics), not written"),
    ] = None,
    corpus_tgt: Annotated[Path | None, typer.Option(help="target side of --corpus-src")] = None,
    corpus_pretokenized: Annotated[
        bool, typer.Option(help="split the extra corpus on spaces instead of tokenizing it")
    ] = False,
    priors: Annotated[
        Path | None, typer.Option(help="eflomal priors file (e.g. from --save-priors on a large corpus)")
    ] = None,
    save_priors: Annotated[Path | None, typer.Option(help="write the priors this run learns here")] = None,
    model: Annotated[int, typer.Option(min=1, max=3, help="1 IBM1, 2 +HMM, 3 +fertility")] = 3,
    out: Annotated[Path | None, typer.Option(help="links file (default: stdout)")] = None,
) -> None:
    """Align parallel text files: writes 0-based `i-j` links (grow-diag-final-and) per line in
    src–tgt order; a line with an empty side gets an empty line."""
    try:
        if joint is not None:
            if src or tgt:
                fail("give either --joint or --src and --tgt")
            src_lines, tgt_lines = textfiles.read_joint(joint)
        elif src is None or tgt is None:
            fail("give --src and --tgt (or --joint)")
        else:
            src_lines = textfiles.read_lines(src, input_format)
            tgt_lines = textfiles.read_lines(tgt, input_format)
        if len(src_lines) != len(tgt_lines):
            fail(f"{len(src_lines)} source lines but {len(tgt_lines)} target lines")
        if (corpus_src is None) != (corpus_tgt is None):
            fail("give both --corpus-src and --corpus-tgt")
        if priors is not None:
            check_priors(priors)
        source = [textfiles.words(line, src_lang, pretokenized) for line in src_lines]
        target = [textfiles.words(line, tgt_lang, pretokenized) for line in tgt_lines]
        context: tuple[list[list[str]], list[list[str]]] = ([], [])
        if corpus_src is not None:
            c_src = textfiles.read_lines(corpus_src)
            c_tgt = textfiles.read_lines(corpus_tgt)
            if len(c_src) != len(c_tgt):
                fail(f"--corpus-src has {len(c_src)} lines but --corpus-tgt {len(c_tgt)}")
            context = (
                [textfiles.words(s, src_lang, corpus_pretokenized) for s in c_src],
                [textfiles.words(t, tgt_lang, corpus_pretokenized) for t in c_tgt],
            )
        links = textfiles.align_sentences(
            source, target, context=context, model=model, priors=priors, save_priors=save_priors
        )
    except (OSError, ValueError, RuntimeError) as err:
        fail(str(err))
    text = "".join(textfiles.format_links(sent) + "\n" for sent in links)
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text, encoding="utf-8")
        console.print(f"{len(links)} lines of links -> {out}")


def align_eval(
    links: Annotated[Path, typer.Option(help="predicted 0-based i-j links, one line per pair")],
    gold: Annotated[Path, typer.Option(help="gold links")],
    gold_format: Annotated[
        str, typer.Option(help="pharaoh (i-j sure, ipj possible) or wpt (snum i j [S|P])")
    ] = "pharaoh",
    gold_one_based: Annotated[bool, typer.Option(help="pharaoh gold counts words from 1")] = False,
    gold_reversed: Annotated[bool, typer.Option(help="gold's first index is the target side")] = False,
    gold_sentences: Annotated[
        Path | None, typer.Option(help="wpt: the <s snum=N> text file giving the pair order")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Precision, recall and alignment error rate (AER) of links against gold sure/possible links."""
    try:
        predicted = textfiles.read_links(links)
        reference = textfiles.read_gold(
            gold, gold_format, one_based=gold_one_based, reversed_=gold_reversed, sentences=gold_sentences
        )
    except (OSError, ValueError) as err:
        fail(str(err))
    if len(predicted) != len(reference):
        fail(f"{links} has {len(predicted)} lines but the gold has {len(reference)} pairs")
    result = score((a, s, p) for a, (s, p) in zip(predicted, reference))
    figures = {
        "pairs": len(reference),
        "precision": round(result.precision, 4),
        "recall": round(result.recall, 4),
        "aer": round(result.aer, 4),
        "predicted": result.predicted,
        "sure": result.sure,
    }
    if as_json:
        print(json.dumps(figures))
    else:
        print(" ".join(f"{k} {v}" for k, v in figures.items()))


def register(app: typer.Typer) -> None:
    app.command("align")(align)
    app.command("align-eval")(align_eval)
