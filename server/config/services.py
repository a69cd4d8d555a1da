"""The gRPC service names the gateway serves, read from their descriptors."""

from __future__ import annotations

from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection

from ai_service_protos import ai_service_pb2

SERVICE_NAME = ai_service_pb2.DESCRIPTOR.services_by_name["AIService"].full_name

ADMIN_SERVICE_NAME = ai_service_pb2.DESCRIPTOR.services_by_name["Admin"].full_name

HEALTH_SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name

#: Names the health service answers for already: a model of that name would overwrite
#: their status with its own.
SERVICE_NAMES = frozenset(
    {
        SERVICE_NAME,
        ADMIN_SERVICE_NAME,
        HEALTH_SERVICE_NAME,
        reflection.SERVICE_NAME,
        "grpc.reflection.v1.ServerReflection",
    }
)
