"""The upstream simulator: a real HTTP server speaking OpenAI's chat-completions, Anthropic's
Messages and Ollama's native chat wire formats, and the clouds' (Azure OpenAI in
`azure_format.py`, the Gemini API and Vertex AI in `gemini_format.py`, Bedrock's Converse in
`bedrock_format.py`, with their token endpoints and credential checks in `credentials.py`
and `sigv4.py`), with deterministic answers, latency, token pacing, fault injection and
request stats.

It is the gateway's embedded default upstream, the target of its tests and of its
benchmarks. Format-specific code lives in `openai_format.py` (`/v1/chat/completions`),
`anthropic_format.py` (`/v1/messages`) and `ollama_format.py` (`/api/chat`), each behind
the `wire.WireFormat` protocol; answer planning (`planner.py`), faults (`faults.py`), stats
(`stats.py`), response writing and pacing (`responses.py`), the control API (`control.py`)
and the server (`app.py`) are shared, so latency and fault controls apply to every format
(a fault rule's `path` picks one). The Anthropic and Ollama formats turn their request
into the planner's (OpenAI-shaped) input first, so one conversation gets the same answer,
and the same token counts, in every format.

Wire format references: see each format module's docstring; for OpenAI:
https://platform.openai.com/docs/api-reference/chat/create,
https://platform.openai.com/docs/api-reference/chat/object,
https://platform.openai.com/docs/api-reference/chat/streaming,
https://platform.openai.com/docs/guides/error-codes.

Deterministic answers (`plan_reply(request_json) -> ReplyPlan`)
----------------------------------------------------------------
- A token is one whitespace-separated word.
  prompt_tokens = Σ over messages (3 + words(content) + words(arguments of each of its
  tool_calls)) + Σ over tools words(json.dumps(tool)) (Python's default `", "`/`": "`
  separators). A list `content` counts its `text` parts joined by spaces.
  completion_tokens = words of the answer text; for a tool call, words(name) +
  words(arguments) (compact JSON, so usually 2).
- Last message `user` starting with `/tokens N`: exactly N words (at most 100,000) from a
  fixed 64-word vocabulary, picked by a 64-bit LCG seeded with BLAKE2b-8 of the message text.
  Otherwise: `You said: ` + the content of the last `user` message.
- Last message `tool`: `Tool result received: ` + its content.
- `tools` given, `tool_choice` not `"none"` and last message `user`: one tool call
  (finish_reason `tool_calls`) to the function `tool_choice` names, else the first tool; id
  `call_` + 24 hex digits of BLAKE2b(name, arguments, user text); arguments built from the
  schema's `properties`: string → the word after the property name in the user text
  (`city Paris`, `city: Paris`, `city=Paris`) or `"value"`, number/integer → 1,
  boolean → true, anything else → null; serialised compactly. Stop and max_tokens do not
  apply to tool calls.
- `stop` (string or list): the text is cut before the earliest occurrence of any stop
  sequence (finish_reason `stop`). Then `max_completion_tokens` (or `max_tokens`): more
  words than that → the first that many words, finish_reason `length`. Else `stop`.
- `seed`, `temperature`, `n` and the rest are accepted and ignored (one choice, always).
- Rejected with 400 in OpenAI's error shape: a body that is not a JSON object, missing
  `model`, missing/empty/non-list `messages`, an unknown role, temperature outside 0..2,
  max_tokens < 1, a malformed `stop` or `tools`, `tool_choice` without `tools`, and
  `max_tokens` (not `max_completion_tokens`) for a reasoning model (`o1`, `o3`, `o4`,
  `gpt-5` names).
- Streaming: a role chunk (`{"role": "assistant", "content": "", "refusal": null}`), one
  chunk per word with its following whitespace (the deltas concatenate to the unary text),
  a finish chunk with an empty delta, with `stream_options.include_usage` a usage chunk with
  `"choices": []` (and `"usage": null` on the others), then `data: [DONE]`. A tool call
  streams a first delta with role, id, type, name and empty arguments, then the arguments
  in pieces of 8 characters.

Other behaviour: `SimulatorConfig.latency_ms` delays the first byte; `tokens_per_second`
paces token events (the first token goes out with the role chunk); `api_key` requires
`Authorization: Bearer <key>` (OpenAI, Ollama) or `x-api-key: <key>` (Anthropic, which
also always requires `anthropic-version`), 401 otherwise; `unknown_models` answer 404 in
each format's error shape. Fault kinds: see `faults.py`; control API: see `control.py`.

Measured speed (2 cores shared with the load tool, Python 3.11, aiohttp 3.14, uvloop, the
CLI's defaults; zero latency):
- unary, `wrk -t2 -c32 -d10s` with a Lua POST script: 13.8-13.9k RPS with one process
  (p50 2.3 ms at c=32; p50 0.16 ms at c=1), 24.8k RPS with `--workers 2`;
- streams (include_usage, aiohttp client, c=32): 3.4k streams/s of 50 tokens, 1.3k
  streams/s of 200 tokens (~260k events/s); the Python client is the limit there.
For comparison a starlette+uvicorn mock measured ~16.9k RPS on this kind of machine.
With `--workers N` every process keeps its own stats and faults (see `control.py`).
"""

from __future__ import annotations

from .app import Simulator
from .config import SimulatorConfig
from .faults import FaultBook, FaultRule
from .planner import ReplyPlan, ToolCall, plan_reply
from .stats import Disconnect, ReceivedRequest, SimulatorStats
from .wire import ApiError

__all__ = [
    "ApiError",
    "Disconnect",
    "FaultBook",
    "FaultRule",
    "ReceivedRequest",
    "ReplyPlan",
    "Simulator",
    "SimulatorConfig",
    "SimulatorStats",
    "ToolCall",
    "plan_reply",
]
