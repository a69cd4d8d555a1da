"""ai-service: a gRPC inference gateway in front of LLM provider APIs."""
