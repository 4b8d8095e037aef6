/*
 * A libssh2 client through a tether route (libssh2 1.10 as Debian 12 ships it).
 *
 *   libssh2_client HOST PORT USER PRIVKEY PUBKEY HOSTKEY_SHA256 COMMAND
 *
 * Checks the server's host key against the expected `SHA256:...` fingerprint,
 * authenticates with the key pair from the files PRIVKEY/PUBKEY and, when that is
 * not enough (tether answers an unbound key with partial success), with
 * keyboard-interactive, whose callback prints the name and instruction it receives
 * (tether's sign-in text). Then runs COMMAND and prints its output.
 * Exit status: the command's; 10+ for a client-side failure.
 *
 * Built by crates/tether/tests/e2e_clients.rs: gcc -o BIN libssh2_client.c -lssh2
 */
#include <arpa/inet.h>
#include <libssh2.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void base64_nopad(const unsigned char *in, size_t len, char *out)
{
    static const char tab[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t i;
    char *o = out;
    for(i = 0; i + 2 < len; i += 3) {
        *o++ = tab[in[i] >> 2];
        *o++ = tab[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
        *o++ = tab[((in[i + 1] & 15) << 2) | (in[i + 2] >> 6)];
        *o++ = tab[in[i + 2] & 63];
    }
    if(len - i == 1) {
        *o++ = tab[in[i] >> 2];
        *o++ = tab[(in[i] & 3) << 4];
    }
    else if(len - i == 2) {
        *o++ = tab[in[i] >> 2];
        *o++ = tab[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
        *o++ = tab[(in[i + 1] & 15) << 2];
    }
    *o = '\0';
}

static void kbd_callback(const char *name, int name_len, const char *instruction,
                         int instruction_len, int num_prompts,
                         const LIBSSH2_USERAUTH_KBDINT_PROMPT *prompts,
                         LIBSSH2_USERAUTH_KBDINT_RESPONSE *responses, void **abstract)
{
    int i;
    (void)prompts;
    (void)abstract;
    printf("kbd-interactive name: %.*s\n", name_len, name);
    printf("kbd-interactive instruction: %.*s\n", instruction_len, instruction);
    fflush(stdout);
    for(i = 0; i < num_prompts; i++) {
        responses[i].text = strdup("");
        responses[i].length = 0;
    }
}

static int fail(LIBSSH2_SESSION *session, const char *what, int code)
{
    char *msg = NULL;
    libssh2_session_last_error(session, &msg, NULL, 0);
    printf("%s failed: %s\n", what, msg ? msg : "(no message)");
    fflush(stdout);
    return code;
}

int main(int argc, char **argv)
{
    const char *host, *user, *privkey, *pubkey, *expected, *command;
    int port, sock, rc, status;
    struct sockaddr_in addr;
    LIBSSH2_SESSION *session;
    LIBSSH2_CHANNEL *channel;
    const char *hash;
    char seen[64];
    char buf[4096];
    ssize_t n;

    if(argc != 8) {
        fprintf(stderr, "usage: %s HOST PORT USER PRIVKEY PUBKEY HOSTKEY_SHA256 COMMAND\n",
                argv[0]);
        return 10;
    }
    host = argv[1];
    port = atoi(argv[2]);
    user = argv[3];
    privkey = argv[4];
    pubkey = argv[5];
    expected = argv[6];
    command = argv[7];

    if(libssh2_init(0) != 0) {
        printf("libssh2_init failed\n");
        return 11;
    }
    printf("libssh2 %s\n", libssh2_version(0));

    sock = socket(AF_INET, SOCK_STREAM, 0);
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)port);
    if(inet_pton(AF_INET, host, &addr.sin_addr) != 1 ||
       connect(sock, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
        printf("connect to %s:%d failed\n", host, port);
        return 12;
    }

    session = libssh2_session_init();
    libssh2_session_set_blocking(session, 1);
    if(libssh2_session_handshake(session, sock) != 0)
        return fail(session, "handshake", 13);

    hash = libssh2_hostkey_hash(session, LIBSSH2_HOSTKEY_HASH_SHA256);
    if(!hash)
        return fail(session, "host key hash", 14);
    strcpy(seen, "SHA256:");
    base64_nopad((const unsigned char *)hash, 32, seen + 7);
    if(strcmp(seen, expected) != 0) {
        printf("host key mismatch: %s != %s\n", seen, expected);
        return 15;
    }
    printf("host key %s\n", seen);
    fflush(stdout);

    rc = libssh2_userauth_publickey_fromfile(session, user, pubkey, privkey, "");
    if(rc != 0) {
        char *methods = libssh2_userauth_list(session, user, (unsigned int)strlen(user));
        printf("publickey: not enough (%d), server offers: %s\n", rc,
               methods ? methods : "(none)");
        fflush(stdout);
        if(libssh2_userauth_authenticated(session))
            goto authenticated;
        rc = libssh2_userauth_keyboard_interactive(session, user, kbd_callback);
        if(rc != 0)
            return fail(session, "keyboard-interactive", 16);
    }
authenticated:
    if(!libssh2_userauth_authenticated(session))
        return fail(session, "authentication", 17);
    printf("authenticated\n");
    fflush(stdout);

    channel = libssh2_channel_open_session(session);
    if(!channel)
        return fail(session, "channel open", 18);
    if(libssh2_channel_exec(channel, command) != 0)
        return fail(session, "exec", 19);
    for(;;) {
        n = libssh2_channel_read(channel, buf, sizeof(buf));
        if(n < 0)
            return fail(session, "read", 20);
        if(n == 0)
            break;
        fwrite(buf, 1, (size_t)n, stdout);
    }
    fflush(stdout);
    libssh2_channel_close(channel);
    libssh2_channel_wait_closed(channel);
    status = libssh2_channel_get_exit_status(channel);
    libssh2_channel_free(channel);
    libssh2_session_disconnect(session, "bye");
    libssh2_session_free(session);
    close(sock);
    libssh2_exit();
    return status;
}
