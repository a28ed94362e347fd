"""The qa stage end to end over a fake download folder: the rules backend, the hf backend with a scripted
generator (the real parsing and filtering path), and a tiny random GPT-2 loaded by path."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mvlp_core import contract, keys
from mvlp_core.spec import PipelineSpec
from mvlp_core.stages.qa import STAGE as QA_STAGE
from mvlp_core.stages.qa import stage as qa_stage
from mvlp_core.stages.qa.filters import filter_pairs
from mvlp_core.stages.qa.hf import HFQuestioner
from mvlp_core.stages.qa.parser import QAPair
from mvlp_core.stages.qa.prompt import FEW_SHOT, PAPER_SENTENCE, SENTENCE, few_shot, paper_prompt

SHARDS = [
    [
        "a red circle above a blue square",
        "a small green triangle",
        "two yellow stars on a white background",
        "the view from the top of the mountain",  # the rules find nothing to ask
        None,
    ],
    [
        "actor attends the premiere of the film",
        "a dog runs on the beach",
        "a red circle above a blue square",  # the same caption under another key
        "",
    ],
]
CAPTIONS = {
    keys.make_key("cc3m", shard * 10 + i): caption
    for shard, captions in enumerate(SHARDS)
    for i, caption in enumerate(captions)
}


@pytest.fixture
def download(tmp_path: Path) -> Path:
    folder = tmp_path / "download"
    folder.mkdir()
    files = {}
    for shard, captions in enumerate(SHARDS):
        rows = [shard * 10 + i for i in range(len(captions))]
        name = f"samples-{shard:05d}.parquet"
        pq.write_table(
            pa.table(
                {
                    "key": [keys.make_key("cc3m", r) for r in rows],
                    "row": pa.array(rows, pa.int64()),
                    "caption": pa.array(captions, pa.string()),
                }
            ),
            folder / name,
        )
        files[name] = {"samples": len(captions), "sha256": "", "bytes": 0}
    n = len(CAPTIONS)
    contract.Manifest("download", "fp-download", files, n, n, {}, 0.0, len(SHARDS)).save(folder)
    return folder


def make_spec(qa: dict) -> PipelineSpec:
    return PipelineSpec.model_validate(
        {"name": "t", "dataset": {"ref": "synthetic"}, "languages": ["de"], "qa": qa}
    )


def read_output(out: Path) -> list[dict]:
    return pa.concat_tables([pq.read_table(out / f"{s:05d}.parquet") for s in range(len(SHARDS))]).to_pylist()


def assert_every_sample_accounted_for(out: Path, m: contract.Manifest) -> list[dict]:
    rows = read_output(out)
    rejects = contract.read_rejects(out).to_pylist()
    answered = {r["key"] for r in rows}
    rejected = [r["key"] for r in rejects]
    assert answered.isdisjoint(rejected) and len(rejected) == len(set(rejected))
    assert answered | set(rejected) == set(CAPTIONS)
    assert (m.samples_in, m.samples_out, sum(m.rejects.values())) == (
        len(CAPTIONS),
        len(answered),
        len(rejected),
    )
    assert m.extra["pairs"] == len(rows)
    for row in rows:  # output pairs pass the filters unchanged
        pair = QAPair(row["question"], row["answer"])
        assert filter_pairs(CAPTIONS[row["key"]], [pair]).kept == [pair]
    return rows


def test_rules_backend(tmp_path, download):
    spec = make_spec({"backend": "rules", "pairs_per_caption": 2})
    out = tmp_path / "qa"
    m = QA_STAGE.run(spec, {"download": download}, out)

    rows = assert_every_sample_accounted_for(out, m)
    assert m.samples_out == 6 and m.rejects == {"no_candidates": 3}
    assert m.extra["generator"] == "rules" and m.extra["filtered"] == {}
    assert {r["generator"] for r in rows} == {"rules"}
    first = [(r["question"], r["answer"]) for r in rows if r["key"] == keys.make_key("cc3m", 0)]
    assert first == [
        ("What is above the blue square?", "a red circle"),
        ("Where is the red circle?", "above a blue square"),
    ]
    per_key = {k: sum(r["key"] == k for r in rows) for k in {r["key"] for r in rows}}
    assert max(per_key.values()) == 2 and m.extra["pairs"] == 12
    details = {r["key"]: r["detail"] for r in contract.read_rejects(out).to_pylist()}
    assert details == {
        keys.make_key("cc3m", 3): "rules produced no pair",
        keys.make_key("cc3m", 4): "empty caption",
        keys.make_key("cc3m", 13): "empty caption",
    }
    names = pq.read_table(out / "00000.parquet").schema.names
    assert names == ["key", "question", "answer", "generator"]

    mtime = (out / "_manifest.json").stat().st_mtime_ns
    assert QA_STAGE.run(spec, {"download": download}, out).fingerprint == m.fingerprint
    assert (out / "_manifest.json").stat().st_mtime_ns == mtime  # complete: nothing redone
    unused = make_spec(
        {
            "backend": "rules",
            "pairs_per_caption": 2,
            "hf": {"model": "/elsewhere"},
            "http": {"base_url": "http://x/v1", "model": "m"},
            "vllm": {"model": "m"},
            "max_output_chars": 99,
            "checkpoint_every": 3,
            "prompt": "fewshot",
        }
    )
    assert QA_STAGE.run(unused, {"download": download}, out).fingerprint == m.fingerprint
    assert QA_STAGE.run(spec, {"download": download}, out, force=True).created >= m.created
    assert (out / "_manifest.json").stat().st_mtime_ns != mtime
    one = QA_STAGE.run(make_spec({"backend": "rules"}), {"download": download}, out)  # UniGen: 1 pair
    assert one.fingerprint != m.fingerprint and one.extra["pairs"] == one.samples_out == 6


SCRIPT = {
    # What a reasonable LLM writes after the prompt's final "Q:", warts and all.
    "a red circle above a blue square": (
        " What is above the blue square?\nA: a red circle\nQ: Is the circle red?\nA: yes\n"
        "Q: What color is the square?\nA: Blue.\n\nSentence: a cat on a mat\nQ: What is on the mat?"
        "\nA: a cat"
    ),
    "a small green triangle": " Is the triangle green?\nA: Yes\nQ: Is it small?\nA: yes, it is",
    "two yellow stars on a white background": (
        " How many stars are there?\nA: 2\nQ: What color are the stars?\nA: gold\n"
        "Q: Where are the stars?\nA: on a white background"
    ),
    "the view from the top of the mountain": "sorry, I cannot help with that",
    "actor attends the premiere of the film": (
        "\n1. **Q:** Who attends the premiere?\n   **A:** actor\n"
        "2. **Q:** What does the actor attend?\n   **A:** the premiere of the film\n"
        "3. **Q:** Who attends the premiere?\n   **A:** actor"
    ),
    "a dog runs on the beach": " What runs on the beach\nA: a dog\nQ: Where does it run?\nA:",
}


def scripted(prompts: list[str]) -> list[str]:
    captions = [p.rsplit(f"{SENTENCE} ", 1)[1].split("\n", 1)[0] for p in prompts]
    assert all(p.startswith(few_shot(3)) for p in prompts)
    return [SCRIPT[c] for c in captions]


def test_hf_backend_parses_and_filters_model_text(tmp_path, download, monkeypatch):
    qa = {"backend": "hf", "pairs_per_caption": 3, "prompt": "fewshot", "hf": {"model": "org/llm"}}
    spec = make_spec(qa)
    monkeypatch.setattr(
        qa_stage, "make_backend", lambda s: HFQuestioner(s.qa.hf, qa_stage.qa_prompt(s), generate=scripted)
    )
    out = tmp_path / "qa"
    m = QA_STAGE.run(spec, {"download": download}, out)

    rows = assert_every_sample_accounted_for(out, m)
    assert m.extra["generator"] == "hf:org/llm" and {r["generator"] for r in rows} == {"hf:org/llm"}
    pairs = {(r["key"][-2:], r["question"], r["answer"]) for r in rows}
    assert pairs == {
        ("00", "What is above the blue square?", "a red circle"),
        ("00", "What color is the square?", "blue"),
        ("12", "What is above the blue square?", "a red circle"),
        ("12", "What color is the square?", "blue"),
        ("02", "Where are the stars?", "on a white background"),
        ("10", "Who attends the premiere?", "actor"),
        ("10", "What does the actor attend?", "the premiere of the film"),
    }
    assert m.extra["filtered"] == {
        "yes_no_answer": 4,  # the first caption is asked twice (two keys), so counts twice
        "answer_not_in_caption": 2,
        "duplicate": 1,
        "bad_question": 1,
        "empty_answer": 1,
    }
    rejects = {r["key"][-2:]: r for r in contract.read_rejects(out).to_pylist()}
    assert {k: r["reason"] for k, r in rejects.items()} == {
        "01": "yes_no_answer",
        "03": "no_candidates",
        "04": "no_candidates",
        "11": "bad_question",  # tie with empty_answer: the first filtered reason wins
        "13": "no_candidates",
    }
    assert rejects["01"]["detail"].startswith("yes_no_answer=2; e.g. 'Is the triangle green?'")


PAPER_SCRIPT = {
    # What a model writes after UniGen's prompt ends in "<question>": the pattern on one line, and
    # sometimes on into the next sentence's example (its stop string cuts that off in a real run).
    "a red circle above a blue square": " What is above the blue square? <answer> a red circle.",
    "a small green triangle": " Is the triangle green? <answer> yes.",
    "two yellow stars on a white background": (
        " Where are the stars? <answer> on a white background. <sentence> a dog on a mat <question> "
        "What is on the mat? <answer> a dog."
    ),
    "the view from the top of the mountain": " What is it? <answer> a castle.",
    "actor attends the premiere of the film": "<question> Who attends the premiere? <answer> actor",
    "a dog runs on the beach": " Where does the dog run? <answer>",
}


def test_hf_backend_with_unigens_prompt(tmp_path, download, monkeypatch):
    def scripted_paper(prompts: list[str]) -> list[str]:
        assert all(
            p == paper_prompt(p.rsplit(f"{PAPER_SENTENCE} ", 1)[1][: -len(" <question>")]) for p in prompts
        )
        return [PAPER_SCRIPT[p.rsplit(f"{PAPER_SENTENCE} ", 1)[1][: -len(" <question>")]] for p in prompts]

    spec = make_spec({"backend": "hf", "hf": {"model": "org/llm"}})  # qa.prompt: paper, one pair
    monkeypatch.setattr(
        qa_stage,
        "make_backend",
        lambda s: HFQuestioner(s.qa.hf, qa_stage.qa_prompt(s), generate=scripted_paper),
    )
    out = tmp_path / "qa"
    m = QA_STAGE.run(spec, {"download": download}, out)

    rows = assert_every_sample_accounted_for(out, m)
    assert {(r["key"][-2:], r["question"], r["answer"]) for r in rows} == {
        ("00", "What is above the blue square?", "a red circle"),
        ("12", "What is above the blue square?", "a red circle"),
        ("02", "Where are the stars?", "on a white background"),  # the next sentence's pair is not read
        ("10", "Who attends the premiere?", "actor"),  # the cue written again parses the same
    }
    rejects = {r["key"][-2:]: r["reason"] for r in contract.read_rejects(out).to_pylist()}
    assert rejects == {
        "01": "yes_no_answer",  # the prompt says no yes/no answers; the filter holds it
        "03": "answer_not_in_caption",  # "a castle": an illusion
        "04": "no_candidates",  # no caption
        "11": "empty_answer",
        "13": "no_candidates",
    }
    assert m.extra["filtered"] == {"yes_no_answer": 1, "answer_not_in_caption": 1, "empty_answer": 1}


def build_tiny_gpt2(folder: Path) -> None:
    """A random 2-layer GPT-2 with a byte-level BPE tokenizer trained here on the prompt's text."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator([FEW_SHOT, paper_prompt(""), *(c for c in CAPTIONS.values() if c)], trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<pad>")
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_layer=2,
        n_embd=32,
        n_head=2,
        n_positions=1024,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    tokenizer.save_pretrained(folder)
    GPT2LMHeadModel(config).save_pretrained(folder)


