/*
 * Tests of dmd_server with host callbacks written in C: two servers in one process, on
 * 127.0.0.1 port 0, mutual TLS under a dmd_test_pki, each host forwarding its callbacks to
 * one simulated device (dmd_sim_device). Methods 1 and 2, Full and Partial, and a failure:
 * DMS-1's execute callback refuses the 3rd write (425) -> both ROLLED_BACK, device unchanged.
 *
 * Usage: test_server [--quick]   (quick: Method 1 Full and the failure case only)
 * Prints "test_server: N passed, M failed"; exit status 0 when none failed.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dmdelegate.h"

#include "harness.h"

#define DMS1 "dms1.operator.example"
#define DMS2 "dms2.enterprise.example"
#define DEVICE "IMEI:490154203237518"
#define WAIT_MS 120000u

/* ---- a C host over a simulated device ----------------------------------------------- */

typedef struct {
    const char *server_id;
    dmd_sim_device *device;
    pthread_mutex_t lock; /* callbacks for different sessions may run concurrently */
    int writes;           /* write commands executed so far */
    int refuse_write;     /* refuse the Nth write with 425 (0: never) */
    int events;
    int completed_events;
} host;

static int is_write(const dmd_command *c) {
    uint32_t k = dmd_command_get_kind(c);
    return k == DMD_COMMAND_ADD || k == DMD_COMMAND_REPLACE_ACL || k == DMD_COMMAND_DELETE;
}

static int cb_accept(void *userdata, const dmd_offer *offer, uint16_t *reject_code) {
    (void)userdata;
    if (offer->subtree_count == 0 || strcmp(offer->device_id, DEVICE) != 0) {
        *reject_code = 102; /* unknown device */
        return 0;
    }
    return 1;
}

static uint16_t cb_execute(void *userdata, const char *device_id, const dmd_command *command,
                           dmd_reply *reply) {
    host *h = userdata;
    if (strcmp(device_id, DEVICE) != 0) return 404;
    if (is_write(command)) {
        pthread_mutex_lock(&h->lock);
        int n = ++h->writes;
        pthread_mutex_unlock(&h->lock);
        if (n == h->refuse_write) {
            dmd_reply_set_text(reply, "refused by the C host (test)");
            return 425;
        }
    }
    return dmd_sim_device_execute(h->device, h->server_id, command, reply);
}

static uint16_t cb_open_dm_session(void *userdata, const char *device_id) {
    host *h = userdata;
    (void)device_id;
    return dmd_sim_device_open_session(h->device, h->server_id);
}

static uint16_t cb_dm_account(void *userdata, const char *device_id, dmd_reply *reply) {
    host *h = userdata;
    (void)device_id;
    char buf[4096];
    size_t needed = 0;
    if (dmd_dmacc_simple_tnds(h->server_id, "https://dms2.enterprise.example/dm",
                              "client-secret-2", "server-secret-2", buf, sizeof buf,
                              &needed) != DMD_OK)
        return 500;
    return dmd_reply_set_text(reply, buf) == DMD_OK ? 200 : 500;
}

static void cb_on_event(void *userdata, const dmd_event *event) {
    host *h = userdata;
    pthread_mutex_lock(&h->lock);
    h->events++;
    if (event->kind == DMD_EVENT_COMPLETED) h->completed_events++;
    pthread_mutex_unlock(&h->lock);
}

static dmd_host_callbacks callbacks_for(host *h) {
    dmd_host_callbacks cb;
    memset(&cb, 0, sizeof cb);
    cb.userdata = h;
    cb.accept = cb_accept;
    cb.execute = cb_execute;
    cb.open_dm_session = cb_open_dm_session;
    cb.dm_account = cb_dm_account;
    cb.bootstrap_url = NULL; /* Methods 3/4 unsupported by this host */
    cb.on_event = cb_on_event;
    return cb;
}

/* ---- two servers --------------------------------------------------------------------- */

typedef struct {
    dmd_test_pki *pki;
    dmd_identity *id1, *id2;
} pki_set;

static int make_pki(pki_set *p) {
    memset(p, 0, sizeof *p);
    if (dmd_test_pki_new("C test CA", &p->pki) != DMD_OK) return 0;
    if (dmd_test_pki_issue(p->pki, DMS1, &p->id1) != DMD_OK) return 0;
    if (dmd_test_pki_issue(p->pki, DMS2, &p->id2) != DMD_OK) return 0;
    return 1;
}

static void free_pki(pki_set *p) {
    dmd_identity_free(p->id1);
    dmd_identity_free(p->id2);
    dmd_test_pki_free(p->pki);
}

