"""Reproducible load benchmarks of the gateway against its upstream, side by side.

`python -m bench` (or `make bench`) starts everything itself on 127.0.0.1 (the upstream
simulator, the gateway, a bare grpc.aio echo server, optionally a LiteLLM proxy), drives
load with h2load (a C load generator: gRPC unary over HTTP/2, the direct upstream over
HTTP/1.1) and an asyncio gRPC client for streams, stops everything after, and writes
`bench/RESULTS.md` plus PNG plots beside it.

Modules, one job each: `procs` (processes with guaranteed teardown), `h2load` (the load
generator driver and its output parser), `direct` (the same work straight to the
simulator over HTTP/1.1), `grpc_check` (grpc-status of a sample through a real client),
`streaming` (the streaming driver, run in its own process), `echo` (the bare grpc.aio
ceiling), `stack` (configs and start-up of simulator/gateway/echo), `sections` (the
measurements), `litellm_peer` (the optional LiteLLM comparison), `report` (table, targets
and plots). `soak` runs apart (`python -m bench.soak`, `make soak`): ten minutes of steady
mixed load on one gateway process, then the slope of its RSS and open fds, written into the
`## Soak` section of RESULTS.md (which `python -m bench` keeps).
"""
