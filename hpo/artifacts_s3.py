"""``s3://BUCKET`` checkpoint stores: Optuna's Boto3ArtifactStore, checked once when opened.

Any S3-compatible server works (AWS, MinIO, Ceph, R2, moto): the endpoint comes from
``artifacts.s3_endpoint`` or ``$AWS_ENDPOINT_URL``, the credentials from boto3's usual chain
(``$AWS_ACCESS_KEY_ID``/``$AWS_SECRET_ACCESS_KEY``, ``$AWS_PROFILE``, an instance role), never
from the command line. :func:`open_s3_store` asks the server for the bucket before any trial
runs, so a wrong bucket, endpoint or key is one line at start, not a failed trial an epoch later:

- no such bucket, refused credentials, no credentials: :class:`ArtifactStoreError`, exit 2;
- endpoint unreachable: :class:`~hpo.errors.StorageUnavailable`, exit 75 (try again later).

    >>> bucket_of("s3://hpo-ckpt")
    'hpo-ckpt'
    >>> bucket_of("s3://hpo-ckpt/runs")
    Traceback (most recent call last):
    ...
    hpo.errors.ConfigError: artifacts: artifacts.path = 's3://hpo-ckpt/runs' is invalid; allowed: s3://BUCKET (no prefix)
"""

from __future__ import annotations

import os
from typing import Any

from hpo.errors import ConfigError, HpoError, StorageUnavailable

CREDENTIALS_HINT = "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"


class ArtifactStoreError(HpoError):
    """The S3 store answered but cannot be used (no bucket, credentials refused). Exit code 2."""

    exit_code = 2


def bucket_of(location: str) -> str:
    """The bucket of ``s3://BUCKET``; a ConfigError for anything else (prefixes included)."""
    bucket = location[len("s3://"):].strip("/")
    if not location.startswith("s3://") or not bucket or "/" in bucket:
        raise ConfigError("artifacts", "artifacts.path", location, "s3://BUCKET (no prefix)")
    return bucket


def open_s3_store(location: str, endpoint: str | None = None) -> Any:
    """A Boto3ArtifactStore for ``s3://BUCKET`` whose bucket the server has confirmed."""
    bucket = bucket_of(location)
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise ConfigError("artifacts", "artifacts.path", location,
                          "an installed boto3 for s3:// stores (pip install boto3)") from None
    from optuna.artifacts import Boto3ArtifactStore

    endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL")
    # a session of its own: the credentials as the environment gives them now (boto3's
    # default session keeps the first ones it found for the life of the process)
    client = boto3.session.Session().client(
        "s3", endpoint_url=endpoint,
        config=Config(connect_timeout=10, retries={"max_attempts": 3}))
    check_bucket(client, location, endpoint)
    return Boto3ArtifactStore(bucket, client=client)


def check_bucket(client: Any, location: str, endpoint: str | None) -> None:
    """Raise one clear error when ``client`` cannot use the bucket of ``location``."""
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    where = f"at {endpoint}" if endpoint else "on AWS (no artifacts.s3_endpoint/$AWS_ENDPOINT_URL)"
    try:
        client.head_bucket(Bucket=bucket_of(location))
    except (NoCredentialsError, PartialCredentialsError) as exc:
        raise ArtifactStoreError(f"artifact store {location}: {exc}; {CREDENTIALS_HINT}") from None
    except EndpointConnectionError as exc:
        raise StorageUnavailable(f"artifact store {location} unreachable {where} ({exc}); "
                                 "try again later") from None
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = exc.response.get("Error", {}).get("Code", "?")
        if status == 404 or code in ("404", "NoSuchBucket"):
            raise ArtifactStoreError(f"artifact store {location}: no such bucket {where}; "
                                     "create it first or fix --artifacts/$HPO_ARTIFACTS/"
                                     "artifacts.path") from None
        if status == 403 or code in ("403", "AccessDenied", "InvalidAccessKeyId",
                                     "SignatureDoesNotMatch"):
            raise ArtifactStoreError(f"artifact store {location}: access denied {where} "
                                     f"(HTTP 403): check the credentials ({CREDENTIALS_HINT}) "
                                     "and the bucket's policy") from None
        raise ArtifactStoreError(f"artifact store {location}: {code} {where} "
                                 f"(HTTP {status})") from None
