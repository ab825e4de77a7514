# Test-only image for tests/kind/test_kind.py: the engine image plus moto's server, which plays AWS in the
# kind cluster (CloudFormation, ECS, SQS, DynamoDB, Secrets Manager, EC2, and S3 as the transfer's source and
# destination). It also runs `dth dev ecs-runner`, which starts the plugin stacks' tasks as local processes.
# Never shipped; build context: tests/kind.
ARG ENGINE_IMAGE=dth-engine:kind-e2e
FROM ${ENGINE_IMAGE}
USER root
RUN /opt/dth/bin/pip install --no-cache-dir --disable-pip-version-check 'moto[server]==5.2.1'
USER 10001:10001
ENTRYPOINT []
