"""grpc.health.v1 during a drain: Watch streams say NOT_SERVING, then end."""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import StartGateway

NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def test_watches_end_with_the_drain_instead_of_holding_it(
    start_gateway: StartGateway,
) -> None:
    # gRPC client-side health checking keeps a Watch open: it must not hold every
    # drain for the whole grace.
    gateway = await start_gateway()
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        watches = {
            service: health.Watch(health_pb2.HealthCheckRequest(service=service))
            for service in ("", "ai_service.v1.AIService", "sim-gpt", "no-such-service")
        }
        for watch in watches.values():  # each has its first answer: it is being served
            await asyncio.wait_for(watch.read(), 10)
        # An hour's grace: the drain ends only because the watches end it.
        await gateway.stop(3600)
        for service, watch in watches.items():
            told = []
            while (update := await watch.read()) is not grpc.aio.EOF:
                told.append(update.status)
            assert await watch.code() is grpc.StatusCode.OK, service
            if service != "no-such-service":
                assert told == [NOT_SERVING], service
