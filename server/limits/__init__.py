"""Limits on callers: token buckets for requests and tokens, leases that spare Redis a
round trip per call, the token quota that reserves and settles, and the shared Redis
connection they (and the cache) use."""
