"""The least a gRPC-to-HTTP gateway can cost here: grpc.aio + the gateway's OpenAI adapter.

`python -m bench.forwarder --listen 127.0.0.1:PORT --upstream http://127.0.0.1:SIM`
answers `ChatCompletion` and `StreamChatCompletion` by handing the request straight to
`OpenAIProvider.complete` / `.stream` (request JSON, the `h1` pooled client, response
translation) with nothing around it: no
interceptors, auth, limits, validation, routing, retries, breakers or telemetry. Its RPS
is the ceiling any gateway built from these parts reaches on this machine, so the report
can say how much of the distance to the bare echo server is the forwarding itself and
how much is the gateway's pipeline.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc

from ai_service.config import ProviderSettings
from ai_service.providers.base import Deployment
from ai_service.providers.openai import OpenAIProvider
from ai_service_protos import ai_service_pb2 as pb
from ai_service_protos import ai_service_pb2_grpc as pb_grpc
from bench.echo import serve
from bench.stack import UPSTREAM_MODEL


class ForwardingService(pb_grpc.AIServiceServicer):  # type: ignore[misc]
    def __init__(self, upstream: str) -> None:
        settings = ProviderSettings(name="simulator", base_url=f"{upstream}/v1")
        self._provider = OpenAIProvider(settings)
        self._deployment = Deployment("simulator", UPSTREAM_MODEL)

    async def ChatCompletion(
        self, request: pb.ChatCompletionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ChatCompletionResponse:
        return await self._provider.complete(request, self._deployment)

    async def StreamChatCompletion(
        self, request: pb.ChatCompletionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.ChatCompletionChunk]:
        async with contextlib.aclosing(self._provider.stream(request, self._deployment)) as chunks:
            async for chunk in chunks:
                yield chunk


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.forwarder", description=__doc__.split("\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:50062")
    parser.add_argument("--upstream", required=True, help="the simulator's origin")
    args = parser.parse_args()
    import uvloop

    uvloop.run(serve(ForwardingService(args.upstream), args.listen))


if __name__ == "__main__":
    main()
