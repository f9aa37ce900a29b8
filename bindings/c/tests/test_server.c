/*
 * Tests of dmd_server over HTTPS with mutual TLS, with host callbacks written in C
 * (servers.h): two servers in one process on 127.0.0.1 port 0 under a dmd_test_pki, both
 * hosts forwarding to one simulated device (dmd_sim_device).
 *
 * - Methods 1-4 x Full/Partial -> both COMPLETED, DMS-2 holds the device (dump checked);
 *   Method 1 Partial again with explicit dmd_https_options on both servers (one request per
 *   peer, batches of up to 8, 2 attempts).
 *   Methods 3/4: DMS-2's host gives the Bootstrap Server URL and its DM account; the
 *   account is registered at that URL on a dmd_sim_bootstrap_server and the device is
 *   routed to it and to DMS-2's server (dmd_sim_device_route_bootstrap).
 * - DMS-1's execute callback refuses the 3rd write (425) -> both ROLLED_BACK (130), the
 *   device dump equals the one before.
 * - The responder's accept callback refuses (Method 1: 101, Method 2: 104) -> both
 *   REJECTED with that code, nothing executed.
 * - dmd_peer.identity naming the wrong TLS name at DMS-1 -> DMS-2's answers are refused
 *   (403): DMS-2 ROLLED_BACK 170 (peer unreachable), DMS-1 ROLLED_BACK 140 (timeout).
 * - NULL and invalid arguments: the HTTPS configuration (dmd_https_options with a body or
 *   batch cap under 1024 -> DMD_ERR_INVALID_ARGUMENT naming https.<field>),
 *   dmd_server_set_peers, the session functions, the Bootstrap Server helpers,
 *   dmd_sim_device_route_bootstrap.
 *
 * Usage: test_server [--quick]   (quick: Method 1 Full and Method 3 Partial of the eight)
 * Prints "test_server: N passed, M failed"; exit status 0 when none failed.
 */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>

#include "servers.h"

/* ---- Methods 1-4 x Full/Partial ---------------------------------------------------- */

/* `https`: NULL for the default HTTPS settings, or both servers' settings (`what` names
 * them in the case's name). */
