#!/usr/bin/env bash
# checkov for the CloudFormation plugin tests (idempotent; quiet when it is there).
#
# checkov pins boto3 exactly (3.3.30: boto3==1.35.49, botocore<1.36), older than the project needs
# (botocore>=1.36 for request_checksum_calculation), so it cannot share the project's environment:
# it lives in a virtualenv of its own, ${DTH_CACHE:-$HOME/.cache/dth}/checkov-venv, where
# tests/test_cfn_templates.py finds it (or set DTH_CHECKOV to a checkov executable).
set -euo pipefail

version=3.3.30
venv="${DTH_CACHE:-$HOME/.cache/dth}/checkov-venv"
if [ -x "$venv/bin/checkov" ] && [ "$("$venv/bin/checkov" --version 2>/dev/null)" = "$version" ]; then
    exit 0
fi
echo "checkov: installing checkov $version into $venv"
python3 -m venv "$venv"
log=$(mktemp)
if ! "$venv/bin/python" -m pip install -q --disable-pip-version-check "checkov==$version" >"$log" 2>&1; then
    cat "$log" >&2
    exit 1
fi
rm -f "$log"
