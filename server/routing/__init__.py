"""Routing: a public model name → the deployments that may serve a call, in order."""