static void run_method(const pki_set *p, uint8_t method, dmd_delegation_type type,
                       const dmd_https_options *https, const char *what) {
    int full = type == DMD_DELEGATION_TYPE_FULL;
    int bootstrap = method >= 3;
    int dms1_starts = method == 1 || method == 3;
    char name[256];
    snprintf(name, sizeof name,
             "mTLS%s%s: method %u %s -> both COMPLETED, DMS-2 holds the device",
             https != NULL ? ", " : "", https != NULL ? what : "", (unsigned)method,
             full ? "Full" : "Partial");
    begin(name);
    dmd_sim_device *device = new_device();
    host h1, h2;
    host_init(&h1, DMS1, device);
    host_init(&h2, DMS2, device);
    dmd_host_callbacks cb1 = callbacks_for(&h1), cb2 = callbacks_for(&h2);
    dmd_server *s1 = https_server_with(p, DMS1, p->id1, &cb1, NULL, https);
    dmd_server *s2 = https_server_with(p, DMS2, p->id2, &cb2, NULL, https);
    set_peer(s1, DMS2, s2, DMS2); /* identity given explicitly: the ServerID itself */
    set_peer(s2, DMS1, s1, NULL);
    dmd_sim_bootstrap_server *bs = NULL;
    if (bootstrap) {
        char tnds[4096];
        CHECK_RC(dmd_sim_bootstrap_server_new(&bs), DMD_OK);
        CHECK_RC(account_tnds(DMS2, tnds, sizeof tnds), DMD_OK);
        CHECK_RC(dmd_sim_bootstrap_server_register(bs, BOOTSTRAP_URL, tnds), DMD_OK);
        CHECK_RC(dmd_sim_device_route_bootstrap(device, bs, s2), DMD_OK);
    }
    char *before = dump(device);
    CHECK(before != NULL && !has_account(before, DMS2) && acls_naming(before, DMS2) == 0);

    dmd_delegation_request r = request_for(dms1_starts ? DMS2 : DMS1, method, type);
    char id[DMD_SESSION_ID_MAX + 1];
    size_t needed = 0;
    CHECK_RC(dmd_server_start_delegation(dms1_starts ? s1 : s2, &r, id, sizeof id, &needed),
             DMD_OK);
    CHECK(needed == strlen(id) + 1);
    dmd_session_state st1 = wait_end(s1, id);
    dmd_session_state st2 = wait_end(s2, id);
    CHECK_STATE(st1, DMD_STATE_COMPLETED, 0);
    CHECK_STATE(st2, DMD_STATE_COMPLETED, 0);
    CHECK(st1.role == DMD_ROLE_DELEGATING && st2.role == DMD_ROLE_DELEGATED);
    CHECK(st1.method == method && st2.method == method);
    CHECK(st1.reason[0] == '\0' && st2.reason[0] == '\0');
    CHECK(st1.expires_ms == 0 && st2.expires_ms == 0);
    CHECK(st1.deadline_ms == 0 && st2.deadline_ms == 0);
    CHECK(st1.pending_operations == 0 && st2.pending_operations == 0);

    /* Each server keeps the one session. */
    size_t count = 0;
    char listed[DMD_SESSION_ID_MAX + 1];
    CHECK_RC(dmd_server_session_count(s1, &count), DMD_OK);
    CHECK(count == 1);
    CHECK_RC(dmd_server_session_count(s2, &count), DMD_OK);
    CHECK(count == 1);
    CHECK_RC(dmd_server_session_id(s2, 0, listed, sizeof listed, &needed), DMD_OK);
    CHECK(strcmp(listed, id) == 0);

    /* What the hosts saw: the responder's offer, the callbacks each role needs. */
    host v1 = host_view(&h1), v2 = host_view(&h2);
    const host *responder = dms1_starts ? &v2 : &v1;
    CHECK(responder->offers == 1 && responder->offer_method == method);
    CHECK(responder->offer_type == type && responder->offer_preset_code == 101);
    CHECK(responder->offer_role == (dms1_starts ? DMD_ROLE_DELEGATED : DMD_ROLE_DELEGATING));
    CHECK(strcmp(responder->offer_peer, dms1_starts ? DMS1 : DMS2) == 0);
    CHECK(responder->offer_subtrees == 1 && responder->offer_expires_ms == 0);
    CHECK(strcmp(responder->offer_uri, full ? "." : "./Vendor/Apps") == 0);
    CHECK(strcmp(responder->offer_rights, full ? "Get" : "Add+Get+Replace") == 0);
    CHECK((dms1_starts ? v1.offers : v2.offers) == 0);
    CHECK(v1.writes > 0 && v1.trees > 0 && v2.writes == 0 && v2.trees == 0);
    CHECK(v2.accounts == 1 && v1.accounts == 0);
    CHECK(v2.urls == (bootstrap ? 1 : 0) && v1.urls == 0);
    CHECK(v2.opens == (bootstrap ? 0 : 1) && v1.opens == 0);
    CHECK(v1.completed == 1 && v2.completed == 1 && v1.state_changes > 0);
    CHECK(v1.failed + v2.failed + v1.rolled_back + v2.rolled_back == 0);

    /* The device: DMS-2 has its account and rights; Full removed DMS-1 entirely. */
    char *after = dump(device);
    CHECK(after != NULL);
    if (after != NULL) {
        char acl[512];
        CHECK(has_account(after, DMS2));
        CHECK(acls_naming(after, DMS2) > 0);
        if (full) {
            /* Everything DMS-1 held is DMS-2's; DMS-1's account is deleted, which removes
             * it from every ACL. */
            CHECK(!has_account(after, DMS1));
            CHECK(acls_naming(after, DMS1) == 0);
            acl_of(after, "Vendor", acl, sizeof acl);
            CHECK(strcmp(acl, "Add=" DMS2 "&amp;Delete=" DMS2 "&amp;Get=" DMS2 "&amp;Replace=" DMS2) ==
                  0);
            acl_of(after, "Network", acl, sizeof acl);
            CHECK(strstr(acl, "Replace=" DMS2) != NULL);
        } else {
            /* ./Vendor/Apps: DMS-2 gets Add, Get and Replace next to DMS-1; nothing else. */
            CHECK(has_account(after, DMS1));
            acl_of(after, "Apps", acl, sizeof acl);
            CHECK(strcmp(acl, "Add=" DMS1 "+" DMS2 "&amp;Delete=" DMS1 "&amp;Get=" DMS1 "+" DMS2
                              "&amp;Replace=" DMS1 "+" DMS2) == 0);
            acl_of(after, "Network", acl, sizeof acl);
            CHECK(strstr(acl, DMS2) == NULL);
            acl_of(after, "Vendor", acl, sizeof acl);
            CHECK(strstr(acl, DMS2) == NULL);
        }
        /* The marker (Methods 1/2) or the bootstrap trigger (3/4) is gone. */
        CHECK(strstr(after, "NoAutoSession") == NULL);
        CHECK(strstr(after, "<NodeName>DMDelegate</NodeName>") == NULL);
        if (g_case_failed) printf("    device after: %s\n", after);
    }
    free(before);
    free(after);
    dmd_server_free(s1);
    dmd_server_free(s2);
    dmd_sim_device_free(device);
    dmd_sim_bootstrap_server_free(bs);
    end();
}

/* ---- a refused write, a refused offer, a peer with the wrong TLS name ------------------ */

