"""Observers of calls: Prometheus metrics, OpenTelemetry traces, the audit log, logging,
and `sinks`, which builds them from the config."""
