"""The contract, `ai_service.proto`, and the Python stubs generated from it (`make proto`)."""