static void run_refused_write(const pki_set *p) {
    begin("mTLS: method 1 Full, DMS-1's 3rd write refused (425) -> both ROLLED_BACK 130, "
          "device unchanged");
    dmd_sim_device *device = new_device();
    host h1, h2;
    host_init(&h1, DMS1, device);
    host_init(&h2, DMS2, device);
    h1.refuse_write = 3;
    dmd_host_callbacks cb1 = callbacks_for(&h1), cb2 = callbacks_for(&h2);
    dmd_server *s1 = https_server(p, DMS1, p->id1, &cb1, NULL);
    dmd_server *s2 = https_server(p, DMS2, p->id2, &cb2, NULL);
    set_peer(s1, DMS2, s2, NULL);
    set_peer(s2, DMS1, s1, NULL);
    char *before = dump(device);
    dmd_delegation_request r = request_for(DMS2, 1, DMD_DELEGATION_TYPE_FULL);
    char id[DMD_SESSION_ID_MAX + 1];
    size_t needed = 0;
    CHECK_RC(dmd_server_start_delegation(s1, &r, id, sizeof id, &needed), DMD_OK);
    dmd_session_state st1 = wait_end(s1, id), st2 = wait_end(s2, id);
    CHECK_STATE(st1, DMD_STATE_ROLLED_BACK, 130);
    CHECK_STATE(st2, DMD_STATE_ROLLED_BACK, 130);
    CHECK(strstr(st1.reason, "425") != NULL || strstr(st1.reason, "refused") != NULL);
    CHECK(st1.pending_operations == 0 && st1.deadline_ms == 0);
    CHECK_DEVICE_UNCHANGED(device, before);
    host v1 = host_view(&h1), v2 = host_view(&h2);
    CHECK(v1.writes > 3); /* the rollback wrote the inverses of writes 1 and 2 */
    CHECK(v1.failed == 1 && v1.rolled_back == 1 && v1.completed == 0 && v1.event_reason == 130);
    CHECK(v2.failed == 1 && v2.rolled_back == 1 && v2.completed == 0 && v2.event_reason == 130);
    CHECK(v2.opens == 0);
    /* An ended session cannot be cancelled nor its rollback retried. */
    dmd_session_state out;
    memset(&out, 0x5a, sizeof out);
    CHECK_RC(dmd_server_cancel(s1, id, &out), DMD_ERR_INVALID_STATE);
    CHECK_RC(dmd_server_retry_rollback(s1, id, &out), DMD_ERR_INVALID_STATE);
    CHECK_RC(dmd_server_retry_rollback(s2, id, NULL), DMD_ERR_INVALID_STATE);
    CHECK(out.state == (dmd_state)0x5a5a5a5a); /* no output on failure */
    free(before);
    dmd_server_free(s1);
    dmd_server_free(s2);
    dmd_sim_device_free(device);
    end();
}

static void run_rejected(const pki_set *p, uint8_t method, uint16_t code) {
    char name[160];
    snprintf(name, sizeof name,
             "mTLS: method %u, the responder's accept refuses with %u -> both REJECTED %u, "
             "nothing executed",
             (unsigned)method, (unsigned)code, (unsigned)code);
    begin(name);
    int dms1_starts = method == 1;
    dmd_sim_device *device = new_device();
    host h1, h2;
    host_init(&h1, DMS1, device);
    host_init(&h2, DMS2, device);
    (dms1_starts ? &h2 : &h1)->reject_code = code;
    dmd_host_callbacks cb1 = callbacks_for(&h1), cb2 = callbacks_for(&h2);
    dmd_server *s1 = https_server(p, DMS1, p->id1, &cb1, NULL);
    dmd_server *s2 = https_server(p, DMS2, p->id2, &cb2, NULL);
    set_peer(s1, DMS2, s2, NULL);
    set_peer(s2, DMS1, s1, NULL);
    char *before = dump(device);
    dmd_delegation_request r =
        request_for(dms1_starts ? DMS2 : DMS1, method, DMD_DELEGATION_TYPE_PARTIAL);
    char id[DMD_SESSION_ID_MAX + 1];
    size_t needed = 0;
    CHECK_RC(dmd_server_start_delegation(dms1_starts ? s1 : s2, &r, id, sizeof id, &needed),
             DMD_OK);
    dmd_session_state st1 = wait_end(s1, id), st2 = wait_end(s2, id);
    CHECK_STATE(st1, DMD_STATE_REJECTED, code);
    CHECK_STATE(st2, DMD_STATE_REJECTED, code);
    CHECK(strstr(st1.reason, "accept") != NULL && strstr(st2.reason, "accept") != NULL);
    CHECK_DEVICE_UNCHANGED(device, before);
    host v1 = host_view(&h1), v2 = host_view(&h2);
    CHECK(v1.writes == 0 && v1.trees == 0 && v1.acls == 0);
    CHECK(v2.accounts == 0); /* refused before DMS-2 was asked for an account... */
    CHECK(v2.opens == 0);
    CHECK(v1.rejected == 1 && v2.rejected == 1);
    CHECK(v1.event_reason == code && v2.event_reason == code);
    CHECK(v1.completed + v2.completed + v1.rolled_back + v2.rolled_back == 0);
    free(before);
    dmd_server_free(s1);
    dmd_server_free(s2);
    dmd_sim_device_free(device);
    end();
}

