"""The HTTP door: OpenAI- and Anthropic-compatible APIs beside the gRPC service.

Apps written against the official OpenAI and Anthropic SDKs, and tools that speak only
HTTP, come in here (`server.http.listen`); their calls take the same steps as gRPC
calls (`entry/`: the record, the caller, the rate) into the same service core
(`pipeline.core`), so keys, limits, budgets, routing, redaction, cache, audit and
metrics hold alike whichever door a call came through. `routes` is the application,
`openai` and `anthropic` translate each API to the service's messages and back,
`errors` spells the gateway's errors in each API's shape, `server` runs it all on the
gateway's event loop (uvicorn's HTTP/1.1 protocol, with httptools).
"""
