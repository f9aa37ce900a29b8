/*
 * Interop agent: one DM Server on dmdelegate's C ABI (see interop/README.md).
 *
 *     agent_c CONFIG
 *
 * Reads the agent configuration, starts the server with its device hub and prints READY.
 * An initiator then waits for a line on stdin and starts the delegation. Both roles wait
 * for the session to end, print "RESULT <state> <reason code>", and keep serving until
 * stdin closes.
 *
 * Policy and accounts are this program's callbacks; device access is the server's own
 * SyncML endpoint (dmd_server_config.device_hub), so `execute` and `open_dm_session`
 * are NULL.
 */
#define _POSIX_C_SOURCE 200809L

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dmdelegate.h"

#define MAX_WORDS 8
#define MAX_LINES 32
#define WORD_LEN 512

typedef struct line {
    char words[MAX_WORDS][WORD_LEN];
    int count;
} line;

typedef struct config {
    line lines[MAX_LINES];
    int count;
} config;

/* The first line whose first word is `key`, or NULL. */
static const line *find(const config *c, const char *key) {
    for (int i = 0; i < c->count; i++) {
        if (strcmp(c->lines[i].words[0], key) == 0) {
            return &c->lines[i];
        }
    }
    return NULL;
}

/* Word `n` (after the key) of the line `key`; exits when missing. */
static const char *word(const config *c, const char *key, int n) {
    const line *l = find(c, key);
    if (l == NULL || l->count <= n + 1) {
        fprintf(stderr, "agent_c: configuration lacks `%s` (word %d)\n", key, n + 1);
        exit(2);
    }
    return l->words[n + 1];
}

static void read_config(const char *path, config *c) {
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        perror(path);
        exit(2);
    }
    char buf[4096];
    c->count = 0;
    while (fgets(buf, sizeof buf, f) != NULL) {
        if (c->count == MAX_LINES) {
            fprintf(stderr, "agent_c: more than %d configuration lines\n", MAX_LINES);
            exit(2);
        }
        line *l = &c->lines[c->count];
        l->count = 0;
        char *save = NULL;
        for (char *w = strtok_r(buf, " \t\r\n", &save); w != NULL; w = strtok_r(NULL, " \t\r\n", &save)) {
            if (l->count == MAX_WORDS || strlen(w) >= WORD_LEN) {
                fprintf(stderr, "agent_c: configuration line too long\n");
                exit(2);
            }
            strcpy(l->words[l->count++], w);
        }
        if (l->count > 0 && l->words[0][0] != '#') {
            c->count++;
        }
    }
    fclose(f);
}

/* A whole file, NUL-terminated (malloc'd). */
static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        perror(path);
        exit(2);
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)n + 1);
    if (text == NULL || fread(text, 1, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "agent_c: cannot read %s\n", path);
        exit(2);
    }
    text[n] = '\0';
    fclose(f);
    return text;
}

static void die(const char *what, dmd_result r) {
    char detail[512];
    dmd_last_error_message(detail, sizeof detail);
    fprintf(stderr, "agent_c: %s: %s: %s\n", what, dmd_result_message(r), detail);
    exit(1);
}

/* ---- the host ----------------------------------------------------------------------- */

typedef struct host {
    const char *server_id;
    int accept;
    char hub_url[128];
    const char *client_secret; /* the account handed out as DMS-2, or NULL */
    const char *server_secret;
} host;

static int32_t on_accept(void *userdata, const dmd_offer *offer, uint16_t *reject_code) {
    const host *h = userdata;
    (void)offer;
    if (!h->accept) {
        *reject_code = 101;
    }
    return h->accept;
}

static uint16_t on_dm_account(void *userdata, const char *device_id, dmd_reply *reply) {
    const host *h = userdata;
    (void)device_id;
    if (h->client_secret == NULL) {
        dmd_reply_set_text(reply, "this agent hands out no account");
        return 500;
    }
    char tnds[4096];
    size_t needed = 0;
    dmd_result r = dmd_dmacc_simple_tnds(h->server_id, h->hub_url, h->client_secret, h->server_secret,
                                         tnds, sizeof tnds, &needed);
    if (r != DMD_OK) {
        dmd_reply_set_text(reply, dmd_result_message(r));
        return 500;
    }
    dmd_reply_set_text(reply, tnds);
    return 200;
}