static dmd_server *new_server(const pki_set *p, const char *server_id, const dmd_identity *id,
                              host *h) {
    dmd_server_config config;
    memset(&config, 0, sizeof config);
    config.server_id = server_id;
    config.listen_address = "127.0.0.1:0";
    config.cert_pem = dmd_identity_cert_pem(id);
    config.key_pem = dmd_identity_key_pem(id);
    config.trust_pem = dmd_test_pki_ca_pem(p->pki);
    dmd_host_callbacks cb = callbacks_for(h);
    dmd_server *s = NULL;
    CHECK_RC(dmd_server_new(&config, &cb, &s), DMD_OK);
    return s;
}

/* Tells `s` that its one peer `peer_id` listens on `port`. */
static void set_peer(dmd_server *s, const char *peer_id, uint16_t port) {
    char endpoint[256], address[64];
    snprintf(endpoint, sizeof endpoint, "https://%s:%u/dm-delegation", peer_id, (unsigned)port);
    snprintf(address, sizeof address, "127.0.0.1:%u", (unsigned)port);
    dmd_peer peer = {peer_id, endpoint, address};
    CHECK_RC(dmd_server_set_peers(s, &peer, 1), DMD_OK);
}

static char *dump(const dmd_sim_device *d) {
    size_t needed = 0;
    if (dmd_sim_device_dump(d, NULL, 0, &needed) != DMD_ERR_BUFFER_TOO_SMALL) return NULL;
    char *buf = malloc(needed);
    if (buf == NULL) return NULL;
    if (dmd_sim_device_dump(d, buf, needed, &needed) != DMD_OK) {
        free(buf);
        return NULL;
    }
    return buf;
}

static const char *state_name(dmd_state s) {
    switch (s) {
    case DMD_STATE_COMPLETED: return "COMPLETED";
    case DMD_STATE_ROLLED_BACK: return "ROLLED_BACK";
    case DMD_STATE_REJECTED: return "REJECTED";
    case DMD_STATE_ROLLBACK_FAILED: return "ROLLBACK_FAILED";
    case DMD_STATE_NONE: return "NONE";
    default: return "(running)";
    }
}

/* Runs one delegation between two C-hosted servers. refuse_write: DMS-1's execute
 * callback refuses that write (0: none). */
static void run(const pki_set *p, uint8_t method, dmd_delegation_type type, int refuse_write) {
    char name[128];
    snprintf(name, sizeof name, "two C-hosted servers: method %u %s%s", (unsigned)method,
             type == DMD_DELEGATION_TYPE_FULL ? "Full" : "Partial",
             refuse_write ? ", 3rd write refused (425) -> both ROLLED_BACK, device unchanged"
                          : " -> both COMPLETED");
    begin(name);
    dmd_sim_device *device = NULL;
    CHECK_RC(dmd_sim_device_new(DEVICE, "Acme", "Phone X", DMS1, "https://dms1.operator.example/dm",
                                "client-secret-1", "server-secret-1", &device),
             DMD_OK);
    host h1 = {DMS1, device, PTHREAD_MUTEX_INITIALIZER, 0, refuse_write, 0, 0};
    host h2 = {DMS2, device, PTHREAD_MUTEX_INITIALIZER, 0, 0, 0, 0};
    dmd_server *s1 = new_server(p, DMS1, p->id1, &h1);
    dmd_server *s2 = new_server(p, DMS2, p->id2, &h2);
    uint16_t port1 = 0, port2 = 0;
    CHECK_RC(dmd_server_local_port(s1, &port1), DMD_OK);
    CHECK_RC(dmd_server_local_port(s2, &port2), DMD_OK);
    CHECK(port1 != 0 && port2 != 0 && port1 != port2);
    set_peer(s1, DMS2, port2);
    set_peer(s2, DMS1, port1);
    char *before = dump(device);
    CHECK(before != NULL);

    dmd_subtree full = {".", "Get"};
    dmd_subtree partial = {"./Vendor/Apps", "Add+Get+Replace"};
    const dmd_subtree *tree = type == DMD_DELEGATION_TYPE_FULL ? &full : &partial;
    int dms1_starts = method == 1 || method == 3;
    dmd_server *initiator = dms1_starts ? s1 : s2;
    char id[DMD_SESSION_ID_MAX + 1];
    size_t needed = 0;
    CHECK_RC(dmd_server_start_delegation(initiator, dms1_starts ? DMS2 : DMS1, method, type,
                                         DEVICE, "Acme", "Phone X", tree, 1, id, sizeof id,
                                         &needed),
             DMD_OK);
    dmd_session_state st1, st2;
    memset(&st1, 0, sizeof st1);
    memset(&st2, 0, sizeof st2);
    CHECK_RC(dmd_server_wait(s1, id, WAIT_MS, &st1), DMD_OK);
    CHECK_RC(dmd_server_wait(s2, id, WAIT_MS, &st2), DMD_OK);
    dmd_state want = refuse_write ? DMD_STATE_ROLLED_BACK : DMD_STATE_COMPLETED;
    if (st1.state != want || st2.state != want)
        printf("    DMS-1 %s (%u %s), DMS-2 %s (%u %s)\n", state_name(st1.state),
               (unsigned)st1.reason_code, st1.reason, state_name(st2.state),
               (unsigned)st2.reason_code, st2.reason);
    CHECK(st1.state == want && st1.terminal == 1 && st1.role == DMD_ROLE_DELEGATING);
    CHECK(st2.state == want && st2.terminal == 1 && st2.role == DMD_ROLE_DELEGATED);
    CHECK(st1.method == method);

    size_t count = 0;
    CHECK_RC(dmd_server_session_count(s1, &count), DMD_OK);
    CHECK(count == 1);
    char listed[DMD_SESSION_ID_MAX + 1];
    CHECK_RC(dmd_server_session_id(s1, 0, listed, sizeof listed, &needed), DMD_OK);
    CHECK(strcmp(listed, id) == 0);
    CHECK_RC(dmd_server_session_id(s1, 1, listed, sizeof listed, &needed),
             DMD_ERR_INVALID_ARGUMENT);

    char *after = dump(device);
    CHECK(after != NULL);
    if (before != NULL && after != NULL) {
        if (refuse_write) {
            CHECK(strcmp(before, after) == 0);
            CHECK(st1.reason_code != 0);
        } else {
            CHECK(strcmp(before, after) != 0);
            CHECK(strstr(after, DMS2) != NULL);
        }
    }
    pthread_mutex_lock(&h1.lock);
    CHECK(h1.events > 0);
    CHECK(h1.completed_events == (refuse_write ? 0 : 1));
    if (refuse_write) CHECK(h1.writes > 3); /* the rollback wrote the inverses */
    pthread_mutex_unlock(&h1.lock);
    free(before);
    free(after);
    dmd_server_free(s1);
    dmd_server_free(s2);
    dmd_sim_device_free(device);
    end();
}

