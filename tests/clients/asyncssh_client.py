#!/usr/bin/env python3
"""asyncssh through a tether route.

    asyncssh_client.py HOST PORT USER KEY KNOWN_HOSTS COMMAND

Verifies the server against the known_hosts file KNOWN_HOSTS, authenticates with
the private key KEY (then keyboard-interactive if the server asks for it), prints
any authentication banner and keyboard-interactive challenge it receives (tether's
sign-in text), runs COMMAND and prints its output. Exit status: the command's.
"""

import asyncio
import sys

import asyncssh


def say(*parts):
    print(*parts, flush=True)


class Client(asyncssh.SSHClient):
    def auth_banner_received(self, msg, lang):
        say(f"banner: {msg}")

    def kbdint_auth_requested(self):
        return ""  # no submethods: let the server choose

    def kbdint_challenge_received(self, name, instructions, lang, prompts):
        say(f"kbd-interactive name: {name}")
        say(f"kbd-interactive instruction: {instructions}")
        return ["" for _ in prompts]

    def auth_completed(self):
        say("authenticated")


async def run(host, port, user, key, known_hosts, command):
    conn, _client = await asyncssh.create_connection(
        Client,
        host,
        int(port),
        username=user,
        client_keys=[key],
        known_hosts=known_hosts,
        agent_path=None,
        config=None,
        password=None,
        # Failure bounds only: the sign-in takes as long as the browser does.
        login_timeout=300,
        connect_timeout=60,
    )
    async with conn:
        result = await conn.run(command, check=False)
        sys.stdout.write(result.stdout)
        sys.stdout.flush()
        return result.exit_status


if __name__ == "__main__":
    sys.exit(asyncio.run(run(*sys.argv[1:7])))
