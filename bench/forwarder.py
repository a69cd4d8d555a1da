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
import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator

import grpc

from bench.stack import UPSTREAM_MODEL
from protos import ai_service_pb2 as pb
from protos import ai_service_pb2_grpc as pb_grpc
from server.config import ProviderSettings
from server.providers.base import Deployment
from server.providers.openai import OpenAIProvider


class ForwardingService(pb_grpc.AIServiceServicer):
    def __init__(self, upstream: str) -> None:
        settings = ProviderSettings(name="simulator", base_url=f"{upstream}/v1")
        self._provider = OpenAIProvider(settings)
        self._deployment = Deployment("simulator", UPSTREAM_MODEL)

    async def ChatCompletion(
        self, request: pb.ChatCompletionRequest, context: grpc.aio.ServicerContext
    ) -> pb.ChatCompletionResponse:
        return await self._provider.complete(request, self._deployment)

    async def StreamChatCompletion(
        self, request: pb.ChatCompletionRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ChatCompletionChunk]:
        async with contextlib.aclosing(self._provider.stream(request, self._deployment)) as chunks:
            async for chunk in chunks:
                yield chunk


async def serve(listen: str, upstream: str) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    pb_grpc.add_AIServiceServicer_to_server(ForwardingService(upstream), server)
    server.add_insecure_port(listen)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(0)


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.forwarder", description=__doc__.split("\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:50062")
    parser.add_argument("--upstream", required=True, help="the simulator's origin")
    args = parser.parse_args()
    import uvloop

    uvloop.run(serve(args.listen, args.upstream))


if __name__ == "__main__":
    main()
