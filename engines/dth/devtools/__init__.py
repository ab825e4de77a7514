"""Local stand-ins for AWS used by the tests and benchmarks: Ceph radosgw and moto server."""
