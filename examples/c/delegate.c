/*
 * One C DM Server (DMS-1, dms1.operator.example) delegates a simulated device to another
 * (DMS-2, dms2.enterprise.example) over HTTPS with mutual TLS, Method 1, Partial
 * (./Vendor/Apps), printing every event. Both servers run in this process on 127.0.0.1
 * with ports chosen by the system; their host callbacks forward to one dmd_sim_device.
 * Exit status 0 when both servers end COMPLETED.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "dmdelegate.h"

#define DMS1 "dms1.operator.example"
#define DMS2 "dms2.enterprise.example"
#define DEVICE "IMEI:490154203237518"

typedef struct {
    const char *server_id;
    dmd_sim_device *device;
} host;

/* Callbacks may run concurrently (different sessions): printing is serialised. */
static pthread_mutex_t print_lock = PTHREAD_MUTEX_INITIALIZER;

static int on_accept(void *userdata, const dmd_offer *offer, uint16_t *reject_code) {
    const host *h = userdata;
    (void)reject_code;
    pthread_mutex_lock(&print_lock);
    printf("[%s] offer from %s: method %u, device %s, %zu subtree(s)\n", h->server_id,
           offer->peer, (unsigned)offer->method, offer->device_id, offer->subtree_count);
    pthread_mutex_unlock(&print_lock);
    return 1;
}

static uint16_t on_execute(void *userdata, const char *device_id, const dmd_command *command,
                           dmd_reply *reply) {
    const host *h = userdata;
    (void)device_id;
    uint16_t status = dmd_sim_device_execute(h->device, h->server_id, command, reply);
    pthread_mutex_lock(&print_lock);
    printf("[%s]   execute on %s -> %u\n", h->server_id, dmd_command_uri(command),
           (unsigned)status);
    pthread_mutex_unlock(&print_lock);
    return status;
}

static uint16_t on_open_dm_session(void *userdata, const char *device_id) {
    const host *h = userdata;
    (void)device_id;
    return dmd_sim_device_open_session(h->device, h->server_id);
}

static uint16_t on_dm_account(void *userdata, const char *device_id, dmd_reply *reply) {
    const host *h = userdata;
    char tnds[4096];
    size_t needed = 0;
    (void)device_id;
    if (dmd_dmacc_simple_tnds(h->server_id, "https://dms2.enterprise.example/dm", "client-2",
                              "server-2", tnds, sizeof tnds, &needed) != DMD_OK)
        return 500;
    return dmd_reply_set_text(reply, tnds) == DMD_OK ? 200 : 500;
}

static void on_event(void *userdata, const dmd_event *e) {
    const host *h = userdata;
    static const char *kinds[] = {"?", "state changed", "completed", "failed", "rolled back",
                                  "rollback incomplete", "rejected", "expired"};
    pthread_mutex_lock(&print_lock);
    if (e->kind == DMD_EVENT_STATE_CHANGED)
        printf("[%s] event: session %s state %d -> %d\n", h->server_id, e->session_id,
               (int)e->from, (int)e->to);
    else
        printf("[%s] event: session %s %s %s\n", h->server_id, e->session_id,
               kinds[(int)e->kind < 8 ? (int)e->kind : 0], e->reason);
    pthread_mutex_unlock(&print_lock);
}

static void fail(const char *what, dmd_result rc) {
    char detail[512];
    dmd_last_error_message(detail, sizeof detail);
    fprintf(stderr, "%s: %s (%s)\n", what, dmd_result_message(rc), detail);
}

static dmd_server *start(const dmd_test_pki *pki, const dmd_identity *id, host *h) {
    dmd_server_config config;
    dmd_host_callbacks cb;
    dmd_server *s = NULL;
    memset(&config, 0, sizeof config);
    memset(&cb, 0, sizeof cb);
    config.server_id = h->server_id;
    config.listen_address = "127.0.0.1:0";
    config.cert_pem = dmd_identity_cert_pem(id);
    config.key_pem = dmd_identity_key_pem(id);
    config.trust_pem = dmd_test_pki_ca_pem(pki);
    cb.userdata = h;
    cb.accept = on_accept;
    cb.execute = on_execute;
    cb.open_dm_session = on_open_dm_session;
    cb.dm_account = on_dm_account;
    cb.on_event = on_event;
    dmd_result rc = dmd_server_new(&config, &cb, &s);
    if (rc != DMD_OK) fail("dmd_server_new", rc);
    return s;
}

