#!/usr/bin/env bash
# Regenerates docker/requirements.lock: every runtime dependency of the project (pyproject.toml) and of its
# console extra, and what building the project's wheel needs (setuptools, wheel), pinned with their hashes, for
# Linux x86_64 and CPython 3.11 (the images' base). Both images install exactly this: `pip install --no-deps --require-hashes`.
# Run it after changing the dependencies in pyproject.toml; tests/test_images.py fails while the lock misses one.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=$(mktemp -d "${TMPDIR:-/tmp}/dth-lock.XXXXXX")
trap 'rm -rf "$venv"' EXIT
# Only PyPI: no pip configuration of this machine (local wheel folders, extra indexes, constraints).
export PIP_CONFIG_FILE=/dev/null
unset PIP_FIND_LINKS PIP_EXTRA_INDEX_URL PIP_INDEX_URL PIP_CONSTRAINT
python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check 'pip-tools==7.6.2'
# The console extra too: the Helm chart runs `dth console` from the operator's image (console.enabled).
CUSTOM_COMPILE_COMMAND="bash docker/lock.sh" "$venv/bin/pip-compile" --quiet --generate-hashes --allow-unsafe --strip-extras \
    --extra console \
    --build-deps-for wheel --no-emit-index-url --no-emit-find-links \
    --output-file docker/requirements.lock pyproject.toml
