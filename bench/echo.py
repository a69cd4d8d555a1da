"""A bare grpc.aio server of the same service: Python gRPC's own ceiling on this machine.

`python -m bench.echo --listen 127.0.0.1:PORT` answers `ChatCompletion` with a fixed
response built from the request (no auth, no interceptors, no upstream), on uvloop like
the gateway, so "gateway RPS / echo RPS" is the share of the ceiling the gateway keeps.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

import grpc

from ai_service_protos import ai_service_pb2 as pb
from ai_service_protos import ai_service_pb2_grpc as pb_grpc


class EchoService(pb_grpc.AIServiceServicer):  # type: ignore[misc]
    async def ChatCompletion(
        self, request: pb.ChatCompletionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ChatCompletionResponse:
        text = request.messages[-1].content if request.messages else ""
        return pb.ChatCompletionResponse(
            id="echo",
            model=request.model,
            provider="echo",
            deployment="echo",
            choices=[
                pb.Choice(
                    index=0,
                    message=pb.Message(role="assistant", content=text),
                    finish_reason="stop",
                )
            ],
            usage=pb.Usage(prompt_tokens=1, completion_tokens=1, total_tokens=2),
        )


async def serve(servicer: pb_grpc.AIServiceServicer, listen: str) -> None:
    """`servicer` alone on a grpc.aio server at `listen`, until SIGTERM or SIGINT."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    pb_grpc.add_AIServiceServicer_to_server(servicer, server)
    server.add_insecure_port(listen)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(0)


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.echo", description=__doc__.split("\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:50061")
    args = parser.parse_args()
    import uvloop

    uvloop.run(serve(EchoService(), args.listen))


if __name__ == "__main__":
    main()