static void run_wrong_identity(const pki_set *p) {
    begin("mTLS: DMS-1's dmd_peer.identity for DMS-2 names another TLS name -> DMS-2's "
          "answers refused (ROLLED_BACK 170), DMS-1 times out (140)");
    dmd_sim_device *device = new_device();
    host h1, h2;
    host_init(&h1, DMS1, device);
    host_init(&h2, DMS2, device);
    dmd_host_callbacks cb1 = callbacks_for(&h1), cb2 = callbacks_for(&h2);
    dmd_timeouts t;
    memset(&t, 0, sizeof t);
    t.response_ms = 3000; /* DMS-2 gives up (403, at once) well before DMS-1 does */
    dmd_server *s1 = https_server(p, DMS1, p->id1, &cb1, &t);
    dmd_server *s2 = https_server(p, DMS2, p->id2, &cb2, NULL);
    /* s1 accepts a client certificate as DMS-2's only when it carries this name; its own
     * requests to DMS-2 still check the endpoint's host name (see the report). */
    set_peer(s1, DMS2, s2, "someone-else.enterprise.example");
    set_peer(s2, DMS1, s1, NULL);
    char *before = dump(device);
    dmd_delegation_request r = request_for(DMS2, 1, DMD_DELEGATION_TYPE_PARTIAL);
    char id[DMD_SESSION_ID_MAX + 1];
    size_t needed = 0;
    CHECK_RC(dmd_server_start_delegation(s1, &r, id, sizeof id, &needed), DMD_OK);
    dmd_session_state st2 = wait_end(s2, id);
    CHECK_STATE(st2, DMD_STATE_ROLLED_BACK, 170);
    CHECK(strstr(st2.reason, "403") != NULL);
    dmd_session_state st1 = wait_end(s1, id);
    CHECK_STATE(st1, DMD_STATE_ROLLED_BACK, 140);
    host v1 = host_view(&h1), v2 = host_view(&h2);
    CHECK(v2.offers == 1 && v1.writes == 0 && v1.trees == 0);
    CHECK_DEVICE_UNCHANGED(device, before);
    free(before);
    dmd_server_free(s1);
    dmd_server_free(s2);
    dmd_sim_device_free(device);
    end();
}

/* ---- arguments ------------------------------------------------------------------------- */

static dmd_server_config https_config(const pki_set *p) {
    dmd_server_config c;
    memset(&c, 0, sizeof c);
    c.server_id = DMS1;
    c.listen_address = "127.0.0.1:0";
    c.cert_pem = dmd_identity_cert_pem(p->id1);
    c.key_pem = dmd_identity_key_pem(p->id1);
    c.trust_pem = dmd_test_pki_ca_pem(p->pki);
    return c;
}

