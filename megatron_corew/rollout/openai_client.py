"""Rollout engine for any OpenAI-compatible ``/v1/completions`` server (vLLM, SGLang, TGI, ...), a small
server that exposes one of our engines under that API, and backend selection for the offline tools.

The engine sends the prompt as token ids (``"prompt": [int, ...]``), one request per prompt (so each gets its
own seed: ``params.seed + i``), several in flight at once. Responses are taken as text (``meta["text"]``);
token ids come from the server's ``token_ids`` field when it returns one (vLLM ``return_token_ids``, our
server), else from re-tokenising the text. Connection errors, timeouts, 429 and 5xx are retried with
exponential back-off; other 4xx fail at once with the server's message. Weights cannot be pushed to an external
server: ``update_weights`` raises.

Serve a model for tests or for sharing one engine between processes::

    python -m megatron_corew.rollout.openai_client --model-dir assets/tiny/model --port 8000
"""
from __future__ import annotations

import argparse
import json
import os
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable

from megatron_corew.rollout.base import Generation, RolloutEngine, SamplingParams

__all__ = ["OpenAICompatEngine", "OpenAICompatError", "serve_engine", "add_tool_backend_args", "create_tool_engine"]

_RETRY_STATUS = {408, 429, 500, 502, 503, 504}
_EXTENSIONS = {"return_token_ids": True, "skip_special_tokens": True}  # not in the OpenAI API itself


class OpenAICompatError(RuntimeError):
    pass


class OpenAICompatEngine(RolloutEngine):
    def __init__(self, base_url: str, model: str | None = None, tokenizer=None, timeout: float = 3600.0,
                 retries: int = 3, backoff_s: float = 1.0, concurrency: int = 16, api_key: str | None = None):
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
        body = {"model": self.model, "prompt": list(map(int, prompt)), "max_tokens": params.max_new_tokens,
                "temperature": 0.0 if params.greedy else params.temperature,
                "top_p": 1.0 if params.greedy else params.top_p, "n": 1, "logprobs": 0}
        if params.seed is not None:
            body["seed"] = (int(params.seed) + i) % (2 ** 31)
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
        return Generation(prompt_ids=list(prompt), response_ids=ids, logprobs=[float(x or 0.0) for x in lps],
                          finish_reason=finish, weight_version=self.weight_version,
                          meta={"text": text, "server": self.base_url})

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]:
        if not prompts:
            return []
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(prompts))) as pool:
            return list(pool.map(lambda a: self._one(a[0], a[1], params), enumerate(prompts)))

    def update_weights(self, named_tensors: Iterable, version: int) -> None:
        raise NotImplementedError("an external OpenAI-compatible server holds its own weights; "
                                  "use the embedded or sglang backend for training")


# ---------------------------------------------------------------------------------------------------------------
# A minimal OpenAI-compatible server in front of one of our engines
# ---------------------------------------------------------------------------------------------------------------
_API_FIELDS = {"model", "prompt", "max_tokens", "temperature", "top_p", "n", "seed", "logprobs", "stop", "stream",
               "echo", "best_of", "frequency_penalty", "presence_penalty", "logit_bias", "suffix", "user"}


