"""ai-service: a gRPC inference gateway (installed as the `ai_service` package)."""