static void test_config_arguments(const pki_set *p) {
    begin("dmd_server_new (HTTPS): NULL and invalid configuration fields, *out untouched");
    dmd_server *const sentinel = (dmd_server *)0x1;
    dmd_server *s = sentinel;
    dmd_host_callbacks cb;
    memset(&cb, 0, sizeof cb);
    dmd_server_config c = https_config(p);
    CHECK_RC(dmd_server_new(NULL, &cb, &s), DMD_ERR_NULL_ARGUMENT);
    CHECK_RC(dmd_server_new(&c, NULL, &s), DMD_ERR_NULL_ARGUMENT);
    CHECK_RC(dmd_server_new(&c, &cb, NULL), DMD_ERR_NULL_ARGUMENT);
    const char **fields[] = {&c.server_id, &c.listen_address, &c.cert_pem, &c.key_pem,
                             &c.trust_pem};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        c = https_config(p);
        *fields[i] = NULL;
        CHECK_RC(dmd_server_new(&c, &cb, &s), DMD_ERR_NULL_ARGUMENT);
        CHECK(strstr(last_error(), "config->") != NULL);
    }
    struct {
        const char *what;
        dmd_server_config config;
        dmd_result want;
    } bad[12];
    size_t n = 0;
    bad[n].what = "ServerID";
    bad[n].config = https_config(p);
    bad[n].config.server_id = "not a server id!";
    bad[n++].want = DMD_ERR_INVALID_ARGUMENT;
    bad[n].what = "listen address";
    bad[n].config = https_config(p);
    bad[n].config.listen_address = "nowhere";
    bad[n++].want = DMD_ERR_INVALID_ARGUMENT;
    bad[n].what = "certificate PEM";
    bad[n].config = https_config(p);
    bad[n].config.cert_pem = "not PEM";
    bad[n++].want = DMD_ERR_INVALID_ARGUMENT;
    bad[n].what = "key of another certificate";
    bad[n].config = https_config(p);
    bad[n].config.key_pem = dmd_identity_key_pem(p->id2);
    bad[n++].want = DMD_ERR_INVALID_ARGUMENT;
    bad[n].what = "trust PEM";
    bad[n].config = https_config(p);
    bad[n].config.trust_pem = "not PEM either";
    bad[n++].want = DMD_ERR_INVALID_ARGUMENT;
    bad[n].what = "ServerID not UTF-8";
    bad[n].config = https_config(p);
    bad[n].config.server_id = "dms\xff.example";
    bad[n++].want = DMD_ERR_INVALID_ARGUMENT;
    bad[n].what = "store path not UTF-8";
    bad[n].config = https_config(p);
    bad[n].config.store_path = "/tmp/\xff.db";
    bad[n++].want = DMD_ERR_INVALID_ARGUMENT;
    bad[n].what = "store path in a missing directory";
    bad[n].config = https_config(p);
    bad[n].config.store_path = "/nonexistent-dmdelegate-dir/sub/sessions.db";
    bad[n++].want = DMD_ERR_STORE;
    for (size_t i = 0; i < n; i++) {
        s = sentinel;
        dmd_result rc = dmd_server_new(&bad[i].config, &cb, &s);
        if (rc != bad[i].want)
            printf("    %s: got %d (%s), expected %d\n", bad[i].what, (int)rc, last_error(),
                   (int)bad[i].want);
        CHECK(rc == bad[i].want);
        if (rc == DMD_OK) dmd_server_free(s);
        else CHECK(s == sentinel);
        char msg[8];
        CHECK(dmd_last_error_message(msg, sizeof msg) > 1);
    }

    /* Peers in the configuration. */
    dmd_peer peer = {DMS2, "https://dms2.enterprise.example:4431/dm-delegation", NULL, NULL};
    dmd_peer two[2] = {peer, peer};
    c = https_config(p);
    c.peer_count = 1;
    CHECK_RC(dmd_server_new(&c, &cb, &s), DMD_ERR_NULL_ARGUMENT); /* peers NULL */
    c.peers = &peer;
    peer.server_id = NULL;
    CHECK_RC(dmd_server_new(&c, &cb, &s), DMD_ERR_NULL_ARGUMENT);
    peer.server_id = DMS2;
    peer.endpoint = NULL;
    CHECK_RC(dmd_server_new(&c, &cb, &s), DMD_ERR_NULL_ARGUMENT);
    peer.endpoint = "http://dms2.enterprise.example:4431/dm-delegation";
    CHECK_RC(dmd_server_new(&c, &cb, &s), DMD_ERR_INVALID_ARGUMENT);
    peer.endpoint = two[0].endpoint;
    peer.address = "not an address";
    CHECK_RC(dmd_server_new(&c, &cb, &s), DMD_ERR_INVALID_ARGUMENT);
    peer.address = NULL;
    peer.identity = "\xfe\xff";
    CHECK_RC(dmd_server_new(&c, &cb, &s), DMD_ERR_INVALID_ARGUMENT);
    peer.identity = NULL;
    c.peers = two;
    c.peer_count = 2;
    CHECK_RC(dmd_server_new(&c, &cb, &s), DMD_ERR_INVALID_ARGUMENT); /* ServerID twice */
    CHECK(s == sentinel);

    /* HTTPS settings that are not 0 but unusable: the field is named. */
    dmd_https_options https;
    memset(&https, 0, sizeof https);
    https.max_body_bytes = 100;
    c = https_config(p);
    c.https = &https;
    CHECK_RC(dmd_server_new(&c, &cb, &s), DMD_ERR_INVALID_ARGUMENT);
    CHECK(strstr(last_error(), "https.max_body_bytes") != NULL);
    if (strstr(last_error(), "https.max_body_bytes") == NULL)
        printf("    max_body_bytes 100: last error \"%s\"\n", last_error());
    https.max_body_bytes = 0;
    https.max_batch_bytes = 1023;
    CHECK_RC(dmd_server_new(&c, &cb, &s), DMD_ERR_INVALID_ARGUMENT);
    CHECK(strstr(last_error(), "https.max_batch_bytes") != NULL);
    CHECK(s == sentinel);

    /* Valid: peers in the configuration, every timeout and HTTPS setting 0 (the
     * defaults), identity set. */
    dmd_timeouts zero;
    memset(&zero, 0, sizeof zero);
    memset(&https, 0, sizeof https);
    peer.identity = DMS2;
    c.peers = &peer;
    c.peer_count = 1;
    c.timeouts = &zero;
    c.https = &https;
    s = NULL;
    CHECK_RC(dmd_server_new(&c, &cb, &s), DMD_OK);
    CHECK_RC(dmd_server_set_peers(s, &peer, 1), DMD_ERR_INVALID_STATE); /* already set */
    uint16_t port = 0;
    CHECK_RC(dmd_server_local_port(s, &port), DMD_OK);
    CHECK(port != 0);
    /* The same port twice: the address cannot be bound. */
    char listen[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%u", (unsigned)port);
    dmd_server_config taken = https_config(p);
    taken.listen_address = listen;
    dmd_server *other = sentinel;
    CHECK_RC(dmd_server_new(&taken, &cb, &other), DMD_ERR_TRANSPORT);
    CHECK(other == sentinel);
    dmd_server_free(s);
    end();
}

