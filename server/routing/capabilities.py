"""What a request needs of a model, and what each model has: the content capabilities.

A model's capabilities are what its configuration allows (`models[].capabilities`)
within what its provider's API can carry (`Provider.carries`). A request needs a
capability for each kind of content it holds (an image part needs `vision`, a
reasoning setting `reasoning`, a cache mark `prompt_caching`, ...). The router keeps
only deployments that have what a call needs; when none does, the call is refused
INVALID_ARGUMENT naming the first field that needs the missing capability. Nothing
is ever dropped on the way to a model that lacks it.
"""

from __future__ import annotations

from collections.abc import Mapping

from ai_service.config import ModelSettings
from ai_service.errors import InvalidRequest, quoted
from ai_service.providers import CAPABILITIES
from ai_service.providers.content import cache_marks, reasoning_on
from ai_service_protos.ai_service_pb2 import ChatCompletionRequest, ModelCapabilities

#: The capability each media part kind needs.
_PART_NEEDS = {"image": "vision", "document": "documents", "audio": "audio_input"}
#: How a refusal names what the model does not take.
_WHAT = {
    "vision": "images",
    "documents": "documents",
    "audio_input": "audio",
    "reasoning": "reasoning",
    "tools": "tools",
    "prompt_caching": "cache-control marks (it has no prompt caching)",
    "embeddings": "Embed calls (it is not an embedding model)",
}
#: The capabilities a chat call may need (embeddings are the Embed call's).
CHAT_CAPABILITIES = tuple(name for name in CAPABILITIES if name != "embeddings")

Capabilities = Mapping[str, bool]


def capabilities_of(model: ModelSettings, carries: frozenset[str]) -> dict[str, bool]:
    """The model's capabilities on a provider whose API carries `carries`."""
    configured = model.capabilities
    return {name: name in carries and configured.allows(name) for name in CAPABILITIES}


def needs_of(request: ChatCompletionRequest) -> dict[str, str]:
    """Each capability the request needs → the first field that needs it."""
    needs: dict[str, str] = {}
    for i, message in enumerate(request.messages):
        for j, part in enumerate(message.parts):
            kind = part.WhichOneof("kind")
            need = _PART_NEEDS.get(kind or "")
            if need is not None and need not in needs:
                needs[need] = f"messages[{i}].parts[{j}].{kind}"
    if request.tools:
        needs["tools"] = "tools"
    if reasoning_on(request):
        needs["reasoning"] = "reasoning"
    mark = next(cache_marks(request), None)
    if mark is not None:
        needs["prompt_caching"] = mark
    return needs


def refusal(
    needs: Mapping[str, str], capabilities: Capabilities, model: str
) -> InvalidRequest | None:
    """Why a model with `capabilities` cannot take a request with `needs` (None: it can)."""
    for name, field in needs.items():
        if not capabilities[name]:
            return InvalidRequest(field, f"model {quoted(model)} does not take {_WHAT[name]}")
    return None


def as_proto(capabilities: Capabilities, model: ModelSettings) -> ModelCapabilities:
    return ModelCapabilities(
        **{name: capabilities[name] for name in CAPABILITIES},
        context_window=model.capabilities.context_window or 0,
        max_output_tokens=model.max_output_tokens or 0,
    )
