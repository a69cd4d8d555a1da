"""Hot reload: SIGHUP (or Gateway.reload) swaps the config without dropping a call."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ai_service.config import load_config
from ai_service.resilience import Admission, CircuitState
from ai_service.runtime.gateway import Gateway
from ai_service.simulator import FaultRule, Simulator, SimulatorConfig
from ai_service_client import (
    AIServiceError,
    AsyncAIClient,
    AuthenticationError,
    ChatCompletionRequest,
    Message,
    UnavailableError,
)
from ai_service_protos import ai_service_pb2_grpc
from ai_service_protos.ai_service_pb2 import ListModelsRequest
from tests.conftest import PROVIDER_SECRET, TEST_KEY, config_tree, free_port, until, write_config
from tests.processes import (
    ANY_PORT,
    Process,
    gateway_address,
    gateway_argv,
    serving_workers,
    spawn,
    start_simulator,
    wait_logged,
    wait_serving,
)

NEW_KEY = "new-key-0123456789"


def ask(model: str = "sim-gpt", text: str = "hello") -> ChatCompletionRequest:
    return ChatCompletionRequest(model=model, messages=[Message(role="user", content=text)])


def revised(tree: dict[str, Any]) -> dict[str, Any]:
    """The same config with the test key revoked, a new key, a new model and a tight limit."""
    tree = {**tree}
    tree["auth"] = {
        "keys": [{"name": "newcomer", "key": NEW_KEY, "rate_limit": {"requests_per_minute": 3}}]
    }
    tree["models"] = [
        *tree["models"],
        {"name": "sim-new", "provider": "simulator", "upstream_model": "sim-new-1"},
    ]
    return tree


async def test_reload_revokes_adds_and_limits_without_dropping_a_stream(
    simulator: Simulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tree = config_tree(simulator.base_url)
    path = write_config(tmp_path / "config.yaml", tree)
    simulator.config.tokens_per_second = 40
    async with Gateway(load_config(path)) as gateway:
        async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as old_client:
            stream = old_client.stream_chat(ask(text="/tokens 20 across a reload"))
            first = await anext(stream)  # type: ignore[call-overload]
            write_config(path, revised(tree))
            with caplog.at_level(logging.INFO):
                assert await gateway.reload(str(path))
            rest = [chunk async for chunk in stream]  # type: ignore[attr-defined]
            chunks = [first, *rest]
            assert len("".join(c.choices[0].delta.content for c in chunks).split()) == 20
            assert chunks[-1].choices[0].finish_reason == "stop"

            # The revoked key is refused on every RPC.
            async with grpc.aio.insecure_channel(gateway.address) as channel:
                stub = ai_service_pb2_grpc.AIServiceStub(channel)
                metadata = (("authorization", f"Bearer {TEST_KEY}"),)
                for call in (
                    stub.ChatCompletion(ask(), metadata=metadata),
                    stub.ListModels(ListModelsRequest(), metadata=metadata),
                ):
                    with pytest.raises(grpc.aio.AioRpcError) as caught:
                        await call
                    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    async for _ in stub.StreamChatCompletion(ask(), metadata=metadata):
                        pass
                assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED

        async with AsyncAIClient(gateway.address, NEW_KEY, timeout=10) as client:
            assert "sim-new" in [m.id for m in await client.list_models()]
            assert (await client.chat(ask("sim-new"))).model == "sim-new-1"
            await client.chat(ask())
            with pytest.raises(AIServiceError) as limited:
                await client.chat(ask())
            assert limited.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert any(r.getMessage() == "config reloaded" for r in caplog.records)


async def test_an_invalid_config_is_rejected_and_the_old_one_stays(
    simulator: Simulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tree = config_tree(simulator.base_url)
    path = write_config(tmp_path / "config.yaml", tree)
    async with Gateway(load_config(path)) as gateway:
        broken = revised(tree)
        broken["models"][-1]["provider"] = "no-such-provider"
        write_config(path, broken)
        with caplog.at_level(logging.ERROR):
            assert not await gateway.reload(str(path))
        rejected = [
            r for r in caplog.records if r.getMessage().startswith("config reload rejected")
        ]
        assert rejected and "no-such-provider" in rejected[0].error  # type: ignore[attr-defined]
        async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
            assert (await client.chat(ask())).choices  # the old keys still work
        async with AsyncAIClient(gateway.address, NEW_KEY, timeout=10) as newcomer:
            with pytest.raises(AuthenticationError):
                await newcomer.chat(ask())


async def test_restart_only_sections_keep_their_running_values(
    simulator: Simulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tree = config_tree(simulator.base_url)
    path = write_config(tmp_path / "config.yaml", tree)
    async with Gateway(load_config(path)) as gateway:
        address = gateway.address
        moved = {**tree, "server": {**tree["server"], "default_deadline_seconds": 5}}
        write_config(path, moved)
        with caplog.at_level(logging.WARNING):
            assert await gateway.reload(str(path))
        assert gateway.config.server.default_deadline_seconds == 300
        assert gateway.address == address
        assert any("need a restart" in r.getMessage() for r in caplog.records)


async def test_a_changed_provider_serves_new_calls_and_the_old_pool_retires(
    simulator: Simulator, tmp_path: Path
) -> None:
    tree = config_tree(simulator.base_url, server__shutdown_grace_seconds=0.2)
    path = write_config(tmp_path / "config.yaml", tree)
    async with (
        Simulator(SimulatorConfig(api_key=PROVIDER_SECRET)) as second,
        Gateway(load_config(path)) as gateway,
        AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client,
    ):
        await client.chat(ask())
        tree["providers"][0]["base_url"] = f"{second.base_url}/v1"
        write_config(path, tree)
        assert await gateway.reload(str(path))
        await client.chat(ask())
        # The retired pool closes after the grace period.
        await until(lambda: not gateway._closing, "the retired pool closed")
    assert simulator.stats.total_requests == 1
    assert second.stats.total_requests == 1


@contextlib.contextmanager
def gateway_process(
    tmp_path: Path,
    workers: int,
    edit: Callable[[dict[str, Any]], None] = lambda tree: None,
    *,
    acted_on_at_start: bool = False,
) -> Iterator[tuple[Process, Path, dict[str, Any], str]]:
    """`python -m ai_service` on a config file (the process, the file, its tree, the address);
    `edit` changes the test config first; `acted_on_at_start`: the test acts on the process
    while it starts, so this yields before it has bound its port (nor said which)."""
    simulator, sim_url = start_simulator(tmp_path)
    gateway = None
    try:
        tree = config_tree(sim_url)
        edit(tree)
        path = write_config(tmp_path / "config.yaml", tree)
        # Workers share one port (SO_REUSEPORT), and a gateway acted on while it starts
        # reports its port too late: then it must be known before they start. Otherwise the
        # gateway picks its own and reports it.
        fixed = workers > 1 or acted_on_at_start
        listen = f"127.0.0.1:{free_port()}" if fixed else ANY_PORT
        gateway = spawn(
            gateway_argv("--config", str(path), "--listen", listen, "--workers", str(workers)),
            tmp_path,
            "gateway",
        )
        address = listen if fixed else gateway_address(gateway)
        yield gateway, path, tree, address
        gateway.popen.send_signal(signal.SIGTERM)
        assert gateway.popen.wait(timeout=30) == 0
    finally:
        if gateway is not None:
            gateway.kill()
        simulator.kill()


def test_sighup_reloads_every_worker(tmp_path: Path) -> None:
    with gateway_process(tmp_path, workers=2) as (gateway, path, tree, address):
        wait_serving(address, gateway)
        serving_workers(address, 2)  # both past their start, where a reload waits
        assert _code(address, TEST_KEY) is grpc.StatusCode.OK
        write_config(path, revised(tree))
        gateway.popen.send_signal(signal.SIGHUP)
        wait_logged(gateway, "config reloaded", count=2)  # by both workers
        # Over many new connections (both workers): the old key is gone, the new one works.
        assert {_code(address, TEST_KEY) for _ in range(12)} == {grpc.StatusCode.UNAUTHENTICATED}
        assert _code(address, NEW_KEY) is grpc.StatusCode.OK


def _code(address: str, key: str) -> grpc.StatusCode:
    with grpc.insecure_channel(address) as channel:
        stub = ai_service_pb2_grpc.AIServiceStub(channel)
        try:
            stub.ListModels(
                ListModelsRequest(), metadata=(("authorization", f"Bearer {key}"),), timeout=5
            )
        except grpc.RpcError as error:
            return error.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


async def test_a_reload_keeps_the_live_state_of_unchanged_deployments(
    simulator: Simulator, tmp_path: Path
) -> None:
    tree = config_tree(simulator.base_url)
    path = write_config(tmp_path / "config.yaml", tree)
    async with Gateway(load_config(path)) as gateway:
        before = {handle.name: handle for handle in gateway.router.deployments}
        breaker = before["simulator/sim-other-1"].breaker
        for _ in range(gateway.config.resilience.circuit_breaker.consecutive_failures):
            breaker.record(Admission.CALL, failed=True)
        assert before["simulator/sim-other-1"].breaker.state is CircuitState.OPEN
        write_config(path, revised(tree))  # a new key and a new model; the old ones unchanged
        assert await gateway.reload(str(path))
        after = {handle.name: handle for handle in gateway.router.deployments}
        # Same handles: the open circuit stays open, calls in flight stay counted.
        assert after["simulator/sim-gpt-1"] is before["simulator/sim-gpt-1"]
        assert after["simulator/sim-other-1"].breaker.state is CircuitState.OPEN
        limited = {**tree, "resilience": {"concurrency": {"max_in_flight": 3}}}
        write_config(path, limited)
        assert await gateway.reload(str(path))
        renewed = {handle.name: handle for handle in gateway.router.deployments}
        assert renewed["simulator/sim-gpt-1"] is not before["simulator/sim-gpt-1"]
        assert renewed["simulator/sim-gpt-1"].limiter.max_in_flight == 3


async def test_a_model_removed_by_a_reload_is_no_longer_reported_serving(
    simulator: Simulator, tmp_path: Path
) -> None:
    tree = config_tree(simulator.base_url)
    path = write_config(tmp_path / "config.yaml", tree)
    async with (
        Gateway(load_config(path)) as gateway,
        grpc.aio.insecure_channel(gateway.address) as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        check = health_pb2.HealthCheckRequest(service="sim-other")
        assert (await health.Check(check)).status == health_pb2.HealthCheckResponse.SERVING
        write_config(path, {**tree, "models": tree["models"][:1]})
        assert await gateway.reload(str(path))
        status = (await health.Check(check)).status
        assert status == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


async def test_providers_a_reload_retired_are_closed_when_the_gateway_stops_first(
    simulator: Simulator, tmp_path: Path
) -> None:
    tree = config_tree(simulator.base_url, server__shutdown_grace_seconds=30)
    path = write_config(tmp_path / "config.yaml", tree)
    gateway = Gateway(load_config(path))
    await gateway.start()
    retired = gateway.runtime.providers["simulator"] if gateway.runtime else None
    assert retired is not None
    closed: list[bool] = []
    original = retired.aclose

    async def recording_close() -> None:
        closed.append(True)
        await original()

    retired.aclose = recording_close  # type: ignore[method-assign]
    tree["providers"][0]["timeouts"] = {"read": 30}
    write_config(path, tree)
    assert await gateway.reload(str(path))
    await gateway.stop(0)  # long before the retired pool's 30 s grace is over
    assert closed == [True]


def test_a_sighup_while_the_gateway_starts_does_not_kill_it(tmp_path: Path) -> None:
    started = gateway_process(tmp_path, workers=1, acted_on_at_start=True)
    with started as (gateway, _path, _tree, address):
        # Still importing: unless SIGHUP is blocked from the first line, it kills it here.
        time.sleep(0.1)
        gateway.popen.send_signal(signal.SIGHUP)
        wait_serving(address, gateway)
        assert gateway.popen.poll() is None


def test_a_sighup_after_the_config_was_read_is_applied_once_serving(tmp_path: Path) -> None:
    # The process reads its provider key from a FIFO, so it stays between reading the
    # config and handling signals until the test writes the key: a reload asked for
    # then must not be lost (nor kill the process).
    fifo, key_file = tmp_path / "key.fifo", tmp_path / "key"
    os.mkfifo(fifo)
    key_file.write_text(PROVIDER_SECRET)

    def key_from(source: Path, tree: dict[str, Any]) -> None:
        provider = {k: v for k, v in tree["providers"][0].items() if k != "api_key"}
        tree["providers"] = [{**provider, "api_key_file": str(source)}]

    edit = functools.partial(key_from, fifo)
    with gateway_process(tmp_path, 1, edit, acted_on_at_start=True) as running:
        gateway, path, tree, address = running
        with fifo.open("w") as writer:  # opens once the gateway is reading the config
            revision = revised(tree)
            key_from(key_file, revision)
            write_config(path, revision)
            gateway.popen.send_signal(signal.SIGHUP)
            writer.write(PROVIDER_SECRET)
        wait_serving(address, gateway)
        deadline = time.monotonic() + 15
        while _code(address, NEW_KEY) is not grpc.StatusCode.OK:
            assert time.monotonic() < deadline, gateway.output()
            time.sleep(0.1)
        assert _code(address, TEST_KEY) is grpc.StatusCode.UNAUTHENTICATED


async def test_model_health_follows_a_reloaded_circuit_cool_down(
    simulator: Simulator, tmp_path: Path
) -> None:
    def breaker_opening_after(open_seconds: float) -> dict[str, Any]:
        tree = config_tree(simulator.base_url)
        tree["resilience"] = {
            "circuit_breaker": {"consecutive_failures": 1, "open_seconds": open_seconds},
            "retries": {"max_attempts": 1},
        }
        return tree

    path = write_config(tmp_path / "config.yaml", breaker_opening_after(30))
    async with Gateway(load_config(path)) as gateway:
        write_config(path, breaker_opening_after(0.5))
        assert await gateway.reload(str(path))
        simulator.add_fault(FaultRule("status", status=500, model="sim-gpt-1", times=1))
        async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
            with pytest.raises(UnavailableError):
                await client.chat(ask())  # opens sim-gpt's only circuit
        async with grpc.aio.insecure_channel(gateway.address) as channel:
            check = health_pb2_grpc.HealthStub(channel).Check
            request = health_pb2.HealthCheckRequest(service="sim-gpt")
            assert (await check(request)).status == health_pb2.HealthCheckResponse.NOT_SERVING
            deadline = time.monotonic() + 10  # half-open after 0.5 s, not the old 30 s
            while (await check(request)).status != health_pb2.HealthCheckResponse.SERVING:
                assert time.monotonic() < deadline, "health kept the old cool-down"
                await asyncio.sleep(0.1)


def test_a_reload_under_listen_sees_only_what_the_file_changed(tmp_path: Path) -> None:
    # `--listen` overrides the file: a reload must apply it again, or every reload
    # warns that the `server` section needs a restart, and a real one is lost in that.
    with gateway_process(tmp_path, 1) as (gateway, _, _, address):
        wait_serving(address, gateway)
        gateway.popen.send_signal(signal.SIGHUP)
        wait_logged(gateway, "config reloaded")
        assert "need a restart" not in gateway.stderr()


def cached_config(simulator: Simulator, tmp_path: Path) -> tuple[dict[str, Any], Path]:
    """The test config with the response cache on, written to a file a reload re-reads."""
    tree = config_tree(simulator.base_url)
    tree["cache"] = {"enabled": True}
    return tree, write_config(tmp_path / "config.yaml", tree)


async def answer_cached(client: AsyncAIClient) -> ChatCompletionRequest:
    """A cacheable request, asked until its answer comes from the cache."""
    cacheable = ask()
    cacheable.temperature = 0
    await client.chat(cacheable)
    assert (await client.chat(cacheable)).cached
    return cacheable


async def test_a_reload_that_repoints_a_model_does_not_serve_its_old_cached_answers(
    simulator: Simulator, tmp_path: Path
) -> None:
    tree, path = cached_config(simulator, tmp_path)
    gateway = Gateway(load_config(path))
    async with gateway, AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        cacheable = await answer_cached(client)
        tree["models"][0]["upstream_model"] = "sim-gpt-2"  # sim-gpt moves
        write_config(path, tree)
        assert await gateway.reload(str(path))
        moved = await client.chat(cacheable)
    assert not moved.cached and moved.deployment == "simulator/sim-gpt-2"


async def test_a_reload_that_repoints_a_provider_does_not_serve_its_old_cached_answers(
    simulator: Simulator, tmp_path: Path
) -> None:
    tree, path = cached_config(simulator, tmp_path)
    gateway = Gateway(load_config(path))
    async with (
        Simulator(SimulatorConfig(api_key=PROVIDER_SECRET)) as elsewhere,
        gateway,
        AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client,
    ):
        cacheable = await answer_cached(client)
        tree["providers"][0]["base_url"] = f"{elsewhere.base_url}/v1"  # the same names
        write_config(path, tree)
        assert await gateway.reload(str(path))
        moved = await client.chat(cacheable)
        assert not moved.cached
        assert elsewhere.stats.total_requests == 1
