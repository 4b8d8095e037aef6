// Node's ssh2 through a tether route.
//
//   node ssh2_client.js HOST PORT USER KEY HOSTKEY_SHA256 COMMAND
//
// Checks the server's host key against the expected `SHA256:...` fingerprint,
// authenticates with the private key KEY (and keyboard-interactive: `tryKeyboard`),
// prints every SSH_MSG_USERAUTH_BANNER (`banner` event: tether's sign-in text for
// clients that answer a zero-prompt INFO_REQUEST themselves) and any
// keyboard-interactive request it is shown, runs COMMAND and prints its output.
// Exit status: the command's.

'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const { Client } = require('ssh2');

const [host, port, username, keyPath, hostkeyFp, command] = process.argv.slice(2);

const conn = new Client();
conn.on('banner', (message) => {
  console.log(`banner: ${message}`);
});
conn.on('keyboard-interactive', (name, instructions, _lang, prompts, finish) => {
  console.log(`kbd-interactive name: ${name}`);
  console.log(`kbd-interactive instruction: ${instructions}`);
  finish(prompts.map(() => ''));
});
conn.on('ready', () => {
  console.log('authenticated');
  conn.exec(command, (err, stream) => {
    if (err) {
      console.log(`exec failed: ${err.message}`);
      process.exit(3);
    }
    stream.on('data', (d) => process.stdout.write(d));
    stream.stderr.on('data', (d) => process.stderr.write(d));
    stream.on('close', (code) => {
      conn.end();
      process.exitCode = code ?? 1;
    });
  });
});
conn.on('error', (err) => {
  console.log(`error: ${err.message}`);
  process.exit(4);
});
conn.connect({
  host,
  port: Number(port),
  username,
  privateKey: fs.readFileSync(keyPath),
  tryKeyboard: true,
  agent: undefined,
  // Failure bound only: the sign-in takes as long as the browser does.
  readyTimeout: 300000,
  hostVerifier: (key) => {
    const seen = `SHA256:${crypto.createHash('sha256').update(key).digest('base64').replace(/=+$/, '')}`;
    if (seen !== hostkeyFp) {
      console.log(`host key mismatch: ${seen} != ${hostkeyFp}`);
      return false;
    }
    console.log(`host key ${seen}`);
    return true;
  },
});
