"""The call's stages after the interceptors, in order: the servicer admits a request
(validation, routing, redaction screening), `answers` serves it from the cache or one
shared upstream call and meters its tokens, `dispatch` tries deployments with retries,
hedges and fallbacks."""
