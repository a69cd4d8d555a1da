"""The process: the gateway's server and its assembly from a config, signals and
drain, the worker supervisor, TLS credentials, heap tuning."""