def serve_engine(engine: RolloutEngine, tokenizer=None, host: str = "127.0.0.1", port: int = 0,
                 model_name: str = "model", strict: bool = False):
    """Serve ``engine`` at ``http://host:port/v1/completions`` (+ ``/v1/models``, ``/health``) from a background
    thread. Returns the ``ThreadingHTTPServer`` (``.server_address`` has the port; ``.shutdown()`` stops it).
    Requests are generated one at a time (engines are not thread-safe); each carries its own seed.
    ``strict``: reject fields outside the OpenAI API with a 400, as the OpenAI service does (and then return no
    ``token_ids``)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # quiet
            pass

        def _send(self, code: int, obj: dict):
            data = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path.rstrip("/") == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": model_name, "object": "model"}]})
            elif self.path.rstrip("/") == "/health":
                self._send(200, {"status": "ok"})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self):
            if self.path.rstrip("/") != "/v1/completions":
                return self._send(404, {"error": {"message": f"no route {self.path}"}})
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                unknown = sorted(set(body) - _API_FIELDS)
                if strict and unknown:
                    raise ValueError(f"Unrecognized request argument supplied: {', '.join(unknown)}")
                prompts = body.get("prompt")
                if isinstance(prompts, str) or (isinstance(prompts, list) and prompts and isinstance(prompts[0], int)):
                    prompts = [prompts]
                if not isinstance(prompts, list) or not prompts:
                    raise ValueError("'prompt' must be a string, a list of token ids, or a list of those")
                ids = []
                for p in prompts:
                    if isinstance(p, str):
                        if tokenizer is None:
                            raise ValueError("this server takes token-id prompts only")
                        p = tokenizer(p, add_special_tokens=False)["input_ids"]
                    if not isinstance(p, list) or not p or not all(isinstance(t, int) for t in p):
                        raise ValueError("each prompt must be a non-empty list of token ids")
                    ids.append(p)
                temp = float(body.get("temperature", 1.0))
                seed = body.get("seed")
                params = SamplingParams(temperature=temp if temp > 0 else 1.0, top_p=float(body.get("top_p", 1.0)),
                                        max_new_tokens=int(body.get("max_tokens", 16)), greedy=temp <= 0,
                                        seed=None if seed is None else int(seed))
            except (ValueError, TypeError, json.JSONDecodeError) as e:
                return self._send(400, {"error": {"message": str(e), "type": "invalid_request_error"}})
            try:
                with lock:
                    gens = engine.generate(ids, params)
            except Exception as e:  # noqa: BLE001
                return self._send(500, {"error": {"message": f"{type(e).__name__}: {e}"}})
            choices = []
            for j, g in enumerate(gens):
                out_ids = list(g.response_ids)  # as our engines report them (a final EOS included)
                text = (tokenizer.decode(g.response_ids, skip_special_tokens=True) if tokenizer is not None
                        else "")
                choice = {"index": j, "text": text, "finish_reason": g.finish_reason}
                if body.get("return_token_ids"):
                    choice["token_ids"] = out_ids
                if body.get("logprobs") is not None:
                    choice["logprobs"] = {"token_logprobs": list(g.logprobs[:len(out_ids)])}
                choices.append(choice)
            self._send(200, {"id": f"cmpl-{time.time_ns()}", "object": "text_completion", "created": int(time.time()),
                             "model": model_name, "choices": choices,
                             "usage": {"prompt_tokens": sum(map(len, ids)),
                                       "completion_tokens": sum(len(g.response_ids) for g in gens)}})

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="openai-compat-server", daemon=True).start()
    return server


# ---------------------------------------------------------------------------------------------------------------
# Backend selection for the offline tools (evaluate.py, rewrite_questions.py)
# ---------------------------------------------------------------------------------------------------------------
def add_tool_backend_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The training backends' flags (``--rollout-backend {embedded,sglang}``, ``--sglang-*``) plus
    ``--openai-url`` for any OpenAI-compatible server (takes precedence when given)."""
    from megatron_corew.rollout.factory import add_rollout_args

    add_rollout_args(parser)
    g = parser.add_argument_group("OpenAI-compatible server (instead of --rollout-backend)")
    g.add_argument("--openai-url", default=None, help="base URL of a /v1/completions server, e.g. http://host:8000")
    g.add_argument("--openai-model", default=None, help="model name to request (default: the first of /v1/models)")
    g.add_argument("--openai-timeout", type=float, default=3600.0, help="seconds per request")
    g.add_argument("--openai-retries", type=int, default=3)
    g.add_argument("--openai-concurrency", type=int, default=16, help="requests in flight")
    g.add_argument("--openai-api-key-env", default="OPENAI_API_KEY",
                   help="environment variable holding the server's API key, if it needs one")
    parser.add_argument("--rollout-batch-size", type=int, default=64, help="sequences per embedded-engine forward")
    return parser


def _sigterm_to_exit(signum, frame):
    raise SystemExit(128 + signum)  # `finally` blocks run: temp files go, the engines shut down


def parse_tool_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Start-up shared by the offline tools: parse (``--sglang-X`` pass-through split off first), log to stderr,
    and turn SIGTERM into SystemExit so a killed tool cleans up like an interrupted one."""
    import logging
    import signal

    from megatron_corew.rollout.factory import split_sglang_passthrough

    argv, passthrough = split_sglang_passthrough(argv)
    args = parser.parse_args(argv)
    args.sglang_passthrough = passthrough
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, _sigterm_to_exit)
    return args


def create_tool_engine(args, model_dir: str | None, tokenizer) -> RolloutEngine:
    if getattr(args, "openai_url", None):
        return OpenAICompatEngine(args.openai_url, model=args.openai_model, tokenizer=tokenizer,
                                  timeout=args.openai_timeout, retries=args.openai_retries,
                                  concurrency=args.openai_concurrency,
                                  api_key=os.environ.get(args.openai_api_key_env or "") or None)
    if model_dir is None:
        raise ValueError("a model directory is needed unless --openai-url is given")
    from megatron_corew.rollout.factory import create_engine

    return create_engine(args, model_dir, tokenizer, "policy")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Serve an HF model (embedded engine) as an OpenAI-compatible API")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--model-name", default=None)
    p.add_argument("--max-batch-size", type=int, default=64)
    a = p.parse_args(argv)
    from transformers import AutoTokenizer

    from megatron_corew.rollout.embedded import EmbeddedEngine
    from megatron_corew.rollout.factory import eos_ids

    tok = AutoTokenizer.from_pretrained(a.model_dir)
    engine = EmbeddedEngine(a.model_dir, eos_token_ids=eos_ids(a.model_dir, tok), pad_token_id=tok.pad_token_id,
                            max_batch_size=a.max_batch_size)
    server = serve_engine(engine, tok, a.host, a.port, a.model_name or os.path.basename(os.path.abspath(a.model_dir)))
    print(f"serving {a.model_dir} at http://{server.server_address[0]}:{server.server_address[1]}/v1", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
