"""Call metrics kept in plain Python between flushes read, once flushed, exactly as if
each update had gone to prometheus-client as it happened."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ai_service.observability.metrics import _HistogramUpdates, _Sums

BUCKETS = (0.1, 0.5, 1.0)
#: On a bound (counted in that bucket), between bounds, above the last, zero, negative.
AMOUNTS = (0.1, 0.5, 1.0, 0.3, 0.0, 7.5, -1.0, 0.1, 2.0)


def _series(registry: CollectorRegistry) -> list[str]:
    """The scrape, less when each series was created (which differs by a few µs)."""
    text = generate_latest(registry).decode()
    return [line for line in text.splitlines() if "_created" not in line]


def test_a_flushed_histogram_reads_as_its_observations_one_by_one() -> None:
    direct_registry, batched_registry = CollectorRegistry(), CollectorRegistry()
    direct = Histogram("h", "h", ("a",), registry=direct_registry, buckets=BUCKETS)
    batched = _HistogramUpdates(
        Histogram("h", "h", ("a",), registry=batched_registry, buckets=BUCKETS), BUCKETS
    )
    for at, amount in enumerate(AMOUNTS):
        label = "x" if at % 3 else "y"
        direct.labels(label).observe(amount)
        batched.observe((label,), amount)
    batched.flush()
    assert _series(batched_registry) == _series(direct_registry)


def test_counts_are_handed_on_once_and_later_updates_add_to_them() -> None:
    direct_registry, batched_registry = CollectorRegistry(), CollectorRegistry()
    direct = Counter("c", "c", ("a", "b"), registry=direct_registry)
    batched = _Sums(Counter("c", "c", ("a", "b"), registry=batched_registry))
    for amount in (1.0, 2.5):
        direct.labels("k", "m").inc(amount)
        batched.add(("k", "m"), amount)
    batched.flush()
    batched.flush()
    direct.labels("k", "n").inc()
    batched.add(("k", "n"))
    batched.flush()
    assert _series(batched_registry) == _series(direct_registry)


def test_a_gauge_carries_the_net_change_of_its_updates() -> None:
    direct_registry, batched_registry = CollectorRegistry(), CollectorRegistry()
    direct = Gauge("g", "g", ("a",), registry=direct_registry)
    batched = _Sums(Gauge("g", "g", ("a",), registry=batched_registry))
    for delta in (1, 1, -1, 1):
        direct.labels("grpc").inc(delta)
        batched.add(("grpc",), delta)
    batched.flush()
    batched.add(("grpc",), -1)
    direct.labels("grpc").dec()
    batched.flush()
    assert _series(batched_registry) == _series(direct_registry)