static void test_server_arguments(const pki_set *p) {
    begin("dmd_server_set_peers and the session functions: NULL and invalid arguments");
    dmd_host_callbacks cb;
    memset(&cb, 0, sizeof cb);
    dmd_server_config c = https_config(p);
    dmd_server *s = NULL;
    CHECK_RC(dmd_server_new(&c, &cb, &s), DMD_OK);

    dmd_peer peer = {DMS2, "https://dms2.enterprise.example:4431/dm-delegation", "127.0.0.1:4431",
                     NULL};
    dmd_peer bad = peer;
    CHECK_RC(dmd_server_set_peers(NULL, &peer, 1), DMD_ERR_NULL_ARGUMENT);
    CHECK_RC(dmd_server_set_peers(s, NULL, 1), DMD_ERR_NULL_ARGUMENT);
    bad.endpoint = "http://dms2.enterprise.example:4431/dm-delegation";
    CHECK_RC(dmd_server_set_peers(s, &bad, 1), DMD_ERR_INVALID_ARGUMENT);
    bad.endpoint = "not a URL";
    CHECK_RC(dmd_server_set_peers(s, &bad, 1), DMD_ERR_INVALID_ARGUMENT);
    bad = peer;
    bad.server_id = "bad id!";
    CHECK_RC(dmd_server_set_peers(s, &bad, 1), DMD_ERR_INVALID_ARGUMENT);
    bad = peer;
    bad.address = "127.0.0.1";
    CHECK_RC(dmd_server_set_peers(s, &bad, 1), DMD_ERR_INVALID_ARGUMENT);
    bad = peer;
    bad.identity = "\xff";
    CHECK_RC(dmd_server_set_peers(s, &bad, 1), DMD_ERR_INVALID_ARGUMENT);
    bad = peer;
    bad.server_id = NULL;
    CHECK_RC(dmd_server_set_peers(s, &bad, 1), DMD_ERR_NULL_ARGUMENT);
    dmd_peer twice[2] = {peer, peer};
    CHECK_RC(dmd_server_set_peers(s, twice, 2), DMD_ERR_INVALID_ARGUMENT);
    /* The failures left the server able to take its peers. */
    CHECK_RC(dmd_server_set_peers(s, &peer, 1), DMD_OK);
    CHECK_RC(dmd_server_set_peers(s, &peer, 1), DMD_ERR_INVALID_STATE);

    uint16_t port = 7;
    CHECK_RC(dmd_server_local_port(NULL, &port), DMD_ERR_NULL_ARGUMENT);
    CHECK_RC(dmd_server_local_port(s, NULL), DMD_ERR_NULL_ARGUMENT);
    CHECK(port == 7);

    dmd_session_state st;
    memset(&st, 0x5a, sizeof st);
    CHECK_RC(dmd_server_wait(NULL, "x", 0, &st), DMD_ERR_NULL_ARGUMENT);
    CHECK_RC(dmd_server_wait(s, NULL, 0, &st), DMD_ERR_NULL_ARGUMENT);
    CHECK_RC(dmd_server_wait(s, "x", 0, NULL), DMD_ERR_NULL_ARGUMENT);
    CHECK_RC(dmd_server_wait(s, "no-such-session", 0, &st), DMD_ERR_UNKNOWN_SESSION);
    CHECK_RC(dmd_server_wait(s, "no-such-session", 60, &st), DMD_ERR_UNKNOWN_SESSION);
    CHECK_RC(dmd_server_cancel(NULL, "x", &st), DMD_ERR_NULL_ARGUMENT);
    CHECK_RC(dmd_server_cancel(s, NULL, &st), DMD_ERR_NULL_ARGUMENT);
    CHECK_RC(dmd_server_cancel(s, "no-such-session", &st), DMD_ERR_UNKNOWN_SESSION);
    CHECK_RC(dmd_server_cancel(s, "no-such-session", NULL), DMD_ERR_UNKNOWN_SESSION);
    CHECK_RC(dmd_server_retry_rollback(NULL, "x", &st), DMD_ERR_NULL_ARGUMENT);
    CHECK_RC(dmd_server_retry_rollback(s, NULL, &st), DMD_ERR_NULL_ARGUMENT);
    CHECK_RC(dmd_server_retry_rollback(s, "no-such-session", &st), DMD_ERR_UNKNOWN_SESSION);
    CHECK_RC(dmd_server_retry_rollback(s, "no-such-session", NULL), DMD_ERR_UNKNOWN_SESSION);
    CHECK(st.state == (dmd_state)0x5a5a5a5a); /* no output on failure */

    size_t count = 99, needed = 99;
    char buf[8];
    CHECK_RC(dmd_server_session_count(NULL, &count), DMD_ERR_NULL_ARGUMENT);
    CHECK_RC(dmd_server_session_count(s, NULL), DMD_ERR_NULL_ARGUMENT);
    CHECK_RC(dmd_server_session_id(NULL, 0, buf, sizeof buf, &needed), DMD_ERR_NULL_ARGUMENT);
    CHECK_RC(dmd_server_session_id(s, 0, buf, sizeof buf, NULL), DMD_ERR_NULL_ARGUMENT);
    CHECK_RC(dmd_server_session_id(s, 0, buf, sizeof buf, &needed), DMD_ERR_INVALID_ARGUMENT);
    CHECK(needed == 99);
    size_t confirmed = 7;
    CHECK_RC(dmd_server_client_connected(NULL, DEVICE, &confirmed), DMD_ERR_NULL_ARGUMENT);
    CHECK_RC(dmd_server_client_connected(s, NULL, &confirmed), DMD_ERR_NULL_ARGUMENT);
    CHECK(confirmed == 7);
    CHECK_RC(dmd_server_client_connected(s, DEVICE, NULL), DMD_OK);
    CHECK_RC(dmd_server_client_connected(s, DEVICE, &confirmed), DMD_OK);
    CHECK(confirmed == 0);

    /* dmd_server_receive works on an HTTPS server too (a message from another path). */
    int duplicate = 5;
    const uint8_t junk[] = "<not a message/>";
    CHECK_RC(dmd_server_receive(NULL, DMS2, junk, sizeof junk - 1, &duplicate),
             DMD_ERR_NULL_ARGUMENT);
    CHECK_RC(dmd_server_receive(s, DMS2, NULL, 10, &duplicate), DMD_ERR_NULL_ARGUMENT);
    CHECK_RC(dmd_server_receive(s, DMS2, NULL, 0, &duplicate), DMD_ERR_NULL_ARGUMENT);
    CHECK_RC(dmd_server_receive(s, DMS2, junk, 0, &duplicate), DMD_ERR_DECODE);
    CHECK_RC(dmd_server_receive(s, DMS2, junk, sizeof junk - 1, &duplicate), DMD_ERR_DECODE);
    CHECK_RC(dmd_server_receive(s, "\xff", junk, sizeof junk - 1, &duplicate),
             DMD_ERR_INVALID_ARGUMENT);
    CHECK(duplicate == 5);
    CHECK_RC(dmd_server_session_count(s, &count), DMD_OK);
    CHECK(count == 0);
    dmd_server_free(s);
    dmd_server_free(NULL);
    end();
}

