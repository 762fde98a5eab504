#!/usr/bin/env bash
# Run the test suite against the real engine and image that .ci/setup.sh prepared.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p test-output
.venv/bin/ruff check .
export TF1KERNEL_TEST_OUTPUT="$PWD/test-output"
.venv/bin/python -m pytest -ra --durations=15 --junitxml=test-output/junit.xml "$@"
