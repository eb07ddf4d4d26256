"""SGLang's native ``/generate`` call as both request paths use it (whole calls in ``engine.py``, resumable partial
requests in ``partial.py``): token ids in, never text; output ids with their log-probs out, checked to line up."""

from __future__ import annotations

from megatron_corew.rollout.sglang.http import HTTPConfig, SGLangError, http_json


def stream_seed(seed: int, k: int) -> int:
    """The ``sampling_seed`` of stream ``k`` of a call seeded ``seed``: the prompt's index in the call, or the
    tokens a resumed partial request already holds (its continuation draws a stream of its own)."""
    return int(seed * 1000003 + k) % (2**63)


def post_generate(http: HTTPConfig, url: str, input_ids, sampling_params) -> dict | list:
    """One ``/generate`` call (``input_ids``: one prompt or a list; ``sampling_params`` likewise) with log-probs of
    the output tokens, under the request timeout and retries of ``http``."""
    payload = {
        "input_ids": input_ids,
        "sampling_params": sampling_params,
        "return_logprob": True,
        "logprob_start_len": -1,
        "stream": False,
    }
    return http_json(
        "POST",
        url + "/generate",
        payload,
        timeout=http.request_timeout,
        connect_timeout=http.connect_timeout,
        retries=http.retries,
        backoff=http.backoff,
    )


def read_answer(answer: dict, url: str) -> tuple[list[int], list[float], str, dict]:
    """(output ids, their log-probs, the finish type, ``meta_info``) of one prompt's answer; a log-prob list that
    does not line up with the output ids fails the call."""
    meta = answer.get("meta_info", {})
    fr = meta.get("finish_reason") or {}
    ftype = fr.get("type") if isinstance(fr, dict) else str(fr)
    ids = [int(t) for t in answer.get("output_ids", [])]
    lps = meta.get("output_token_logprobs") or []
    if len(lps) != len(ids) or any(int(x[1]) != t for x, t in zip(lps, ids)):
        raise SGLangError(
            f"{url}: output_token_logprobs do not line up with output_ids ({len(lps)} vs {len(ids)} tokens)"
        )
    return ids, [float(x[0]) for x in lps], ftype, meta
