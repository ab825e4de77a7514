"""A lean data plane for S3's hot operations: SigV4 on hmac/hashlib, http.client with one pool per thread, and
regular-expression XML parsing. A drop-in for the boto3 S3 client: what it does not serve goes to boto3."""

from dth.s3.lean.client import LeanS3Client

__all__ = ["LeanS3Client"]
