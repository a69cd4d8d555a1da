"""The cloud providers' own settings: Azure OpenAI, the Gemini API, Vertex AI, AWS Bedrock.

Each provider kind has one block named after it (`azure_openai:`, `gemini:`, `vertex:`,
`bedrock:`) beside the settings every provider shares; a block given to a provider of
another kind is refused. Secrets in these blocks (an Entra client secret, an AWS secret
key) come only from the environment, as `api_key` does.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from ai_service.config.base import StrictSettings

#: Azure OpenAI's GA data-plane version; `v1` selects the version-less /openai/v1 API.
AZURE_DEFAULT_API_VERSION = "2024-10-21"
#: The scope of an Entra ID token for Azure OpenAI (Cognitive Services).
AZURE_SCOPE = "https://cognitiveservices.azure.com/.default"
#: The scope Vertex AI's OAuth tokens need.
GOOGLE_CLOUD_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
_API_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}(-preview)?|v1|preview")


class EntraSettings(StrictSettings):
    """Microsoft Entra ID client credentials (an app registration and its secret): the
    gateway asks for a token and renews it before it expires."""

    tenant_id: str = Field(min_length=1)
    client_id: str = Field(min_length=1)
    #: The app's client secret, only from the environment (`${NAME}`).
    client_secret: SecretStr
    #: The token authority, for sovereign clouds (e.g. https://login.microsoftonline.us).
    authority: str = Field("https://login.microsoftonline.com", pattern=r"^https?://[^/\s]+")
    scope: str = Field(AZURE_SCOPE, min_length=1)

    @property
    def token_url(self) -> str:
        return f"{self.authority.rstrip('/')}/{self.tenant_id}/oauth2/v2.0/token"


class AzureOpenAISettings(StrictSettings):
    #: The `api-version` query of the deployment URLs
    #: (`/openai/deployments/{deployment}/chat/completions`), or `v1` for the
    #: `/openai/v1/chat/completions` API, which takes the deployment as the body's model.
    api_version: str = AZURE_DEFAULT_API_VERSION
    #: Entra ID in place of the resource's key (`api_key`, sent as `api-key`).
    entra: EntraSettings | None = None

    @field_validator("api_version")
    @classmethod
    def _version_shape(cls, value: str) -> str:
        if not _API_VERSION.fullmatch(value):
            raise ValueError(f"{value!r} is not an Azure OpenAI API version (YYYY-MM-DD or v1)")
        return value


class GeminiSettings(StrictSettings):
    #: The path's API version: `v1beta` (where new features land first) or `v1`.
    api_version: Literal["v1beta", "v1"] = "v1beta"


class VertexSettings(StrictSettings):
    project: str = Field(min_length=1)
    #: A region (`us-central1`, `europe-west4`, …) or `global`.
    location: str = Field(min_length=1, pattern=r"^[a-z0-9-]+$")
    api_version: Literal["v1", "v1beta1"] = "v1"
    #: `google` (Gemini, `:generateContent`) or `anthropic` (Claude, `:rawPredict` with the
    #: Messages API's body).
    publisher: Literal["google", "anthropic"] = "google"
    #: A Google credentials JSON file (a service-account key, or any file `gcloud` or
    #: workload identity federation writes). Unset: the environment's default credentials
    #: (GOOGLE_APPLICATION_CREDENTIALS, gcloud's, or the metadata server's).
    credentials_file: str | None = Field(None, min_length=1)
    scopes: tuple[str, ...] = Field((GOOGLE_CLOUD_SCOPE,), min_length=1)
    #: kind vertex, publisher anthropic: the body's `anthropic_version`.
    anthropic_version: str = Field("vertex-2023-10-16", min_length=1)


class BedrockSettings(StrictSettings):
    """Where Bedrock is and whose AWS credentials sign the calls.

    Without keys here, the credentials come from botocore's chain, as the AWS CLI finds
    them: the environment, the shared credentials and config files (`profile`), web
    identity (EKS, `AWS_WEB_IDENTITY_TOKEN_FILE`), container and instance metadata;
    temporary ones are renewed as botocore renews them.
    """

    region: str = Field(min_length=1, pattern=r"^[a-z0-9-]+$")
    #: A profile of the shared AWS files.
    profile: str | None = Field(None, min_length=1)
    #: Static keys in place of the chain, only from the environment (`${NAME}`).
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    session_token: SecretStr | None = None
    #: The shared files the chain reads, if not ~/.aws/credentials and ~/.aws/config.
    credentials_file: str | None = Field(None, min_length=1)
    config_file: str | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _keys_in_pairs(self) -> BedrockSettings:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("access_key_id and secret_access_key: give both or neither")
        if self.session_token is not None and self.access_key_id is None:
            raise ValueError("session_token: given without access_key_id")
        if self.access_key_id is not None and self.profile is not None:
            raise ValueError("profile: static keys and a profile exclude each other")
        return self


#: The provider block each cloud kind reads.
CLOUD_BLOCKS = {
    "azure_openai": "azure_openai",
    "gemini": "gemini",
    "vertex": "vertex",
    "bedrock": "bedrock",
}
#: Secrets inside the cloud blocks, which must come from the environment.
CLOUD_SECRET_PATHS = (
    ("azure_openai", "entra", "client_secret"),
    ("bedrock", "access_key_id"),
    ("bedrock", "secret_access_key"),
    ("bedrock", "session_token"),
)