static int connect_to(dmd_server *s, const char *peer_id, dmd_server *peer) {
    uint16_t port = 0;
    char endpoint[256], address[64];
    if (dmd_server_local_port(peer, &port) != DMD_OK) return 0;
    snprintf(endpoint, sizeof endpoint, "https://%s:%u/dm-delegation", peer_id, (unsigned)port);
    snprintf(address, sizeof address, "127.0.0.1:%u", (unsigned)port);
    dmd_peer p = {.server_id = peer_id, .endpoint = endpoint, .address = address};
    dmd_result rc = dmd_server_set_peers(s, &p, 1);
    if (rc != DMD_OK) fail("dmd_server_set_peers", rc);
    return rc == DMD_OK;
}

int main(void) {
    int ok = 0;
    dmd_test_pki *pki = NULL;
    dmd_identity *id1 = NULL, *id2 = NULL;
    dmd_sim_device *device = NULL;
    dmd_server *s1 = NULL, *s2 = NULL;
    /* The library writes to sockets whose peer may have closed: ignore SIGPIPE. */
    signal(SIGPIPE, SIG_IGN);
    printf("dmdelegate %s\n", dmd_version());
    if (dmd_test_pki_new("example CA", &pki) != DMD_OK ||
        dmd_test_pki_issue(pki, DMS1, &id1) != DMD_OK ||
        dmd_test_pki_issue(pki, DMS2, &id2) != DMD_OK ||
        dmd_sim_device_new(DEVICE, "Acme", "Phone X", DMS1, "https://dms1.operator.example/dm",
                           "client-1", "server-1", &device) != DMD_OK) {
        fail("setup", DMD_ERR_FAILED);
        goto out;
    }
    host h1 = {DMS1, device}, h2 = {DMS2, device};
    s1 = start(pki, id1, &h1);
    s2 = start(pki, id2, &h2);
    if (s1 == NULL || s2 == NULL || !connect_to(s1, DMS2, s2) || !connect_to(s2, DMS1, s1))
        goto out;

    dmd_subtree apps = {"./Vendor/Apps", "Add+Get+Replace"};
    dmd_delegation_request request = {
        .peer = DMS2,
        .method = 1,
        .delegation_type = DMD_DELEGATION_TYPE_PARTIAL,
        .device_id = DEVICE,
        .manufacturer = "Acme",
        .model = "Phone X",
        .subtrees = &apps,
        .subtree_count = 1,
    }; /* expires_ms 0: permanent; session_id NULL: a fresh id */
    char id[DMD_SESSION_ID_MAX + 1];
    size_t needed = 0;
    dmd_result rc = dmd_server_start_delegation(s1, &request, id, sizeof id, &needed);
    if (rc != DMD_OK) {
        fail("dmd_server_start_delegation", rc);
        goto out;
    }
    dmd_session_state st1, st2;
    if (dmd_server_wait(s1, id, 60000, &st1) != DMD_OK ||
        dmd_server_wait(s2, id, 60000, &st2) != DMD_OK) {
        fail("dmd_server_wait", DMD_ERR_FAILED);
        goto out;
    }
    printf("session %s: DMS-1 state %d, DMS-2 state %d (reason %u %s)\n", id, (int)st1.state,
           (int)st2.state, (unsigned)(st1.reason_code ? st1.reason_code : st2.reason_code),
           st1.reason_code ? st1.reason : st2.reason);
    ok = st1.state == DMD_STATE_COMPLETED && st2.state == DMD_STATE_COMPLETED;
    printf("%s\n", ok ? "delegation COMPLETED" : "delegation did not complete");
out:
    dmd_server_free(s1);
    dmd_server_free(s2);
    dmd_sim_device_free(device);
    dmd_identity_free(id1);
    dmd_identity_free(id2);
    dmd_test_pki_free(pki);
    return ok ? 0 : 1;
}