def test_hf_backend_with_tiny_gpt2_by_path(tmp_path, download):
    model = tmp_path / "models" / "tiny-gpt2"
    build_tiny_gpt2(model)
    hf = {"model": str(model), "batch_size": 3, "max_new_tokens": 12}
    spec = make_spec({"backend": "hf", "hf": hf})
    out = tmp_path / "qa"
    m = QA_STAGE.run(spec, {"download": download}, out)

    assert_every_sample_accounted_for(out, m)
    assert m.extra["generator"] == f"hf:{model}"
    reasons = set(m.rejects) | set(m.extra["filtered"])
    assert reasons <= {
        "no_candidates",
        "empty_answer",
        "answer_not_in_caption",
        "yes_no_answer",
        "bad_question",
        "duplicate",
    }
    assert all(r["detail"] for r in contract.read_rejects(out).to_pylist())


def test_hf_model_that_does_not_load(tmp_path, download):
    missing = tmp_path / "nowhere" / "llm"
    spec = make_spec({"backend": "hf", "hf": {"model": str(missing)}})
    with pytest.raises(contract.StageError) as err:
        QA_STAGE.run(spec, {"download": download}, tmp_path / "qa")
    assert str(missing) in str(err.value) and "local checkpoint folder" in str(err.value)
    assert contract.Manifest.load(tmp_path / "qa") is None
