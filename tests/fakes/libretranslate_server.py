"""A local server speaking the LibreTranslate API (`GET /languages`, `POST /translate`).

It is the fake OpenAI server with other routes: the same fault injection (`inject`, `fault_for`)
and request recording; `respond("libretranslate", body)` gives the translation of `body["q"]`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.openai_server import FakeOpenAI


@dataclass
class FakeLibreTranslate(FakeOpenAI):
    targets: list[str] = field(default_factory=lambda: ["de", "fr", "zh-Hans"])

    def __post_init__(self) -> None:
        super().__post_init__()
        fake = self

        class Handler(self._server.RequestHandlerClass):
            def _answer(self, method: str, body: dict[str, Any] | None) -> None:
                path = self.path.split("?")[0]
                if path == "/languages":
                    langs = [{"code": "en", "name": "English", "targets": fake.targets}]
                    langs += [{"code": c, "name": c, "targets": ["en"]} for c in fake.targets]
                    self._send(200, json.dumps(langs).encode())
                elif method == "POST" and path == "/translate":
                    text = fake.respond("libretranslate", body or {})
                    self._send(200, json.dumps({"translatedText": text}).encode())
                else:
                    self._send(404, json.dumps({"error": f"no route {method} {path}"}).encode())

        self._server.RequestHandlerClass = Handler

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def translations(self) -> list[Any]:
        with self._lock:
            return [r for r in self.requests if r.path == "/translate"]
