"""The `hf` questioner: any causal LM, by hub name or local path, given the completion prompt.

Generation is batched and greedy with left padding (decoder-only models continue from the right
edge), and only the new tokens are decoded. Generation stops at the next sentence's marker;
the stage parses whatever the model writes, so malformed text costs candidates, never the run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from mvlp_core.contract import StageError
from mvlp_core.spec import HFQASpec
from mvlp_core.stages.qa.prompt import PAPER, QAPrompt

GenerateFn = Callable[[list[str]], list[str]]


class HFQuestioner:
    """`generate` maps prompts to continuations; by default the model's, replaceable in tests."""

    def __init__(self, spec: HFQASpec, prompt: QAPrompt = PAPER, generate: GenerateFn | None = None) -> None:
        self.spec = spec
        self.prompt = prompt
        self.prefix = prompt.cue  # the prompt ends with it; the model continues after it
        # without their leading whitespace: whether a newline token matches depends on the tokenizer
        self.stop_strings = list(dict.fromkeys(s.strip() for s in prompt.stop))
        self.generator = f"hf:{spec.model}"
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self._generate = generate
        self._tokenizer: Any = None
        self._model: Any = None

    def load(self) -> None:
        """Load model and tokenizer once, so a bad name fails before any unit runs."""
        if self._generate is not None or self._model is not None:
            return
        name = self.spec.model
        try:
            tokenizer = AutoTokenizer.from_pretrained(name)
            model = AutoModelForCausalLM.from_pretrained(name, dtype="auto")
        except Exception as err:  # any load failure is about the run, not a sample
            reason = (str(err).strip().splitlines() or [""])[0][:300]
            raise StageError(
                f"qa.hf.model: cannot load the causal LM {name!r} "
                f"({type(err).__name__}: {reason}). "
                "Give a local checkpoint folder (config.json, weights and tokenizer files), e.g. "
                "--set qa.hf.model=/models/Qwen2.5-1.5B-Instruct, or use --set qa.backend=rules; "
                "loading by name needs the Hugging Face hub or a filled HF cache"
            ) from err
        if tokenizer.pad_token is None:
            if tokenizer.eos_token is None:
                raise StageError(
                    f"qa.hf.model: the tokenizer of {name!r} has neither a pad nor an eos token, "
                    "so batches cannot be padded; add one to its tokenizer_config.json"
                )
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"
        self._tokenizer = tokenizer
        self._model = model.to(self.device).eval()
        self._generate = self._generate_with_model

    def _generate_with_model(self, prompts: list[str]) -> list[str]:
        tok, model = self._tokenizer, self._model
        out: list[str] = []
        with torch.inference_mode():
            for start in range(0, len(prompts), self.spec.batch_size):
                batch = prompts[start : start + self.spec.batch_size]
                enc = tok(batch, return_tensors="pt", padding=True).to(self.device)
                ids = model.generate(
                    **enc,
                    do_sample=False,
                    max_new_tokens=self.spec.max_new_tokens,
                    pad_token_id=tok.pad_token_id,
                    stop_strings=self.stop_strings,
                    tokenizer=tok,
                )
                new = ids[:, enc["input_ids"].shape[1] :]
                out += tok.batch_decode(new, skip_special_tokens=True)
        return out

    def generate(self, captions: list[str]) -> list[str]:
        """The model's continuation of the completion prompt for each caption."""
        self.load()
        return self._generate([self.prompt.completion(c) for c in captions])
