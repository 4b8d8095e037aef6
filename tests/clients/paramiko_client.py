#!/usr/bin/env python3
"""paramiko through a tether route, as a Python tool drives it.

    paramiko_client.py HOST PORT USER KEY HOSTKEY_SHA256 COMMAND

Connects with paramiko.Transport, checks the server's host key against the
expected `SHA256:...` fingerprint, authenticates with the private key KEY and,
when the server answers with partial success, with keyboard-interactive (the
handler prints the name and instruction it receives: tether's sign-in text).
Then runs COMMAND and prints its output. Exit status: the command's.
"""

import base64
import hashlib
import socket
import sys

import paramiko


def say(*parts):
    print(*parts, flush=True)


def main():
    host, port, user, key_path, hostkey_fp, command = sys.argv[1:7]
    key = paramiko.PKey.from_path(key_path)
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.settimeout(None)
    transport = paramiko.Transport(sock)
    # Failure bounds only: the sign-in takes as long as the browser does.
    transport.banner_timeout = 60
    transport.auth_timeout = 300
    transport.start_client(timeout=60)

    server_key = transport.get_remote_server_key()
    digest = hashlib.sha256(server_key.asbytes()).digest()
    seen = "SHA256:" + base64.b64encode(digest).decode().rstrip("=")
    if seen != hostkey_fp:
        say(f"host key mismatch: {seen} != {hostkey_fp}")
        return 2
    say(f"host key {seen}")

    remaining = transport.auth_publickey(user, key)
    if remaining:
        say(f"publickey: partial success, next: {','.join(remaining)}")

        def handler(title, instructions, prompts):
            say(f"kbd-interactive name: {title}")
            say(f"kbd-interactive instruction: {instructions}")
            return ["" for _ in prompts]

        transport.auth_interactive(user, handler)
    if not transport.is_authenticated():
        say("not authenticated")
        return 3
    say("authenticated")

    channel = transport.open_session(timeout=60)
    channel.exec_command(command)
    out = channel.makefile("rb").read()
    status = channel.recv_exit_status()
    sys.stdout.write(out.decode(errors="replace"))
    sys.stdout.flush()
    transport.close()
    return status


if __name__ == "__main__":
    sys.exit(main())
