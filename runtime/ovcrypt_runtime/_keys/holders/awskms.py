"""An AWS KMS key as a key holder, through boto3 (imported only when this holder is used).

URI: `awskms:` followed by what KMS's KeyId takes: a key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID), an
alias ARN, a key id or alias/NAME. The region comes from an ARN, else from AWS_REGION /
AWS_DEFAULT_REGION; the endpoint from AWS_ENDPOINT_URL_KMS or AWS_ENDPOINT_URL (a local KMS, moto);
credentials from boto3's usual chain. The stanza is {"ciphertext": base64 CiphertextBlob} of KMS
Encrypt, under an EncryptionContext naming the product and the data key's id: KMS refuses to decrypt
it under any other context, and CloudTrail logs the context with every Decrypt.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..._errors import KeyFormatError, KeyMissingError, WrongKeyError
from ..._format.spec import forget_keys
from ._common import b64decode_field, b64encode, check_dek, require

SCHEME = "awskms"
_ARN = re.compile(r"arn:aws[a-z-]*:kms:([a-z0-9-]+):\d{12}:(key|alias)/[A-Za-z0-9/_+=,.@-]+")
_KEY = re.compile(r"[A-Za-z0-9-]+|alias/[A-Za-z0-9/_-]+")
_WRONG_KEY = frozenset({"IncorrectKeyException", "InvalidCiphertextException", "AccessDeniedException"})
_UNUSABLE = frozenset({"DisabledException", "KMSInvalidStateException", "KeyUnavailableException"})


def parse_uri(uri: str) -> tuple[str, str | None]:
    """(KeyId, region from the ARN or None) of an `awskms:` URI; KeyFormatError (one line) for anything else."""
    key = uri[len(SCHEME) + 1 :] if uri.startswith(SCHEME + ":") else ""
    arn = _ARN.fullmatch(key)
    if arn:
        return key, arn.group(1)
    if key.startswith("arn:") or not _KEY.fullmatch(key):
        raise KeyFormatError(
            f"{uri!r}: an AWS KMS holder is awskms:arn:aws:kms:REGION:ACCOUNT:key/ID (or alias/NAME, a key id)"
        )
    return key, None


@dataclass
class AwsKmsHolder:
    """A KMS key (see module)."""

    uri: str
    key_env: str = "OVCRYPT_KEY"  # the registry's Class(uri, key_env); unused here
    environ: Mapping[str, str] | None = field(default=None, repr=False)  # None: os.environ when used
    key: str = field(init=False)
    region: str | None = field(init=False)

    def __post_init__(self) -> None:
        self.key, self.region = parse_uri(self.uri)

    @forget_keys
    def wrap(self, dek: bytes, context: Mapping[str, str]) -> dict[str, str]:
        """{"ciphertext": base64} of KMS Encrypt of the 32-byte `dek` under the encryption context."""
        check_dek(dek, self.uri)
        answer = self._call("Encrypt", KeyId=self.key, Plaintext=dek, EncryptionContext=dict(context))
        return {"ciphertext": b64encode(answer["CiphertextBlob"])}

    @forget_keys
    def unwrap(self, stanza: Mapping[str, str], context: Mapping[str, str]) -> bytes:
        """The DEK; WrongKeyError if another key or context wrapped it, KeyMissingError if KMS cannot be used."""
        blob = b64decode_field(stanza, "ciphertext", self.uri)
        answer = self._call("Decrypt", KeyId=self.key, CiphertextBlob=blob, EncryptionContext=dict(context))
        return check_dek(answer["Plaintext"], self.uri)

    @forget_keys  # the credentials, in botocore's frames
    def rewrap(self, stanza: Mapping[str, str], context: Mapping[str, str]) -> dict[str, str]:
        """KMS ReEncrypt to the same key (its newest key material after a rotation); the DEK stays inside KMS."""
        blob = b64decode_field(stanza, "ciphertext", self.uri)
        answer = self._call(
            "ReEncrypt",
            CiphertextBlob=blob,
            SourceKeyId=self.key,
            SourceEncryptionContext=dict(context),
            DestinationKeyId=self.key,
            DestinationEncryptionContext=dict(context),
        )
        return {"ciphertext": b64encode(answer["CiphertextBlob"])}

    def _client(self) -> Any:
        boto3 = require("boto3", "boto3", self.uri)
        botocore_config = require("botocore.config", "boto3", self.uri)
        env = os.environ if self.environ is None else self.environ
        region = self.region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
        endpoint = env.get("AWS_ENDPOINT_URL_KMS") or env.get("AWS_ENDPOINT_URL")
        credentials = {}
        if self.environ is not None and env.get("AWS_ACCESS_KEY_ID"):
            credentials = {
                "aws_access_key_id": env.get("AWS_ACCESS_KEY_ID"),
                "aws_secret_access_key": env.get("AWS_SECRET_ACCESS_KEY"),
                "aws_session_token": env.get("AWS_SESSION_TOKEN"),
            }
        config = botocore_config.Config(connect_timeout=10, read_timeout=30, retries={"max_attempts": 2})
        return boto3.session.Session(region_name=region, **credentials).client(
            "kms", endpoint_url=endpoint or None, config=config
        )

    def _call(self, operation: str, **kwargs: Any) -> Any:
        """client.<operation>(**kwargs), every failure as one line naming the URI and what to do."""
        botocore = require("botocore.exceptions", "boto3", self.uri)
        try:
            client = self._client()
            method = getattr(client, re.sub(r"(?<!^)([A-Z])", r"_\1", operation).lower())
            return method(**kwargs)
        except botocore.NoRegionError:
            raise KeyMissingError(f"holder {self.uri}: no AWS region; use a key ARN or set AWS_REGION") from None
        except (botocore.NoCredentialsError, botocore.PartialCredentialsError):
            raise KeyMissingError(
                f"holder {self.uri}: no AWS credentials (set AWS_PROFILE, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                "or run with a role)"
            ) from None
        except (botocore.EndpointConnectionError, botocore.ConnectTimeoutError, botocore.ReadTimeoutError) as exc:
            raise KeyMissingError(
                f"holder {self.uri}: cannot reach KMS ({type(exc).__name__}: {exc}); check the network, "
                "AWS_REGION and AWS_ENDPOINT_URL"
            ) from None
        except botocore.ClientError as exc:
            error = exc.response.get("Error", {})
            code, said = str(error.get("Code", "")), " ".join(str(error.get("Message", "")).split())
            raise _client_error(self.uri, operation, code, said) from None


def _client_error(uri: str, operation: str, code: str, said: str) -> Exception:
    detail = f"{code}: {said}" if said else code
    if code == "NotFoundException":
        return KeyMissingError(f"holder {uri}: KMS has no such key ({detail}); check the ARN, alias and region")
    if code in _UNUSABLE:
        return KeyMissingError(
            f"holder {uri}: the KMS key cannot be used now ({detail}); enable it or cancel its deletion"
        )
    if operation != "Encrypt" and code in _WRONG_KEY:
        return WrongKeyError(
            f"holder {uri}: KMS refused to {operation.lower()} the data key ({detail}): it was wrapped by another "
            "key or for another product/key id (encryption context), or the caller may not use this key"
        )
    if code in {"AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException"}:
        return KeyMissingError(
            f"holder {uri}: KMS denied {operation} ({detail}); the caller's IAM policy must allow kms:{operation}"
        )
    return KeyMissingError(f"holder {uri}: KMS {operation} failed ({detail})")
