"""The `http` questioner: an OpenAI-compatible endpoint (a vLLM or llama.cpp server, a hosted API).

`chat` mode sends the prompt's worked examples as conversation turns; `completion` mode sends the
raw prompt ending in its cue ("<question>" or "Q:", put back before parsing). Requests for one batch run on a small
thread pool; the client's rate limit and retries are shared by all threads. A caption whose request
still fails after the retries stops the run (EndpointError names the URL and the fix); batches
finished before are saved by the stage, so the re-run continues where this one stopped.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor, wait

from mvlp_core.openai_http import EndpointConfig, OpenAIClient
from mvlp_core.spec import HTTPQASpec
from mvlp_core.stages.qa.prompt import PAPER, QAPrompt


def endpoint_config(spec: HTTPQASpec) -> EndpointConfig:
    return EndpointConfig.from_spec(spec, "qa.http", temperature=spec.temperature, max_tokens=spec.max_tokens)


class HTTPQuestioner:
    def __init__(
        self, spec: HTTPQASpec, prompt: QAPrompt = PAPER, client: OpenAIClient | None = None
    ) -> None:
        self.spec = spec
        self.prompt = prompt
        self.generator = f"http:{spec.model}"
        self.prefix = prompt.cue if spec.mode == "completion" else ""
        self._client = client

    def load(self) -> None:
        """Build the client (reads the key variable) and check the server answers, once."""
        if self._client is None:
            self._client = OpenAIClient(endpoint_config(self.spec))
        self._client.models()

    def _one(self, caption: str) -> str:
        if self.spec.mode == "chat":
            return self._client.chat(self.prompt.messages(caption), stop=self.prompt.stop)
        return self._client.complete(self.prompt.completion(caption), stop=self.prompt.stop)

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
