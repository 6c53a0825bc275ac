#!/usr/bin/env bash
# Checks that src/admin/openapi.json is a valid OpenAPI 3.1 document, with
# openapi-spec-validator (PyPI). When the python3 on PATH (or $PYTHON) does
# not have it, it is installed under target/: into a venv, or, where the
# venv module is missing (Debian without python3-venv), with
# `pip install --target`, which leaves the system's packages alone.
set -euo pipefail
cd "$(dirname "$0")/.."

document=src/admin/openapi.json
python=${PYTHON:-python3}
version=0.9.0
dir=target/openapi-spec-validator

if ! command -v "$python" >/dev/null 2>&1; then
  echo "$python is required to check $document" >&2
  exit 1
fi

has_validator() {
  "$1" -c 'import openapi_spec_validator' >/dev/null 2>&1
}

if ! has_validator "$python"; then
  if [ -x "$dir/venv/bin/python" ] && has_validator "$dir/venv/bin/python"; then
    python=$dir/venv/bin/python
  elif [ -d "$dir/lib" ] && PYTHONPATH=$dir/lib has_validator "$python"; then
    export PYTHONPATH=$dir/lib
  else
    echo "installing openapi-spec-validator $version under $dir"
    mkdir -p "$dir"
    if "$python" -m venv "$dir/venv" >/dev/null 2>&1; then
      "$dir/venv/bin/python" -m pip install -q --disable-pip-version-check \
        "openapi-spec-validator==$version"
      python=$dir/venv/bin/python
    else
      rm -rf "$dir/venv"
      "$python" -m pip install -q --disable-pip-version-check --target "$dir/lib" \
        "openapi-spec-validator==$version"
      export PYTHONPATH=$dir/lib
    fi
  fi
fi

"$python" -m openapi_spec_validator --schema 3.1 "$document"
