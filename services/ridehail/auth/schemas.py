"""Request and response bodies of the auth API (the OpenAPI schema is generated from these)."""

from __future__ import annotations

import unicodedata
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ridehail.auth.passwords import MAX_LENGTH, MIN_LENGTH, check_password_policy, has_unsafe_characters

# local@domain.tld with no whitespace, control characters or extra "@" (RFC 5321 length limit)
EMAIL_PATTERN = r"^[^@\s\x00-\x1f\x7f]{1,64}@[^@\s\x00-\x1f\x7f.]+(\.[^@\s\x00-\x1f\x7f.]+)+$"
EMAIL_MAX = 254


def normalise_email(value: str) -> str:
    """Case-insensitive, Unicode NFC: the form stored in ``users.email`` and used for throttling."""
    return unicodedata.normalize("NFC", value.strip()).lower()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegisterRequest(_Strict):
    email: str = Field(min_length=3, max_length=EMAIL_MAX, pattern=EMAIL_PATTERN, examples=["ada@example.com"])
    password: str = Field(min_length=MIN_LENGTH, max_length=MAX_LENGTH, examples=["correct horse battery"])
    role: Literal["rider", "driver"] = "rider"

    @field_validator("email")
    @classmethod
    def _normalise(cls, value: str) -> str:
        if has_unsafe_characters(value):
            raise ValueError("email contains control or invalid characters")
        return normalise_email(value)

    @model_validator(mode="after")
    def _policy(self) -> RegisterRequest:
        check_password_policy(self.password, self.email)  # PasswordRejected is a ValueError -> 422
        return self


class UserOut(BaseModel):
    id: str
    email: str
    role: Literal["rider", "driver", "admin", "viewer"]
    created_at: str


class TokenPair(BaseModel):
    """An RFC 6749 section 5.1 token response (sent with ``Cache-Control: no-store``)."""

    access_token: str = Field(description="An RFC 9068 JWT (header typ at+jwt); send it as Authorization: Bearer.")
    refresh_token: str = Field(description="Use once, at the token endpoint (grant_type=refresh_token).")
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="Seconds until the access token expires.")
    refresh_expires_in: int = Field(description="Seconds until the login session (refresh family) ends.")


class RefreshRequest(_Strict):
    refresh_token: str = Field(min_length=1, max_length=8192)


class LogoutRequest(_Strict):
    refresh_token: str = Field(min_length=1, max_length=8192)


class LoginCodeRequest(_Strict):
    role: Literal["viewer", "rider"] = "viewer"
    ttl_s: int = Field(default=3600, ge=30, le=86400)


class LoginCodeOut(BaseModel):
    code: str
    expires_in: int
    login_url: str


class ExchangeRequest(_Strict):
    code: str = Field(min_length=1, max_length=256)


class ErrorOut(BaseModel):
    detail: str


class ServerMetadata(BaseModel):
    """RFC 8414 authorization server metadata."""

    issuer: str = Field(description="The iss claim of every token (a name every verifier pins, not a URL).")
    token_endpoint: str
    jwks_uri: str
    revocation_endpoint: str
    grant_types_supported: list[str]
    response_types_supported: list[str] = Field(description="Empty: there is no authorization endpoint.")
    token_endpoint_auth_methods_supported: list[str]
    revocation_endpoint_auth_methods_supported: list[str]
    service_documentation: str


class JWK(BaseModel):
    model_config = ConfigDict(extra="allow")
    kty: str
    kid: str
    alg: str
    use: str


class JWKS(BaseModel):
    keys: list[JWK]
