"""Fixtures the poller tests share with the storage tests: moto's S3 server (GC over S3)."""

from tests.storage.conftest import aws_env, bucket, s3_admin, s3_client, s3_endpoint

__all__ = ["aws_env", "bucket", "s3_admin", "s3_client", "s3_endpoint"]
