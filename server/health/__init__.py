"""gRPC health: the servicer that drains, and the health of each public model."""