/* ---- arguments ------------------------------------------------------------------------ */

static void test_arguments(const pki_set *p) {
    begin("dmd_server and helpers: NULL and invalid arguments, outputs untouched");
    dmd_server *s = (dmd_server *)0x1;
    dmd_host_callbacks cb;
    memset(&cb, 0, sizeof cb);
    dmd_server_config config;
    memset(&config, 0, sizeof config);
    CHECK_RC(dmd_server_new(NULL, &cb, &s), DMD_ERR_NULL_ARGUMENT);
    CHECK_RC(dmd_server_new(&config, NULL, &s), DMD_ERR_NULL_ARGUMENT);
    CHECK_RC(dmd_server_new(&config, &cb, &s), DMD_ERR_NULL_ARGUMENT); /* server_id */
    config.server_id = "not a server id!";
    config.listen_address = "127.0.0.1:0";
    config.cert_pem = dmd_identity_cert_pem(p->id1);
    config.key_pem = dmd_identity_key_pem(p->id1);
    config.trust_pem = dmd_test_pki_ca_pem(p->pki);
    CHECK_RC(dmd_server_new(&config, &cb, &s), DMD_ERR_INVALID_ARGUMENT);
    config.server_id = DMS1;
    config.listen_address = "nowhere";
    CHECK_RC(dmd_server_new(&config, &cb, &s), DMD_ERR_INVALID_ARGUMENT);
    CHECK(s == (dmd_server *)0x1);

    config.listen_address = "127.0.0.1:0";
    s = NULL;
    CHECK_RC(dmd_server_new(&config, &cb, &s), DMD_OK);
    char id[DMD_SESSION_ID_MAX + 1];
    size_t needed = 0;
    dmd_subtree t = {".", "Get"};
    CHECK_RC(dmd_server_start_delegation(s, DMS2, 5, DMD_DELEGATION_TYPE_FULL, DEVICE, "A",
                                         "M", &t, 1, id, sizeof id, &needed),
             DMD_ERR_INVALID_ARGUMENT);
    dmd_subtree bad = {".", "Get+Fly"};
    CHECK_RC(dmd_server_start_delegation(s, DMS2, 1, DMD_DELEGATION_TYPE_FULL, DEVICE, "A",
                                         "M", &bad, 1, id, sizeof id, &needed),
             DMD_ERR_INVALID_ARGUMENT);
    CHECK_RC(dmd_server_start_delegation(s, DMS2, 1, DMD_DELEGATION_TYPE_FULL, DEVICE, "A",
                                         "M", &t, 1, NULL, 0, &needed),
             DMD_ERR_BUFFER_TOO_SMALL);
    CHECK(needed > 1 && needed <= DMD_SESSION_ID_MAX + 1);
    size_t count = 99;
    CHECK_RC(dmd_server_session_count(s, &count), DMD_OK);
    CHECK(count == 0); /* too small a buffer started nothing */
    /* No peers yet: the NOTIF cannot be sent. */
    CHECK_RC(dmd_server_start_delegation(s, DMS2, 1, DMD_DELEGATION_TYPE_FULL, DEVICE, "A",
                                         "M", &t, 1, id, sizeof id, &needed),
             DMD_ERR_TRANSPORT);
    dmd_session_state st;
    CHECK_RC(dmd_server_wait(s, "no-such-session", 0, &st), DMD_ERR_UNKNOWN_SESSION);
    CHECK_RC(dmd_server_wait(s, NULL, 0, &st), DMD_ERR_NULL_ARGUMENT);
    CHECK_RC(dmd_server_cancel(s, "no-such-session"), DMD_ERR_UNKNOWN_SESSION);
    CHECK_RC(dmd_server_local_port(s, NULL), DMD_ERR_NULL_ARGUMENT);
    CHECK_RC(dmd_server_set_peers(s, NULL, 1), DMD_ERR_NULL_ARGUMENT);
    dmd_peer plain = {DMS2, "http://dms2.enterprise.example:1/dm-delegation", NULL};
    CHECK_RC(dmd_server_set_peers(s, &plain, 1), DMD_ERR_TRANSPORT);
    size_t confirmed = 7;
    CHECK_RC(dmd_server_client_connected(s, DEVICE, &confirmed), DMD_OK);
    CHECK(confirmed == 0);
    dmd_server_free(s);
    dmd_server_free(NULL);

    CHECK_RC(dmd_dmacc_simple_tnds(DMS2, "https://x/dm", "c", "s", NULL, 0, &needed),
             DMD_ERR_BUFFER_TOO_SMALL);
    CHECK_RC(dmd_dmacc_simple_tnds(NULL, "https://x/dm", "c", "s", NULL, 0, &needed),
             DMD_ERR_NULL_ARGUMENT);
    CHECK_RC(dmd_reply_set_text(NULL, "x"), DMD_ERR_NULL_ARGUMENT);
    CHECK(dmd_command_get_kind(NULL) == 0);
    CHECK(dmd_command_uri(NULL) == NULL);
    CHECK(dmd_sim_device_execute(NULL, DMS1, NULL, NULL) == 400);
    CHECK(dmd_sim_device_open_session(NULL, DMS1) == 400);
    CHECK_RC(dmd_test_pki_new(NULL, NULL), DMD_ERR_NULL_ARGUMENT);
    CHECK(dmd_test_pki_ca_pem(NULL) == NULL);
    dmd_test_pki_free(NULL);
    dmd_identity_free(NULL);
    dmd_sim_device_free(NULL);
    end();
}

