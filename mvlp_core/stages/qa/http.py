"""The `http` questioner: an OpenAI-compatible endpoint (a vLLM or llama.cpp server, a hosted API).

`chat` mode sends the few-shot examples as conversation turns; `completion` mode sends the raw
few-shot prompt ending in "Q:" (put back before parsing). Requests for one batch run on a small
thread pool; the client's rate limit and retries are shared by all threads. A caption whose request
still fails after the retries stops the run (EndpointError names the URL and the fix); batches
finished before are saved by the stage, so the re-run continues where this one stopped.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor, wait

from mvlp_core.openai_http import EndpointConfig, OpenAIClient
from mvlp_core.spec import HTTPQASpec
from mvlp_core.stages.qa.prompt import CUE, SENTENCE, build_messages, build_prompt

STOP = [f"\n{SENTENCE}", f"\n\n{SENTENCE}"]


def endpoint_config(spec: HTTPQASpec) -> EndpointConfig:
    return EndpointConfig.from_spec(spec, "qa.http", temperature=spec.temperature, max_tokens=spec.max_tokens)


class HTTPQuestioner:
    def __init__(self, spec: HTTPQASpec, pairs: int = 1, client: OpenAIClient | None = None) -> None:
        self.spec = spec
        self.pairs = pairs
        self.generator = f"http:{spec.model}"
        self.prefix = CUE if spec.mode == "completion" else ""
        self._client = client

    def load(self) -> None:
        """Build the client (reads the key variable) and check the server answers, once."""
        if self._client is None:
            self._client = OpenAIClient(endpoint_config(self.spec))
        self._client.models()

    def _one(self, caption: str) -> str:
        if self.spec.mode == "chat":
            return self._client.chat(build_messages(caption, self.pairs), stop=STOP)
        return self._client.complete(build_prompt(caption, self.pairs), stop=STOP)

    def generate(self, captions: list[str]) -> list[str]:
        if self._client is None:
            self.load()
        pool = ThreadPoolExecutor(max_workers=min(self.spec.concurrency, max(1, len(captions))))
        futures = [pool.submit(self._one, c) for c in captions]
        try:
            done, _ = wait(futures, return_when="FIRST_EXCEPTION")
            failed = next((f for f in done if f.exception() is not None), None)
            if failed is not None:
                raise failed.exception()
            return [f.result() for f in futures]
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