static void test_helper_arguments(const pki_set *p) {
    begin("dmd_sim_bootstrap_server_*, dmd_sim_device_route_bootstrap and the other helpers: "
          "NULL and invalid arguments");
    dmd_sim_bootstrap_server *bs = NULL;
    CHECK_RC(dmd_sim_bootstrap_server_new(NULL), DMD_ERR_NULL_ARGUMENT);
    CHECK_RC(dmd_sim_bootstrap_server_new(&bs), DMD_OK);
    char tnds[4096];
    CHECK_RC(account_tnds(DMS2, tnds, sizeof tnds), DMD_OK);
    CHECK_RC(dmd_sim_bootstrap_server_register(NULL, BOOTSTRAP_URL, tnds), DMD_ERR_NULL_ARGUMENT);
    CHECK_RC(dmd_sim_bootstrap_server_register(bs, NULL, tnds), DMD_ERR_NULL_ARGUMENT);
    CHECK_RC(dmd_sim_bootstrap_server_register(bs, BOOTSTRAP_URL, NULL), DMD_ERR_NULL_ARGUMENT);
    CHECK_RC(dmd_sim_bootstrap_server_register(bs, BOOTSTRAP_URL, "<MgmtTree>broken"),
             DMD_ERR_DECODE);
    CHECK_RC(dmd_sim_bootstrap_server_register(bs, BOOTSTRAP_URL, "\xff"),
             DMD_ERR_INVALID_ARGUMENT);
    /* Two DMAcc nodes in one document. */
    char two[8192];
    const char *body = strstr(tnds, "<Node>");
    const char *close = strstr(tnds, "</MgmtTree>");
    CHECK(body != NULL && close != NULL);
    if (body != NULL && close != NULL) {
        snprintf(two, sizeof two, "%.*s%.*s</MgmtTree>", (int)(close - tnds), tnds,
                 (int)(close - body), body);
        dmd_result rc = dmd_sim_bootstrap_server_register(bs, BOOTSTRAP_URL, two);
        CHECK(rc == DMD_ERR_INVALID_ARGUMENT || rc == DMD_ERR_DECODE);
    }
    CHECK_RC(dmd_sim_bootstrap_server_register(bs, BOOTSTRAP_URL, tnds), DMD_OK);
    /* Registering again replaces. */
    CHECK_RC(dmd_sim_bootstrap_server_register(bs, BOOTSTRAP_URL, tnds), DMD_OK);

    dmd_host_callbacks cb;
    memset(&cb, 0, sizeof cb);
    dmd_server_config c = https_config(p);
    dmd_server *s = NULL;
    CHECK_RC(dmd_server_new(&c, &cb, &s), DMD_OK);
    dmd_sim_device *device = new_device();
    CHECK_RC(dmd_sim_device_route_bootstrap(NULL, bs, s), DMD_ERR_NULL_ARGUMENT);
    CHECK_RC(dmd_sim_device_route_bootstrap(device, NULL, s), DMD_ERR_NULL_ARGUMENT);
    CHECK_RC(dmd_sim_device_route_bootstrap(device, bs, NULL), DMD_ERR_NULL_ARGUMENT);
    CHECK_RC(dmd_sim_device_route_bootstrap(device, bs, s), DMD_OK);
    CHECK_RC(dmd_sim_device_route_bootstrap(device, bs, s), DMD_OK); /* replaces */
    /* The device keeps the Bootstrap Server alive, and holds the server weakly. */
    dmd_sim_bootstrap_server_free(bs);
    dmd_server_free(s);
    dmd_sim_bootstrap_server_free(NULL);

    size_t needed = 0;
    CHECK_RC(dmd_sim_device_dump(NULL, NULL, 0, &needed), DMD_ERR_NULL_ARGUMENT);
    CHECK_RC(dmd_sim_device_dump(device, NULL, 0, NULL), DMD_ERR_NULL_ARGUMENT);
    CHECK_RC(dmd_sim_device_dump(device, NULL, 0, &needed), DMD_ERR_BUFFER_TOO_SMALL);
    CHECK(needed > 100);
    dmd_sim_device *d2 = (dmd_sim_device *)0x1;
    CHECK_RC(dmd_sim_device_new(DEVICE, NULL, MODEL, DMS1, DMS1_URL, "c", "s", &d2),
             DMD_ERR_NULL_ARGUMENT);
    CHECK(d2 == (dmd_sim_device *)0x1);
    CHECK_RC(dmd_dmacc_simple_tnds(DMS2, "https://x/dm", "c", "s", NULL, 0, &needed),
             DMD_ERR_BUFFER_TOO_SMALL);
    CHECK_RC(dmd_dmacc_simple_tnds(NULL, "https://x/dm", "c", "s", NULL, 0, &needed),
             DMD_ERR_NULL_ARGUMENT);
    CHECK_RC(dmd_dmacc_simple_tnds("bad id!", "https://x/dm", "c", "s", NULL, 0, &needed),
             DMD_ERR_INVALID_ARGUMENT);
    CHECK_RC(dmd_reply_set_text(NULL, "x"), DMD_ERR_NULL_ARGUMENT);
    CHECK(dmd_command_get_kind(NULL) == 0);
    CHECK(dmd_command_uri(NULL) == NULL && dmd_command_parent(NULL) == NULL);
    CHECK(dmd_command_text(NULL) == NULL && dmd_command_values(NULL) == 0);
    CHECK_RC(dmd_command_syncml(NULL, 1, NULL, 0, &needed), DMD_ERR_NULL_ARGUMENT);
    CHECK(dmd_sim_device_execute(NULL, DMS1, NULL, NULL) == 400);
    CHECK(dmd_sim_device_execute(device, DMS1, NULL, NULL) == 400);
    CHECK(dmd_sim_device_open_session(NULL, DMS1) == 400);
    CHECK(dmd_sim_device_open_session(device, NULL) == 400);
    CHECK(dmd_sim_device_open_session(device, DMS2) == 401); /* no account */
    CHECK(dmd_sim_device_open_session(device, DMS1) == 200);
    CHECK_RC(dmd_test_pki_new(NULL, NULL), DMD_ERR_NULL_ARGUMENT);
    CHECK(dmd_test_pki_ca_pem(NULL) == NULL);
    CHECK(dmd_identity_cert_pem(NULL) == NULL && dmd_identity_key_pem(NULL) == NULL);
    dmd_test_pki_free(NULL);
    dmd_identity_free(NULL);
    dmd_sim_device_free(NULL);
    dmd_sim_device_free(device);
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
    test_config_arguments(&p);
    test_server_arguments(&p);
    test_helper_arguments(&p);
    if (quick) {
        run_method(&p, 1, DMD_DELEGATION_TYPE_FULL, NULL, NULL);
        run_method(&p, 3, DMD_DELEGATION_TYPE_PARTIAL, NULL, NULL);
    } else {
        for (uint8_t method = 1; method <= 4; method++) {
            run_method(&p, method, DMD_DELEGATION_TYPE_FULL, NULL, NULL);
            run_method(&p, method, DMD_DELEGATION_TYPE_PARTIAL, NULL, NULL);
        }
    }
    /* Explicit HTTPS settings (the rest 0: the defaults), in quick runs too. */
    dmd_https_options https;
    memset(&https, 0, sizeof https);
    https.max_requests_per_peer = 1;
    https.max_batch_messages = 8;
    https.attempts = 2;
    https.backoff_ms = 50;
    https.request_timeout_ms = 20000;
    https.max_body_bytes = 512 * 1024;
    run_method(&p, 1, DMD_DELEGATION_TYPE_PARTIAL, &https,
               "dmd_https_options (1 request per peer, batches of 8, 2 attempts)");
    run_refused_write(&p);
    run_rejected(&p, 1, 101);
    run_rejected(&p, 2, 104);
    run_wrong_identity(&p);
    free_pki(&p);
    printf("test_server: %d passed, %d failed\n", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}
