"""The kopf operator that reconciles TransferTasks into CloudFormation plugin stacks."""
