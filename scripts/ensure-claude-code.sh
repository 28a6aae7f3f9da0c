#!/bin/sh
# Makes sure Claude Code (the npm package @anthropic-ai/claude-code, pinned below) is in
# .tools/claude-code, where tests/router/messages/test_claude_code.py runs it once against
# Turnout. Project-local and git-ignored: nothing is installed globally. The package brings
# its native binary through an optional dependency, from the npm registry only.
# Idempotent and silent when the pinned version is already there. Without node or npm it
# installs nothing, says so and exits 0: the test is then skipped, saying why.
set -eu

VERSION="2.1.332"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PREFIX="$ROOT/.tools/claude-code"
PACKAGE_JSON="$PREFIX/node_modules/@anthropic-ai/claude-code/package.json"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "node or npm not found; Claude Code not installed (its test will be skipped)" >&2
    exit 0
fi

if [ -x "$PREFIX/node_modules/.bin/claude" ] && [ -f "$PACKAGE_JSON" ] \
    && grep -q "\"version\": \"$VERSION\"" "$PACKAGE_JSON"; then
    exit 0
fi

mkdir -p "$PREFIX"
npm install --prefix "$PREFIX" --no-save --no-audit --no-fund --loglevel=error \
    "@anthropic-ai/claude-code@$VERSION" >/dev/null

if [ ! -x "$PREFIX/node_modules/.bin/claude" ]; then
    echo "Claude Code $VERSION installed but $PREFIX/node_modules/.bin/claude is missing" >&2
    exit 1
fi
