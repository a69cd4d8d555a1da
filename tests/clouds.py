"""The cloud providers on the simulator, for the tests: their config and their credentials.

Each cloud kind is configured as a company would, pointed at the simulator: Azure with the
resource key (deployment URLs) and with Entra ID client credentials (the v1 URL), the
Gemini API with its key, Vertex AI with a service-account key whose `token_uri` is the
simulator's token endpoint (Gemini and Claude), Bedrock with static AWS keys (SigV4). The
simulator checks each credential it receives against the same secret.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ai_service.simulator import Simulator
from tests.conftest import PROVIDER_KEY_REF, PROVIDER_KEY_VARIABLE, PROVIDER_SECRET

AWS_KEY_ID_VARIABLE = "AI_SERVICE_TEST_AWS_KEY_ID"
AWS_KEY_ID = "AKIDGATEWAYTEST0001"
CLOUD_ENV = {PROVIDER_KEY_VARIABLE: PROVIDER_SECRET, AWS_KEY_ID_VARIABLE: AWS_KEY_ID}
SERVICE_ACCOUNT = "gateway@sim-project.iam.gserviceaccount.com"
TENANT = "tenant-0001"


@dataclass(frozen=True)
class CloudModel:
    provider: str
    upstream: str

    @property
    def path(self) -> str:
        """The path a unary call reaches on the simulator."""
        return PATHS[self.provider].format(model=self.upstream)


#: public model → where it is served. The Bedrock model id holds a ':' (percent-encoded
#: in the URL it is signed with), the Vertex Claude id an '@', as the real ones do.
CLOUD_MODELS = {
    "sim-azure": CloudModel("azure", "sim-azure-1"),
    "sim-azure-entra": CloudModel("azure-entra", "sim-azure-2"),
    "sim-gemini": CloudModel("gemini", "sim-gemini-1"),
    "sim-vertex": CloudModel("vertex", "sim-vertex-1"),
    "sim-vertex-claude": CloudModel("vertex-claude", "sim-claude@20250101"),
    "sim-bedrock": CloudModel("bedrock", "sim.bedrock-1:0"),
}
PATHS = {
    "azure": "/openai/deployments/{model}/chat/completions",
    "azure-entra": "/openai/v1/chat/completions",
    "gemini": "/v1beta/models/{model}:generateContent",
    "vertex": "/v1/projects/sim-project/locations/us-central1/publishers/google/models/"
    "{model}:generateContent",
    "vertex-claude": "/v1/projects/sim-project/locations/us-central1/publishers/anthropic/"
    "models/{model}:rawPredict",
    "bedrock": "/model/{model}/converse",
}


def service_account_key() -> tuple[str, str]:
    """(private key PEM, public key PEM) of a new RSA key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


def service_account_file(
    folder: Path, simulator: Simulator, token_origin: str | None = None
) -> Path:
    """A service-account key file whose token endpoint is the simulator's (at
    `token_origin`, when something stands in front of it); the simulator learns its public
    key, so it checks the assertion's signature."""
    private, public = service_account_key()
    simulator.config.google_service_accounts = {SERVICE_ACCOUNT: public}
    path = folder / "service-account.json"
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "sim-project",
                "private_key_id": "key-0001",
                "private_key": private,
                "client_email": SERVICE_ACCOUNT,
                "client_id": "100000000000000000001",
                "token_uri": f"{token_origin or simulator.base_url}/token",
            }
        ),
        encoding="utf-8",
    )
    return path


def cloud_providers(simulator_url: str, credentials_file: Path) -> list[dict[str, Any]]:
    vertex = {"project": "sim-project", "location": "us-central1"}
    return [
        {
            "name": "azure",
            "kind": "azure_openai",
            "base_url": simulator_url,
            "api_key": PROVIDER_KEY_REF,
        },
        {
            "name": "azure-entra",
            "kind": "azure_openai",
            "base_url": simulator_url,
            "azure_openai": {
                "api_version": "v1",
                "entra": {
                    "tenant_id": TENANT,
                    "client_id": "client-0001",
                    "client_secret": PROVIDER_KEY_REF,
                    "authority": simulator_url,
                },
            },
        },
        {
            "name": "gemini",
            "kind": "gemini",
            "base_url": simulator_url,
            "api_key": PROVIDER_KEY_REF,
        },
        {
            "name": "vertex",
            "kind": "vertex",
            "base_url": simulator_url,
            "vertex": {**vertex, "credentials_file": str(credentials_file)},
        },
        {
            "name": "vertex-claude",
            "kind": "vertex",
            "base_url": simulator_url,
            "vertex": {
                **vertex,
                "publisher": "anthropic",
                "credentials_file": str(credentials_file),
            },
        },
        {
            "name": "bedrock",
            "kind": "bedrock",
            "base_url": simulator_url,
            "bedrock": {
                "region": "us-east-1",
                "access_key_id": "${" + AWS_KEY_ID_VARIABLE + "}",
                "secret_access_key": PROVIDER_KEY_REF,
            },
        },
    ]


def cloud_models() -> list[dict[str, Any]]:
    return [
        {"name": name, "provider": model.provider, "upstream_model": model.upstream}
        for name, model in CLOUD_MODELS.items()
    ]


#: Embedding models on the cloud providers: public name → (provider, upstream model).
EMBEDDING_MODELS = {
    "sim-azure-embed": ("azure", "sim-embedding-deployment"),
    "sim-gemini-embed": ("gemini", "gemini-embedding-001"),
    "sim-vertex-embed": ("vertex", "text-embedding-005"),
    "sim-titan-embed": ("bedrock", "amazon.titan-embed-text-v2:0"),
    "sim-cohere-embed": ("bedrock", "cohere.embed-english-v3"),
}


def embedding_models() -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "provider": provider,
            "upstream_model": upstream,
            "capabilities": {"embeddings": True},
        }
        for name, (provider, upstream) in EMBEDDING_MODELS.items()
    ]