static const char *state_name(dmd_state s) {
    switch (s) {
    case DMD_STATE_COMPLETED: return "Completed";
    case DMD_STATE_REJECTED: return "Rejected";
    case DMD_STATE_ROLLED_BACK: return "RolledBack";
    case DMD_STATE_ROLLBACK_FAILED: return "RollbackFailed";
    case DMD_STATE_EXPIRED: return "Expired";
    default: return "Unfinished";
    }
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: agent_c CONFIG\n");
        return 2;
    }
    /* The HTTPS stack may write to a socket its peer closed. */
    signal(SIGPIPE, SIG_IGN);
    static config c;
    read_config(argv[1], &c);

    host h = {0};
    h.server_id = word(&c, "server_id", 0);
    h.accept = strcmp(word(&c, "accept", 0), "yes") == 0;
    snprintf(h.hub_url, sizeof h.hub_url, "http://%s/dm", word(&c, "hub", 0));
    if (find(&c, "account") != NULL) {
        h.client_secret = word(&c, "account", 0);
        h.server_secret = word(&c, "account", 1);
    }

    dmd_peer peer = {
        .server_id = word(&c, "peer", 0),
        .endpoint = word(&c, "peer", 1),
        .address = word(&c, "peer", 2),
        .identity = NULL,
    };
    dmd_device_link link = {
        .device_id = word(&c, "device", 0),
        .notify_url = word(&c, "device", 1),
        .client_name = NULL,
        .client_secret = word(&c, "device", 2),
        .server_secret = word(&c, "device", 3),
        .scheme = DMD_AUTH_BASIC,
    };
    dmd_device_hub hub = {.listen_address = word(&c, "hub", 0), .devices = &link, .device_count = 1};
    dmd_timeouts timeouts = {
        .response_ms = strtoull(word(&c, "timeouts", 0), NULL, 10) * 1000,
        .preparation_ms = strtoull(word(&c, "timeouts", 1), NULL, 10) * 1000,
        .confirm_ms = strtoull(word(&c, "timeouts", 2), NULL, 10) * 1000,
        .bootstrap_confirm_ms = strtoull(word(&c, "timeouts", 3), NULL, 10) * 1000,
        .client_session_ms = strtoull(word(&c, "timeouts", 4), NULL, 10) * 1000,
    };
    char *cert = slurp(word(&c, "cert", 0));
    char *key = slurp(word(&c, "key", 0));
    char *trust = slurp(word(&c, "trust", 0));
    dmd_server_config cfg = {
        .server_id = h.server_id,
        .listen_address = word(&c, "listen", 0),
        .cert_pem = cert,
        .key_pem = key,
        .trust_pem = trust,
        .peers = &peer,
        .peer_count = 1,
        .timeouts = &timeouts,
        .store_path = NULL,
        .transport = NULL,
        .device_hub = &hub,
    };
    dmd_host_callbacks callbacks = {
        .userdata = &h,
        .accept = on_accept,
        .execute = NULL,
        .open_dm_session = NULL,
        .dm_account = on_dm_account,
        .bootstrap_url = NULL,
        .on_event = NULL,
    };
    dmd_server *server = NULL;
    dmd_result r = dmd_server_new(&cfg, &callbacks, &server);
    if (r != DMD_OK) {
        die("dmd_server_new", r);
    }
    printf("READY\n");
    fflush(stdout);

    const char *session_id = word(&c, "session", 0);
    char buf[256];
    if (find(&c, "delegate") != NULL) {
        if (fgets(buf, sizeof buf, stdin) == NULL) {
            fprintf(stderr, "agent_c: stdin closed before the go line\n");
            return 1;
        }
        dmd_subtree subtrees[MAX_LINES];
        static char rights[MAX_LINES][WORD_LEN];
        size_t n = 0;
        for (int i = 0; i < c.count; i++) {
            const line *l = &c.lines[i];
            if (strcmp(l->words[0], "subtree") != 0 || l->count != 3) {
                continue;
            }
            /* The configuration separates rights with ',', the C ABI with '+'. */
            strcpy(rights[n], l->words[2]);
            for (char *p = rights[n]; *p != '\0'; p++) {
                if (*p == ',') {
                    *p = '+';
                }
            }
            subtrees[n].uri = l->words[1];
            subtrees[n].rights = rights[n];
            n++;
        }
        dmd_delegation_request request = {
            .peer = word(&c, "delegate", 0),
            .method = (uint8_t)atoi(word(&c, "delegate", 1)),
            .delegation_type = strcmp(word(&c, "delegate", 2), "full") == 0 ? DMD_DELEGATION_TYPE_FULL
                                                                          : DMD_DELEGATION_TYPE_PARTIAL,
            .device_id = word(&c, "delegate", 3),
            .manufacturer = word(&c, "delegate", 4),
            .model = word(&c, "delegate", 5),
            .subtrees = subtrees,
            .subtree_count = n,
            .expires_ms = 0,
            .session_id = session_id,
        };
        char started[DMD_SESSION_ID_MAX + 1];
        size_t needed = 0;
        r = dmd_server_start_delegation(server, &request, started, sizeof started, &needed);
        if (r != DMD_OK) {
            die("dmd_server_start_delegation", r);
        }
    }
    dmd_session_state state;
    uint64_t wait_ms = strtoull(word(&c, "wait", 0), NULL, 10) * 1000;
    r = dmd_server_wait(server, session_id, wait_ms, &state);
    if (r != DMD_OK) {
        die("dmd_server_wait", r);
    }
    printf("RESULT %s %u\n", state_name(state.state), (unsigned)state.reason_code);
    fflush(stdout);
    while (fgets(buf, sizeof buf, stdin) != NULL) {
    }
    dmd_server_free(server);
    free(cert);
    free(key);
    free(trust);
    return 0;
}
