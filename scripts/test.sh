#!/usr/bin/env bash
# Install everything the tests need on a fresh Debian machine, then lint, type-check and run the tests.
#   bash scripts/test.sh            # the whole suite
#   bash scripts/test.sh -k imap    # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."

# Real servers for the tests: Dovecot (IMAP/POP3) from Debian. The SMTP server (aiosmtpd) comes from PyPI.
if ! command -v dovecot >/dev/null 2>&1 || ! command -v doveadm >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends dovecot-imapd dovecot-pop3d openssl >/dev/null
    # the packaged service is not needed: the tests start their own Dovecot on loopback
    (systemctl disable --now dovecot >/dev/null 2>&1 || service dovecot stop >/dev/null 2>&1 || true)
  else
    echo "dovecot is not installed and this is not a root Debian machine: the IMAP/POP3 tests will be skipped" >&2
  fi
fi

PY=${PYTHON:-python3}
if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  PY=.venv/bin/python
fi
"$PY" -m pip install -q --upgrade pip >/dev/null
"$PY" -m pip install -q -e '.[test,headless]'

"$PY" -m ruff check src tests benchmarks
"$PY" -m mypy src
"$PY" -m pytest -q "$@"
