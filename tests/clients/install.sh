#!/usr/bin/env bash
# Installs what crates/tether/tests/e2e_clients.rs needs besides Debian packages:
# a Python venv at target/clients-venv with the pinned requirements.txt (paramiko,
# asyncssh, ansible-core) and the Node ssh2 client (npm ci here). Idempotent: an
# up-to-date venv is left alone. Checks that the other clients are installed
# (Debian: putty-tools, dropbear-bin, curl, git, libssh2-1-dev, gcc).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$root/target/clients-venv"

for tool in python3 node npm gcc plink puttygen dbclient dropbearconvert curl git ssh; do
  command -v "$tool" >/dev/null 2>&1 || { echo "clients: required tool not found: $tool" >&2; exit 1; }
done
[ -f /usr/include/libssh2.h ] || { echo "clients: libssh2 headers missing (apt: libssh2-1-dev)" >&2; exit 1; }

# The venv, rebuilt only when requirements.txt changed since the last install.
stamp="$venv/.requirements.txt"
if [ ! -x "$venv/bin/python" ] || ! cmp -s "$here/requirements.txt" "$stamp"; then
  echo "clients: Python venv at $venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"
  cp "$here/requirements.txt" "$stamp"
else
  echo "clients: Python venv up to date ($venv)"
fi
"$venv/bin/python" -c 'import paramiko, asyncssh; print("clients: paramiko", paramiko.__version__, "asyncssh", asyncssh.__version__)'
ansible_version="$("$venv/bin/ansible" --version)"
echo "clients: ${ansible_version%%$'\n'*}"

echo "clients: npm ci in $here"
(cd "$here" && npm ci --no-audit --no-fund)
