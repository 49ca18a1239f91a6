#!/usr/bin/env bash
# Install this project into a virtualenv: install.sh VENV SPEC (e.g. '.' or '.[dev]').
# Uses uv (from the package index, installed into the venv) when it can, else pip: uv
# resolves and installs the runtime packages several times faster on a cold cache.
set -euo pipefail
venv="$1"; spec="$2"
py="$venv/bin/python"
test -x "$py" || "${PYTHON:-python3}" -m venv "$venv"
if [ "${MODELDECK_INSTALLER:-uv}" = uv ] && { test -x "$venv/bin/uv" || "$venv/bin/pip" install -q --disable-pip-version-check uv >/dev/null 2>&1; }; then
  "$venv/bin/uv" pip install --quiet --python "$py" -e "$spec"
else
  echo "[install] uv unavailable; using pip" >&2
  "$venv/bin/pip" install -q --disable-pip-version-check -e "$spec"
fi
