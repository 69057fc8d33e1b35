"""`camelid serve`: an OpenAI-compatible HTTP server for one model.

Endpoints: `GET /v1/models`, `POST /v1/completions` (text or token-id prompts, `echo`, `logprobs`),
`POST /v1/chat/completions` (the model's own chat template), both with `stream` (server-sent events) and
`n`; vLLM's `POST /tokenize`, `POST /detokenize` and `GET /tokenizer_info`, which lm-eval-harness's
`local-completions` model uses; and `GET /health`. Errors are OpenAI's JSON error object with a 4xx status.

Requests are served one at a time (a lock around the model); the choices and prompts of one request run as
one batch. Standard library HTTP server, no extra dependencies.
"""

from camelid.lazy import lazy_exports

_HOME = {"Engine": "engine", "Limits": "limits", "make_server": "server"}
__getattr__ = lazy_exports(__name__, _HOME)
__all__ = sorted(_HOME)
