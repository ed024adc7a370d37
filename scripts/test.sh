#!/usr/bin/env bash
# Set up .venv (idempotent) and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# headless Chromium for the browser tests (Debian's package): a developer's run skips them without it,
# CI (CI=true) fails instead, since a skipped check of what a person sees is no check
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1; } \
        || echo "chromium could not be installed: the browser tests will be skipped (failed under CI=true)"
fi
if [ -n "${CI:-}" ] && ! command -v chromium >/dev/null 2>&1; then
    echo "CI: chromium is required for the browser tests and could not be installed (apt-get install chromium)" >&2
    exit 1
fi
# s3rver (npm), the second S3 implementation the bucket tests run against
if command -v npm >/dev/null 2>&1; then
    npm install --prefix tests/node --no-audit --no-fund --silent >/dev/null 2>&1 \
        || echo "npm could not install tests/node: the tests against s3rver will fail"
elif [ -n "${CI:-}" ]; then
    echo "CI: npm is required for the tests against s3rver (a second S3 implementation)" >&2
    exit 1
fi
export RAY_AUTH_MODE=disabled
# two workers: a test spends much of its time waiting on processes it started (Ray, a server, an `infu`
# command), which the other worker's test fills; INFU_TEST_WORKERS=0 runs the suite in this process
exec .venv/bin/python -m pytest -n "${INFU_TEST_WORKERS:-2}" --dist worksteal "$@"
