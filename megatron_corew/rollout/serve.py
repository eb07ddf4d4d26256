"""A small OpenAI-compatible server in front of one of our engines (tests, or one engine shared between processes).

python -m megatron_corew.rollout.serve --model-dir assets/tiny/model --port 8000
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time

from megatron_corew.rollout.base import RolloutEngine, SamplingParams

_API_FIELDS = {
    "model",
    "prompt",
    "max_tokens",
    "temperature",
    "top_p",
    "n",
    "seed",
    "logprobs",
    "stop",
    "stream",
    "echo",
    "best_of",
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "suffix",
    "user",
}


def serve_engine(
    engine: RolloutEngine,
    tokenizer=None,
    host: str = "127.0.0.1",
    port: int = 0,
    model_name: str = "model",
    strict: bool = False,
):
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
                params = SamplingParams(
                    temperature=temp if temp > 0 else 1.0,
                    top_p=float(body.get("top_p", 1.0)),
                    max_new_tokens=int(body.get("max_tokens", 16)),
                    greedy=temp <= 0,
                    seed=None if seed is None else int(seed),
                )
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
                text = tokenizer.decode(g.response_ids, skip_special_tokens=True) if tokenizer is not None else ""
                choice = {"index": j, "text": text, "finish_reason": g.finish_reason}
                if body.get("return_token_ids"):
                    choice["token_ids"] = out_ids
                if body.get("logprobs") is not None:
                    choice["logprobs"] = {"token_logprobs": list(g.logprobs[: len(out_ids)])}
                choices.append(choice)
            self._send(
                200,
                {
                    "id": f"cmpl-{time.time_ns()}",
                    "object": "text_completion",
                    "created": int(time.time()),
                    "model": model_name,
                    "choices": choices,
                    "usage": {
                        "prompt_tokens": sum(map(len, ids)),
                        "completion_tokens": sum(len(g.response_ids) for g in gens),
                    },
                },
            )

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="openai-compat-server", daemon=True).start()
    return server


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
    engine = EmbeddedEngine(
        a.model_dir,
        eos_token_ids=eos_ids(a.model_dir, tok),
        pad_token_id=tok.pad_token_id,
        max_batch_size=a.max_batch_size,
    )
    server = serve_engine(engine, tok, a.host, a.port, a.model_name or os.path.basename(os.path.abspath(a.model_dir)))
    print(f"serving {a.model_dir} at http://{server.server_address[0]}:{server.server_address[1]}/v1", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
