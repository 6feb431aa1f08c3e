#!/usr/bin/env bash
# Installs what Sophia Gateway needs to build, run and test, from Debian's packages and (for
# the test clients) the npm registry. Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(build-essential pkg-config libuv1-dev libcurl4-openssl-dev libcjson-dev libmbedtls-dev
      libsqlite3-dev libhiredis-dev node-llhttp libcmocka-dev curl wrk openssl nginx-light clang
      prometheus valgrind strace)

missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js may come from Debian (nodejs + npm) or from another packaging that bundles npm.
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
    echo "install-deps: installing ${missing[*]}" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The client libraries of the integration tests (openai, @anthropic-ai/sdk, the Vercel AI SDK,
# LangChain JS), pinned by tests/package-lock.json; installed again when the lock file changed.
if [ "${SKIP_NPM:-0}" != 1 ] && { [ ! -f tests/node_modules/.package-lock.json ] ||
    [ tests/package-lock.json -nt tests/node_modules/.package-lock.json ]; }; then
    echo "install-deps: npm ci in tests/" >&2
    (cd tests && npm ci --no-audit --no-fund --loglevel=error)
fi
