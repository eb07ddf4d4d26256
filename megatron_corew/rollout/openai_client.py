"""Rollout engine for any OpenAI-compatible ``/v1/completions`` server (vLLM, SGLang, TGI, ...).

The engine sends the prompt as token ids (``"prompt": [int, ...]``), one request per prompt (so each gets its
own seed: ``params.seed + i``), several in flight at once. Responses are taken as text (``meta["text"]``);
token ids come from the server's ``token_ids`` field when it returns one (vLLM ``return_token_ids``, our
server), else from re-tokenising the text. Connection errors, timeouts, 429 and 5xx are retried with
exponential back-off; other 4xx fail at once with the server's message. Weights cannot be pushed to an external
server: ``update_weights`` raises.

``rollout/serve.py`` is the other side: one of our engines behind the same API.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable

from megatron_corew.rollout.base import Generation, RolloutEngine, SamplingParams

__all__ = ["OpenAICompatEngine", "OpenAICompatError"]

_RETRY_STATUS = {408, 429, 500, 502, 503, 504}
_EXTENSIONS = {"return_token_ids": True, "skip_special_tokens": True}  # not in the OpenAI API itself


class OpenAICompatError(RuntimeError):
    pass


class OpenAICompatEngine(RolloutEngine):
    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        tokenizer=None,
        timeout: float = 3600.0,
        retries: int = 3,
        backoff_s: float = 1.0,
        concurrency: int = 16,
        api_key: str | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        if self.base_url.endswith("/v1"):
            self.base_url = self.base_url[:-3]
        self.tokenizer = tokenizer
        self.timeout = timeout
        self.retries = retries
        self.backoff_s = backoff_s
        self.concurrency = max(1, concurrency)
        self.api_key = api_key
        self.weight_version = 0
        self._extensions = True
        self.model = model or self._first_model()

    # ------------------------------------------------------------------ HTTP
    def _request(self, method: str, path: str, body: dict | None = None, timeout: float | None = None) -> dict:
        url = self.base_url + path
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            req = urllib.request.Request(url, data=data, headers=headers, method=method)
            try:
                with urllib.request.urlopen(req, timeout=timeout or self.timeout) as r:
                    return json.loads(r.read().decode())
            except urllib.error.HTTPError as e:
                detail = e.read().decode(errors="replace")[:500]
                if e.code not in _RETRY_STATUS:
                    raise OpenAICompatError(f"{method} {url}: HTTP {e.code}: {detail}") from None
                last = f"HTTP {e.code}: {detail}"
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
                last = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
            except json.JSONDecodeError as e:
                last = f"invalid JSON in the response ({e})"
        raise OpenAICompatError(f"{method} {url} failed after {self.retries + 1} attempt(s): {last}")

    def _first_model(self) -> str:
        models = self._request("GET", "/v1/models", timeout=min(self.timeout, 60.0)).get("data") or []
        if not models:
            raise OpenAICompatError(f"{self.base_url}/v1/models lists no model: pass the model name")
        return models[0]["id"]

    def health(self) -> bool:
        try:
            self._request("GET", "/v1/models", timeout=10.0)
            return True
        except OpenAICompatError:
            return False

    # ------------------------------------------------------------------ RolloutEngine
    def _one(self, i: int, prompt: list[int], params: SamplingParams) -> Generation:
        body = {
            "model": self.model,
            "prompt": list(map(int, prompt)),
            "max_tokens": params.max_new_tokens,
            "temperature": 0.0 if params.greedy else params.temperature,
            "top_p": 1.0 if params.greedy else params.top_p,
            "n": 1,
            "logprobs": 0,
        }
        if params.seed is not None:
            body["seed"] = (int(params.seed) + i) % (2**31)
        if self._extensions:  # vLLM / SGLang extras; a strict server rejects them with a 400: then drop them
            try:
                resp = self._request("POST", "/v1/completions", dict(body, **_EXTENSIONS))
            except OpenAICompatError as e:
                if "HTTP 400" not in str(e) or not any(k in str(e) for k in _EXTENSIONS):
                    raise
                self._extensions = False
                resp = self._request("POST", "/v1/completions", body)
        else:
            resp = self._request("POST", "/v1/completions", body)
        try:
            choice = resp["choices"][0]
            text = choice.get("text") or ""
        except (KeyError, IndexError, TypeError) as e:
            raise OpenAICompatError(f"unexpected /v1/completions response: {str(resp)[:300]}") from e
        ids = choice.get("token_ids")
        if ids is None and self.tokenizer is not None:
            ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        ids = [int(t) for t in (ids or [])]
        lps = ((choice.get("logprobs") or {}).get("token_logprobs")) or []
        if len(lps) != len(ids):
            lps = [0.0] * len(ids)
        finish = "length" if choice.get("finish_reason") == "length" else "stop"
        return Generation(
            prompt_ids=list(prompt),
            response_ids=ids,
            logprobs=[float(x or 0.0) for x in lps],
            finish_reason=finish,
            weight_version=self.weight_version,
            meta={"text": text, "server": self.base_url},
        )

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]:
        if not prompts:
            return []
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(prompts))) as pool:
            return list(pool.map(lambda a: self._one(a[0], a[1], params), enumerate(prompts)))

    def update_weights(self, named_tensors: Iterable, version: int) -> None:
        raise NotImplementedError(
            "an external OpenAI-compatible server holds its own weights; "
            "use the embedded or sglang backend for training"
        )