/* A host whose execute callback renders the command as SyncML and forwards it. */
static void test_command_accessors(void) {
    begin("dmd_command accessors and dmd_command_syncml in a callback");
    /* Exercised through the sim device: one write reaches a callback in run(); here the
     * accessors' NULL behaviour only (their values are checked via the delegations). */
    size_t needed = 0;
    CHECK_RC(dmd_command_syncml(NULL, 1, NULL, 0, &needed), DMD_ERR_NULL_ARGUMENT);
    CHECK(dmd_command_parent(NULL) == NULL);
    CHECK(dmd_command_text(NULL) == NULL);
    CHECK(dmd_command_values(NULL) == 0);
    end();
}

int main(int argc, char **argv) {
    /* The library writes to sockets whose peer may have closed: a C process must ignore
     * SIGPIPE (see dmd_server_new). */
    signal(SIGPIPE, SIG_IGN);
    int quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
    pki_set p;
    if (!make_pki(&p)) {
        printf("test PKI: %s\n", last_error());
        return 1;
    }
    test_arguments(&p);
    test_command_accessors();
    if (quick) {
        run(&p, 1, DMD_DELEGATION_TYPE_FULL, 0);
    } else {
        for (uint8_t method = 1; method <= 2; method++) {
            run(&p, method, DMD_DELEGATION_TYPE_FULL, 0);
            run(&p, method, DMD_DELEGATION_TYPE_PARTIAL, 0);
        }
    }
    run(&p, 1, DMD_DELEGATION_TYPE_FULL, 3);
    free_pki(&p);
    printf("test_server: %d passed, %d failed\n", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}
