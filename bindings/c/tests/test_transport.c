/*
 * dmd_server on the host's own transport (dmd_transport): two servers whose `send`
 * callback queues every message (servers.h, qlink); the test thread pumps the queue,
 * handing each message to the other server with dmd_server_receive and the sender's
 * ServerID as the authenticated peer. Every step is then under the test's control:
 *
 * - a Method 1 delegation completes (NOTIF RES START PREPARED CONFIRM); a message fed
 *   twice is a duplicate; garbage is DMD_ERR_DECODE; a wrong peer DMD_ERR_AUTHENTICATION;
 *   a message for the other server DMD_ERR_WRONG_RECIPIENT; an unknown session
 *   DMD_ERR_UNKNOWN_SESSION; out of order DMD_ERR_INVALID_STATE (the session fails, 120);
 * - `send` failing -> the delegation fails (170) and rolls back; dmd_server_cancel (150);
 * - deadlines (dmd_timeouts): no answer to the NOTIF -> 140, CONFIRM lost -> 141, both at
 *   their deadline_ms, with the device restored;
 * - expires_ms: a temporary Partial delegation ends EXPIRED at both servers, the device as
 *   before;
 * - store_path: sessions survive the server on a SQLite file, and an unfinished one rolls
 *   back at its deadline under the next server;
 * - the request (dmd_delegation_request) and configuration checks (no HTTPS fields,
 *   peers or dmd_https_options with a transport).
 *
 * Usage: test_transport [--quick]   (the same cases; they are fast)
 * Prints "test_transport: N passed, M failed"; exit status 0 when none failed.
 */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include "servers.h"

/* Two servers on one queue, hosts over one device. */
typedef struct net {
    qlink link;
    dmd_sim_device *device;
    host h1, h2;
    dmd_host_callbacks cb1, cb2;
    dmd_server *s1, *s2;
} net;

static void net_open(net *n, const dmd_timeouts *t1, const dmd_timeouts *t2,
                     const char *store1) {
    link_init(&n->link);
    n->device = new_device();
    host_init(&n->h1, DMS1, n->device);
    host_init(&n->h2, DMS2, n->device);
    n->cb1 = callbacks_for(&n->h1);
    n->cb2 = callbacks_for(&n->h2);
    n->s1 = link_server(&n->link, 0, &n->cb1, t1, store1);
    n->s2 = link_server(&n->link, 1, &n->cb2, t2, NULL);
}

static void net_close(net *n) {
    dmd_server_free(n->s1);
    dmd_server_free(n->s2);
    dmd_sim_device_free(n->device);
    link_destroy(&n->link);
}

/* DMS-1 starts `method` and `type`; the id goes to `id`. */
static void start(net *n, uint8_t method, dmd_delegation_type type, int64_t expires_ms,
                  char *id) {
    dmd_delegation_request r = request_for(DMS2, method, type);
    r.expires_ms = expires_ms;
    size_t needed = 0;
    id[0] = '\0';
    CHECK_RC(dmd_server_start_delegation(n->s1, &r, id, DMD_SESSION_ID_MAX + 1, &needed),
             DMD_OK);
}

/* Pops the next message, which must be of type `want`. */
static queued *expect_next(qlink *l, dmd_message_type want) {
    queued *q = link_pop(l);
    CHECK(q != NULL);
    if (q != NULL && q->type != want)
        printf("    next message is %s, expected %s\n", type_name(q->type), type_name(want));
    CHECK(q != NULL && q->type == want);
    return q;
}

/* Delivers `q` (which must then be accepted, not a duplicate) and frees it. */
static void deliver(qlink *l, queued *q) {
    if (q == NULL) return;
    int duplicate = -1;
    CHECK_RC(link_deliver(l, q, &duplicate), DMD_OK);
    CHECK(duplicate == 0);
    queued_free(q);
}

/* ---- a delegation over the queue, and what dmd_server_receive refuses ------------------ */

static void test_delegation(void) {
    begin("own transport: Method 1 Full completes; duplicate, garbage, wrong peer, wrong "
          "recipient, unknown session refused with their codes");
    net n;
    net_open(&n, NULL, NULL, NULL);
    char *before = dump(n.device);
    char id[DMD_SESSION_ID_MAX + 1];
    start(&n, 1, DMD_DELEGATION_TYPE_FULL, 0, id);
    CHECK(link_pending(&n.link) == 1); /* the NOTIF, queued by send before start returned */

    queued *notif = expect_next(&n.link, DMD_MESSAGE_TYPE_NOTIF);
    CHECK(notif != NULL && strcmp(notif->from, DMS1) == 0 && strcmp(notif->to, DMS2) == 0);
    CHECK(notif != NULL && dmd_message_validate(notif->data, notif->len) == DMD_OK);
    int duplicate = -1;
    /* Refused before anything happens: a peer the sender is not, garbage. */
    CHECK_RC(dmd_server_receive(n.s2, "dms3.elsewhere.example", notif->data, notif->len,
                                &duplicate),
             DMD_ERR_AUTHENTICATION);
    CHECK(duplicate == -1);
    const uint8_t junk[] = "\x01\x02 not XML at all";
    CHECK_RC(dmd_server_receive(n.s2, DMS1, junk, sizeof junk - 1, &duplicate),
             DMD_ERR_DECODE);
    CHECK_RC(dmd_server_receive(n.s2, DMS1, notif->data, notif->len / 2, &duplicate),
             DMD_ERR_DECODE);
    /* Addressed to DMS-2, given to DMS-1. */
    CHECK_RC(dmd_server_receive(n.s1, DMS1, notif->data, notif->len, &duplicate),
             DMD_ERR_WRONG_RECIPIENT);
    CHECK(duplicate == -1);
    dmd_session_state st;
    CHECK_RC(dmd_server_wait(n.s2, id, 0, &st), DMD_ERR_UNKNOWN_SESSION);
    CHECK(link_pending(&n.link) == 0);

    /* Now for real: NOTIF -> DMS-2 answers RES (ack) and START. */
    CHECK_RC(dmd_server_receive(n.s2, DMS1, notif->data, notif->len, &duplicate), DMD_OK);
    CHECK(duplicate == 0);
    queued *ack = expect_next(&n.link, DMD_MESSAGE_TYPE_RES);
    queued *start_msg = expect_next(&n.link, DMD_MESSAGE_TYPE_START);
    st = state_now(n.s2, id);
    CHECK_STATE(st, DMD_STATE_AWAITING_PREPARED, 0);
    CHECK(st.deadline_ms > now_ms()); /* waiting for PREPARED */
    /* peer NULL: a transport that authenticates nobody (the Sender is trusted). */
    duplicate = -1;
    CHECK_RC(dmd_server_receive(n.s1, NULL, ack->data, ack->len, &duplicate), DMD_OK);
    CHECK(duplicate == 0);
    st = state_now(n.s1, id);
    CHECK_STATE(st, DMD_STATE_AWAITING_START, 0);
    CHECK(st.deadline_ms > now_ms());
    /* The same RES again: a duplicate, nothing done again. */
    duplicate = -1;
    CHECK_RC(dmd_server_receive(n.s1, DMS2, ack->data, ack->len, &duplicate), DMD_OK);
    CHECK(duplicate == 1);
    CHECK(link_pending(&n.link) == 0);
    deliver(&n.link, start_msg); /* DMS-1 prepares the device, sends PREPARED */
    st = state_now(n.s1, id);
    CHECK_STATE(st, DMD_STATE_AWAITING_CONFIRM, 0);
    CHECK(st.pending_operations > 0 && st.deadline_ms > now_ms());
    link_pump(&n.link, (dmd_message_type)0, NULL); /* PREPARED, then CONFIRM */
    CHECK(strcmp(n.link.log, "START PREPARED CONFIRM") == 0); /* NOTIF, RES given above */
    dmd_session_state st1 = state_now(n.s1, id), st2 = state_now(n.s2, id);
    CHECK_STATE(st1, DMD_STATE_COMPLETED, 0);
    CHECK_STATE(st2, DMD_STATE_COMPLETED, 0);
    CHECK(st1.pending_operations == 0 && st1.deadline_ms == 0 && st2.deadline_ms == 0);
    char *after = dump(n.device);
    CHECK(after != NULL && has_account(after, DMS2) && !has_account(after, DMS1));
    CHECK(after != NULL && acls_naming(after, DMS1) == 0);

    /* After the end: the NOTIF again is a duplicate (DMS-2 still knows the session). */
    duplicate = -1;
    CHECK_RC(dmd_server_receive(n.s2, DMS1, notif->data, notif->len, &duplicate), DMD_OK);
    CHECK(duplicate == 1);
    CHECK(link_pending(&n.link) == 0);
    /* The same NOTIF to a server that has no such session: a new offer, which this one
     * refuses (its host has no accept callback). A RES to a server without the session:
     * DMD_ERR_UNKNOWN_SESSION, answered with a FAILURE. */
    qlink other;
    link_init(&other);
    dmd_host_callbacks none;
    memset(&none, 0, sizeof none);
    dmd_server *fresh1 = link_server(&other, 0, &none, NULL, NULL);
    duplicate = -1;
    CHECK_RC(dmd_server_receive(fresh1, DMS2, ack->data, ack->len, &duplicate),
             DMD_ERR_UNKNOWN_SESSION);
    CHECK(duplicate == -1);
    queued *answer = link_pop(&other);
    CHECK(answer != NULL && answer->type == DMD_MESSAGE_TYPE_FAILURE);
    CHECK(answer != NULL && strcmp(answer->to, DMS2) == 0);
    queued_free(answer);
    size_t count = 9;
    CHECK_RC(dmd_server_session_count(fresh1, &count), DMD_OK);
    CHECK(count == 0); /* no session created */
    dmd_server_free(fresh1);
    link_destroy(&other);

    /* A transport server has no HTTPS endpoint. */
    uint16_t port = 7;
    CHECK_RC(dmd_server_local_port(n.s1, &port), DMD_ERR_INVALID_STATE);
    CHECK(port == 7);
    dmd_peer peer = {DMS2, "https://dms2.enterprise.example:1/dm-delegation", NULL, NULL};
    CHECK_RC(dmd_server_set_peers(n.s1, &peer, 1), DMD_ERR_INVALID_STATE);
    CHECK(strcmp(before, after) != 0);
    free(before);
    free(after);
    queued_free(notif);
    queued_free(ack);
    net_close(&n);
    end();
}

static void test_out_of_order(void) {
    begin("own transport: START before RES -> DMD_ERR_INVALID_STATE, both ROLLED_BACK 120");
    net n;
    net_open(&n, NULL, NULL, NULL);
    char *before = dump(n.device);
    char id[DMD_SESSION_ID_MAX + 1];
    start(&n, 1, DMD_DELEGATION_TYPE_PARTIAL, 0, id);
    deliver(&n.link, expect_next(&n.link, DMD_MESSAGE_TYPE_NOTIF));
    queued *ack = expect_next(&n.link, DMD_MESSAGE_TYPE_RES);
    queued *start_msg = expect_next(&n.link, DMD_MESSAGE_TYPE_START);
    int duplicate = -1;
    if (start_msg != NULL)
        CHECK_RC(dmd_server_receive(n.s1, DMS2, start_msg->data, start_msg->len, &duplicate),
                 DMD_ERR_INVALID_STATE);
    dmd_session_state st1 = state_now(n.s1, id);
    CHECK_STATE(st1, DMD_STATE_ROLLED_BACK, 120);
    CHECK(strstr(st1.reason, "out of order") != NULL);
    /* The late RES: already superseded by sequence number, so a duplicate. */
    if (ack != NULL)
        CHECK_RC(dmd_server_receive(n.s1, DMS2, ack->data, ack->len, &duplicate), DMD_OK);
    CHECK(duplicate == 1);
    link_pump(&n.link, (dmd_message_type)0, NULL); /* DMS-1's FAILURE */
    dmd_session_state st2 = state_now(n.s2, id);
    CHECK_STATE(st2, DMD_STATE_ROLLED_BACK, 120);
    CHECK_DEVICE_UNCHANGED(n.device, before);
    CHECK(host_view(&n.h1).writes == 0);
    queued_free(ack);
    queued_free(start_msg);
    free(before);
    net_close(&n);
    end();
}

static void test_send_failure_and_cancel(void) {
    begin("own transport: send returns -1 for PREPARED -> DMS-1 ROLLED_BACK 170, device "
          "restored; dmd_server_cancel on DMS-2 -> ROLLED_BACK 150");
    net n;
    net_open(&n, NULL, NULL, NULL);
    n.link.ends[0].fail_type = DMD_MESSAGE_TYPE_PREPARED;
    char *before = dump(n.device);
    char id[DMD_SESSION_ID_MAX + 1];
    start(&n, 1, DMD_DELEGATION_TYPE_FULL, 0, id);
    deliver(&n.link, expect_next(&n.link, DMD_MESSAGE_TYPE_NOTIF));
    deliver(&n.link, expect_next(&n.link, DMD_MESSAGE_TYPE_RES));
    queued *start_msg = expect_next(&n.link, DMD_MESSAGE_TYPE_START);
    int duplicate = -1;
    if (start_msg != NULL)
        CHECK_RC(dmd_server_receive(n.s1, DMS2, start_msg->data, start_msg->len, &duplicate),
                 DMD_ERR_TRANSPORT);
    queued_free(start_msg);
    CHECK(n.link.ends[0].failed == 1);
    dmd_session_state st1 = state_now(n.s1, id);
    CHECK_STATE(st1, DMD_STATE_ROLLED_BACK, 170);
    CHECK(strstr(st1.reason, "-1") != NULL);
    CHECK(st1.pending_operations == 0);
    CHECK_DEVICE_UNCHANGED(n.device, before);
    CHECK(link_pending(&n.link) == 0); /* no FAILURE: the peer is unreachable */

    /* DMS-2 still waits for PREPARED: its operator cancels. */
    dmd_session_state st2;
    memset(&st2, 0, sizeof st2);
    CHECK_RC(dmd_server_cancel(n.s2, id, &st2), DMD_OK);
    CHECK_STATE(st2, DMD_STATE_ROLLED_BACK, 150);
    CHECK(st2.terminal == 1 && st2.role == DMD_ROLE_DELEGATED);
    CHECK_RC(dmd_server_cancel(n.s2, id, NULL), DMD_ERR_INVALID_STATE);
    queued *failure = expect_next(&n.link, DMD_MESSAGE_TYPE_FAILURE);
    deliver(&n.link, failure); /* DMS-1 has ended already: taken, nothing changes */
    st1 = state_now(n.s1, id);
    CHECK_STATE(st1, DMD_STATE_ROLLED_BACK, 170);
    free(before);
    net_close(&n);
    end();
}

static void test_cancel_prepared(void) {
    begin("own transport: dmd_server_cancel on DMS-1 awaiting CONFIRM -> ROLLED_BACK 150 "
          "with the device restored, DMS-2 told (150)");
    net n;
    net_open(&n, NULL, NULL, NULL);
    char *before = dump(n.device);
    char id[DMD_SESSION_ID_MAX + 1];
    start(&n, 1, DMD_DELEGATION_TYPE_PARTIAL, 0, id);
    deliver(&n.link, expect_next(&n.link, DMD_MESSAGE_TYPE_NOTIF));
    deliver(&n.link, expect_next(&n.link, DMD_MESSAGE_TYPE_RES));
    deliver(&n.link, expect_next(&n.link, DMD_MESSAGE_TYPE_START));
    dmd_session_state st1 = state_now(n.s1, id);
    CHECK_STATE(st1, DMD_STATE_AWAITING_CONFIRM, 0);
    /* Journaled: DMS-2's account, its marker, the ACLs of ./Vendor/Apps and .../Mail. */
    CHECK(st1.pending_operations == 4);
    char *prepared = dump(n.device);
    CHECK(prepared != NULL && strcmp(prepared, before) != 0);
    memset(&st1, 0, sizeof st1);
    CHECK_RC(dmd_server_cancel(n.s1, id, &st1), DMD_OK);
    CHECK_STATE(st1, DMD_STATE_ROLLED_BACK, 150);
    CHECK(st1.pending_operations == 0 && st1.deadline_ms == 0);
    CHECK_DEVICE_UNCHANGED(n.device, before);
    int dropped = 0;
    link_pump(&n.link, DMD_MESSAGE_TYPE_PREPARED, &dropped); /* the FAILURE reaches DMS-2 */
    CHECK(dropped == 1);
    dmd_session_state st2 = state_now(n.s2, id);
    CHECK_STATE(st2, DMD_STATE_ROLLED_BACK, 150);
    CHECK(host_view(&n.h2).opens == 0);
    free(before);
    free(prepared);
    net_close(&n);
    end();
}

/* ---- deadlines and expiry ------------------------------------------------------------------ */

static void test_response_timeout(void) {
    begin("timeouts: response_ms 1000, the NOTIF never answered -> ROLLED_BACK 140 at "
          "deadline_ms, FAILURE sent");
    dmd_timeouts t;
    memset(&t, 0, sizeof t);
    t.response_ms = 1000;
    net n;
    net_open(&n, &t, NULL, NULL);
    char id[DMD_SESSION_ID_MAX + 1];
    int64_t started = now_ms();
    start(&n, 1, DMD_DELEGATION_TYPE_FULL, 0, id);
    link_clear(&n.link); /* lost */
    dmd_session_state st = state_now(n.s1, id);
    CHECK_STATE(st, DMD_STATE_NOTIF_SENT, 0);
    CHECK(st.terminal == 0 && st.role == DMD_ROLE_DELEGATING && st.method == 1);
    CHECK(st.deadline_ms >= started + 1000 && st.deadline_ms <= now_ms() + 1000);
    int64_t deadline = st.deadline_ms;
    st = wait_end(n.s1, id);
    int64_t ended = now_ms();
    CHECK_STATE(st, DMD_STATE_ROLLED_BACK, 140);
    CHECK(ended >= deadline);
    CHECK(ended < deadline + 20000);
    CHECK(link_wait(&n.link, 10000)); /* sent after the state is saved */
    queued *failure = link_pop(&n.link);
    CHECK(failure != NULL && failure->type == DMD_MESSAGE_TYPE_FAILURE);
    CHECK(failure != NULL && strcmp(failure->to, DMS2) == 0);
    queued_free(failure);
    CHECK(host_view(&n.h1).failed == 1 && host_view(&n.h1).event_reason == 140);
    net_close(&n);
    end();
}

static void test_confirm_timeout(void) {
    begin("timeouts: confirm_ms 1000, the CONFIRM lost -> DMS-1 ROLLED_BACK 141 at "
          "deadline_ms, device restored; DMS-2 (COMPLETED) told -> ROLLED_BACK 141");
    dmd_timeouts t;
    memset(&t, 0, sizeof t);
    t.confirm_ms = 1000;
    net n;
    net_open(&n, &t, NULL, NULL);
    char *before = dump(n.device);
    char id[DMD_SESSION_ID_MAX + 1];
    start(&n, 1, DMD_DELEGATION_TYPE_PARTIAL, 0, id);
    deliver(&n.link, expect_next(&n.link, DMD_MESSAGE_TYPE_NOTIF));
    deliver(&n.link, expect_next(&n.link, DMD_MESSAGE_TYPE_RES));
    int64_t prepared_at = now_ms();
    deliver(&n.link, expect_next(&n.link, DMD_MESSAGE_TYPE_START));
    dmd_session_state st1 = state_now(n.s1, id);
    CHECK_STATE(st1, DMD_STATE_AWAITING_CONFIRM, 0);
    CHECK(st1.deadline_ms >= prepared_at + 1000 && st1.deadline_ms <= now_ms() + 1000);
    int64_t deadline = st1.deadline_ms;
    int dropped = 0;
    link_pump(&n.link, DMD_MESSAGE_TYPE_CONFIRM, &dropped); /* PREPARED; CONFIRM lost */
    CHECK(dropped == 1);
    dmd_session_state st2 = state_now(n.s2, id);
    CHECK_STATE(st2, DMD_STATE_COMPLETED, 0);
    st1 = wait_end(n.s1, id);
    int64_t ended = now_ms();
    CHECK_STATE(st1, DMD_STATE_ROLLED_BACK, 141);
    CHECK(ended >= deadline && ended < deadline + 20000);
    CHECK_DEVICE_UNCHANGED(n.device, before);
    CHECK(link_wait(&n.link, 10000)); /* DMS-1's FAILURE, sent after the state is saved */
    link_pump(&n.link, (dmd_message_type)0, NULL);
    st2 = state_now(n.s2, id);
    CHECK_STATE(st2, DMD_STATE_ROLLED_BACK, 141);
    free(before);
    net_close(&n);
    end();
}

static void test_expiry(void) {
    begin("expires_ms: a temporary Partial delegation completes, then both servers show "
          "EXPIRED and the device is as before");
    net n;
    net_open(&n, NULL, NULL, NULL);
    char *before = dump(n.device);
    char id[DMD_SESSION_ID_MAX + 1];
    int64_t expires = now_ms() + 4000;
    start(&n, 1, DMD_DELEGATION_TYPE_PARTIAL, expires, id);
    link_pump(&n.link, (dmd_message_type)0, NULL);
    host v2 = host_view(&n.h2);
    CHECK(v2.offer_expires_ms == expires);
    dmd_session_state st1 = state_now(n.s1, id), st2 = state_now(n.s2, id);
    /* Normally COMPLETED now; a very slow run may already have expired it. */
    CHECK(st1.state == DMD_STATE_COMPLETED || st1.state == DMD_STATE_EXPIRED);
    CHECK(st1.expires_ms == expires && st2.expires_ms == expires);
    if (st1.state == DMD_STATE_COMPLETED) {
        char *during = dump(n.device);
        CHECK(during != NULL && has_account(during, DMS2) && acls_naming(during, DMS2) > 0);
        CHECK(st1.terminal == 1 && st1.pending_operations > 0); /* kept to revert it */
        free(during);
    }
    st1 = poll_state(n.s1, id, DMD_STATE_EXPIRED, 30000);
    st2 = poll_state(n.s2, id, DMD_STATE_EXPIRED, 30000);
    CHECK_STATE(st1, DMD_STATE_EXPIRED, 0);
    CHECK_STATE(st2, DMD_STATE_EXPIRED, 0);
    CHECK(now_ms() >= expires);
    CHECK(st1.terminal == 1 && st1.pending_operations == 0 && st1.expires_ms == expires);
    CHECK_DEVICE_UNCHANGED(n.device, before);
    host v1 = host_view(&n.h1);
    v2 = host_view(&n.h2);
    CHECK(v1.completed == 1 && v1.expired == 1 && v2.completed == 1 && v2.expired == 1);
    CHECK(link_pending(&n.link) == 0); /* each server reverts on its own */
    free(before);
    net_close(&n);
    end();
}

/* ---- a durable store --------------------------------------------------------------------- */

static void remove_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (d != NULL) {
        struct dirent *e;
        char path[1024];
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
        closedir(d);
    }
    rmdir(dir);
}

static void test_store(void) {
    begin("store_path: sessions listed by a new server on the same SQLite file; an "
          "unfinished one rolls back (140) at its deadline under the new server");
    char dir[] = "/tmp/dmdelegate-c-test-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[256];
    snprintf(path, sizeof path, "%s/sessions.db", dir);

    /* A completed delegation, then one whose NOTIF is lost, with a 5 s response deadline
     * (time enough to stop the server before it passes, even under valgrind). */
    dmd_timeouts t;
    memset(&t, 0, sizeof t);
    t.response_ms = 5000;
    net n;
    net_open(&n, &t, NULL, path);
    char done[DMD_SESSION_ID_MAX + 1], open_id[DMD_SESSION_ID_MAX + 1];
    start(&n, 1, DMD_DELEGATION_TYPE_PARTIAL, 0, done);
    link_pump(&n.link, (dmd_message_type)0, NULL);
    dmd_session_state st = state_now(n.s1, done);
    CHECK_STATE(st, DMD_STATE_COMPLETED, 0);
    dmd_delegation_request r = request_for(DMS2, 1, DMD_DELEGATION_TYPE_PARTIAL);
    r.device_id = "IMEI:000000000000002";
    r.session_id = "stored-session-2";
    size_t needed = 0;
    CHECK_RC(dmd_server_start_delegation(n.s1, &r, open_id, sizeof open_id, &needed), DMD_OK);
    CHECK(strcmp(open_id, "stored-session-2") == 0);
    link_clear(&n.link); /* lost */
    st = state_now(n.s1, open_id);
    CHECK_STATE(st, DMD_STATE_NOTIF_SENT, 0);
    int64_t deadline = st.deadline_ms;
    dmd_server_free(n.s1); /* before the deadline */
    n.s1 = NULL;
    CHECK(now_ms() < deadline);

    /* A new server on the same file (no timeouts given: the stored deadline counts). */
    n.s1 = link_server(&n.link, 0, &n.cb1, NULL, path);
    size_t count = 0;
    CHECK_RC(dmd_server_session_count(n.s1, &count), DMD_OK);
    CHECK(count == 2);
    char listed[DMD_SESSION_ID_MAX + 1];
    CHECK_RC(dmd_server_session_id(n.s1, 0, listed, sizeof listed, &needed), DMD_OK);
    CHECK(strcmp(listed, done) == 0); /* oldest first */
    CHECK_RC(dmd_server_session_id(n.s1, 1, listed, sizeof listed, &needed), DMD_OK);
    CHECK(strcmp(listed, open_id) == 0);
    st = state_now(n.s1, done);
    CHECK_STATE(st, DMD_STATE_COMPLETED, 0);
    CHECK(st.role == DMD_ROLE_DELEGATING && st.method == 1);
    st = wait_end(n.s1, open_id);
    CHECK_STATE(st, DMD_STATE_ROLLED_BACK, 140);
    CHECK(now_ms() >= deadline);
    CHECK(link_wait(&n.link, 10000));
    queued *failure = link_pop(&n.link); /* told by the new server */
    CHECK(failure != NULL && failure->type == DMD_MESSAGE_TYPE_FAILURE);
    queued_free(failure);
    net_close(&n);

    /* Not a database. */
    FILE *f = fopen(path, "w");
    if (f != NULL) {
        fputs("this is not an SQLite database, not even close; ", f);
        for (int i = 0; i < 200; i++) fputs("garbage garbage garbage ", f);
        fclose(f);
    }
    qlink l;
    link_init(&l);
    dmd_host_callbacks none;
    memset(&none, 0, sizeof none);
    dmd_transport tr = {&l.ends[0], link_send};
    dmd_server_config c;
    memset(&c, 0, sizeof c);
    c.server_id = DMS1;
    c.transport = &tr;
    c.store_path = path;
    dmd_server *s = (dmd_server *)0x1;
    CHECK_RC(dmd_server_new(&c, &none, &s), DMD_ERR_STORE);
    c.store_path = dir; /* a directory */
    CHECK_RC(dmd_server_new(&c, &none, &s), DMD_ERR_STORE);
    CHECK(s == (dmd_server *)0x1);
    link_destroy(&l);
    remove_dir(dir);
    end();
}

/* ---- arguments ------------------------------------------------------------------------- */

static void test_transport_config(void) {
    begin("dmd_server_new with a dmd_transport: send required, no HTTPS fields or peers");
    qlink l;
    link_init(&l);
    dmd_host_callbacks none;
    memset(&none, 0, sizeof none);
    dmd_transport tr = {&l.ends[0], NULL};
    dmd_server_config c;
    memset(&c, 0, sizeof c);
    c.server_id = DMS1;
    c.transport = &tr;
    dmd_server *const sentinel = (dmd_server *)0x1;
    dmd_server *s = sentinel;
    CHECK_RC(dmd_server_new(&c, &none, &s), DMD_ERR_NULL_ARGUMENT);
    CHECK(strstr(last_error(), "send") != NULL);
    tr.send = link_send;
    const char **https[] = {&c.listen_address, &c.cert_pem, &c.key_pem, &c.trust_pem};
    for (size_t i = 0; i < sizeof https / sizeof https[0]; i++) {
        *https[i] = "127.0.0.1:0";
        CHECK_RC(dmd_server_new(&c, &none, &s), DMD_ERR_INVALID_ARGUMENT);
        *https[i] = NULL;
    }
    dmd_peer peer = {DMS2, "https://dms2.enterprise.example:1/dm-delegation", NULL, NULL};
    c.peers = &peer;
    c.peer_count = 1;
    CHECK_RC(dmd_server_new(&c, &none, &s), DMD_ERR_INVALID_ARGUMENT);
    c.peers = NULL;
    c.peer_count = 0;
    /* HTTPS settings, even all 0 (the defaults), are for the HTTPS binding only. */
    dmd_https_options opts;
    memset(&opts, 0, sizeof opts);
    c.https = &opts;
    CHECK_RC(dmd_server_new(&c, &none, &s), DMD_ERR_INVALID_ARGUMENT);
    CHECK(strstr(last_error(), "config->transport") != NULL);
    CHECK(strstr(last_error(), "HTTPS options") != NULL);
    opts.max_batch_messages = 8;
    CHECK_RC(dmd_server_new(&c, &none, &s), DMD_ERR_INVALID_ARGUMENT);
    c.https = NULL;
    c.server_id = NULL;
    CHECK_RC(dmd_server_new(&c, &none, &s), DMD_ERR_NULL_ARGUMENT);
    c.server_id = "not valid!";
    CHECK_RC(dmd_server_new(&c, &none, &s), DMD_ERR_INVALID_ARGUMENT);
    CHECK(s == sentinel);
    /* Valid; the struct, the transport and the timeouts are copied. */
    dmd_timeouts t = {60000, 2, 3, 4, 5};
    c.server_id = DMS1;
    c.timeouts = &t;
    s = NULL;
    CHECK_RC(dmd_server_new(&c, &none, &s), DMD_OK);
    memset(&tr, 0, sizeof tr);
    memset(&t, 0, sizeof t);
    char id[DMD_SESSION_ID_MAX + 1];
    size_t needed = 0;
    dmd_delegation_request r = request_for(DMS2, 1, DMD_DELEGATION_TYPE_FULL);
    CHECK_RC(dmd_server_start_delegation(s, &r, id, sizeof id, &needed), DMD_OK);
    CHECK(link_pending(&l) == 1);
    dmd_session_state st = state_now(s, id);
    /* response_ms 60000 (not the default 30 s): the deadline is a minute after the NOTIF. */
    CHECK_STATE(st, DMD_STATE_NOTIF_SENT, 0);
    CHECK(st.deadline_ms > now_ms() + 50000 && st.deadline_ms <= now_ms() + 60000);
    dmd_server_free(s);
    link_destroy(&l);
    end();
}

static void test_request_validation(void) {
    begin("dmd_server_start_delegation: NULL and invalid request fields, nothing started");
    net n;
    net_open(&n, NULL, NULL, NULL);
    char id[DMD_SESSION_ID_MAX + 1];
    size_t needed = 77;
    dmd_delegation_request ok = request_for(DMS2, 1, DMD_DELEGATION_TYPE_PARTIAL), r;
    dmd_subtree bad_rights = {"./Vendor/Apps", "Add+Fly"};
    dmd_subtree bad_uri = {"Vendor/Apps", "Get"};
    dmd_subtree twice[2] = {{"./Vendor", "Get"}, {"./Vendor", "Get"}};
    dmd_subtree null_uri = {NULL, "Get"};
    char long_id[DMD_SESSION_ID_MAX + 2];
    memset(long_id, 'a', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';

    CHECK_RC(dmd_server_start_delegation(NULL, &ok, id, sizeof id, &needed),
             DMD_ERR_NULL_ARGUMENT);
    CHECK_RC(dmd_server_start_delegation(n.s1, NULL, id, sizeof id, &needed),
             DMD_ERR_NULL_ARGUMENT);
    CHECK_RC(dmd_server_start_delegation(n.s1, &ok, id, sizeof id, NULL),
             DMD_ERR_NULL_ARGUMENT);
    CHECK(needed == 77);
#define BAD(field_assignment, expected, names)                                             \
    do {                                                                                   \
        r = ok;                                                                            \
        field_assignment;                                                                  \
        CHECK_RC(dmd_server_start_delegation(n.s1, &r, id, sizeof id, &needed), expected); \
        if (strstr(last_error(), names) == NULL)                                           \
            printf("    last error \"%s\" does not name \"%s\"\n", last_error(), names);   \
        CHECK(strstr(last_error(), names) != NULL);                                        \
    } while (0)
    BAD(r.peer = NULL, DMD_ERR_NULL_ARGUMENT, "request->peer");
    BAD(r.device_id = NULL, DMD_ERR_NULL_ARGUMENT, "request->device_id");
    BAD(r.manufacturer = NULL, DMD_ERR_NULL_ARGUMENT, "request->manufacturer");
    BAD(r.model = NULL, DMD_ERR_NULL_ARGUMENT, "request->model");
    BAD(r.subtrees = NULL, DMD_ERR_NULL_ARGUMENT, "subtrees");
    BAD(r.subtrees = &null_uri, DMD_ERR_NULL_ARGUMENT, "subtrees[].uri");
    BAD(r.device_id = "IMEI:\xff", DMD_ERR_INVALID_ARGUMENT, "request->device_id");
    BAD(r.method = 0, DMD_ERR_INVALID_ARGUMENT, "request->method");
    BAD(r.method = 5, DMD_ERR_INVALID_ARGUMENT, "request->method");
    BAD(r.delegation_type = (dmd_delegation_type)0, DMD_ERR_INVALID_ARGUMENT, "type");
    BAD(r.delegation_type = (dmd_delegation_type)3, DMD_ERR_INVALID_ARGUMENT, "type");
    BAD(r.subtrees = &bad_rights, DMD_ERR_INVALID_ARGUMENT, "subtrees[].rights");
    BAD(r.subtrees = &bad_uri, DMD_ERR_INVALID_ARGUMENT, "");
    BAD((r.subtrees = twice, r.subtree_count = 2), DMD_ERR_INVALID_ARGUMENT, "");
    /* No subtree: the header promises DMD_ERR_INVALID_ARGUMENT for a bad subtree; the
     * engine's NOTIF check reports this one as DMD_ERR_DECODE (reported). */
    r = ok;
    r.subtree_count = 0;
    dmd_result rc = dmd_server_start_delegation(n.s1, &r, id, sizeof id, &needed);
    CHECK(rc == DMD_ERR_INVALID_ARGUMENT || rc == DMD_ERR_DECODE);
    CHECK(strstr(last_error(), "Subtree") != NULL);
    BAD(r.expires_ms = -1, DMD_ERR_INVALID_ARGUMENT, "request->expires_ms");
    BAD(r.expires_ms = 1, DMD_ERR_INVALID_ARGUMENT, "expires"); /* 1970: not in the future */
    BAD(r.session_id = long_id, DMD_ERR_INVALID_ARGUMENT, "request->session_id");
    BAD(r.session_id = "", DMD_ERR_INVALID_ARGUMENT, "session_id");
    BAD(r.session_id = "with space", DMD_ERR_INVALID_ARGUMENT, "session_id");
    BAD(r.peer = DMS1, DMD_ERR_INVALID_ARGUMENT, "peer"); /* itself */
    BAD(r.peer = "not a server id", DMD_ERR_INVALID_ARGUMENT, "peer");
    /* Too small a buffer is checked first; nothing starts. */
    r = ok;
    r.session_id = "chosen-id-1";
    CHECK_RC(dmd_server_start_delegation(n.s1, &r, NULL, 0, &needed), DMD_ERR_BUFFER_TOO_SMALL);
    CHECK(needed == strlen("chosen-id-1") + 1);
    CHECK_RC(dmd_server_start_delegation(n.s1, &r, id, needed - 1, &needed),
             DMD_ERR_BUFFER_TOO_SMALL);
    CHECK_RC(dmd_server_start_delegation(n.s1, &r, NULL, 5, &needed), DMD_ERR_NULL_ARGUMENT);
    r.session_id = NULL;
    CHECK_RC(dmd_server_start_delegation(n.s1, &r, NULL, 0, &needed), DMD_ERR_BUFFER_TOO_SMALL);
    CHECK(needed > 1 && needed <= DMD_SESSION_ID_MAX + 1);
    size_t count = 99;
    CHECK_RC(dmd_server_session_count(n.s1, &count), DMD_OK);
    CHECK(count == 0);
    CHECK(link_pending(&n.link) == 0);

    /* Valid: an id of exactly DMD_SESSION_ID_MAX bytes fits DMD_SESSION_ID_MAX + 1. */
    r = ok;
    long_id[DMD_SESSION_ID_MAX] = '\0';
    r.session_id = long_id;
    CHECK_RC(dmd_server_start_delegation(n.s1, &r, id, sizeof id, &needed), DMD_OK);
    CHECK(strcmp(id, long_id) == 0 && needed == DMD_SESSION_ID_MAX + 1);
    /* The same id again, for another device. */
    r.device_id = "IMEI:000000000000003";
    CHECK_RC(dmd_server_start_delegation(n.s1, &r, id, sizeof id, &needed),
             DMD_ERR_INVALID_ARGUMENT);
    CHECK(strstr(last_error(), "already exists") != NULL);
    /* The same device while its delegation runs: refused (the header documents
     * DMD_ERR_INVALID_STATE; the engine's DeviceBusy maps to DMD_ERR_FAILED, reported). */
    r = ok;
    rc = dmd_server_start_delegation(n.s1, &r, id, sizeof id, &needed);
    CHECK(rc == DMD_ERR_INVALID_STATE || rc == DMD_ERR_FAILED);
    CHECK(strstr(last_error(), "being delegated") != NULL);
    /* The header allows ':' in a session id; the wire format does not (reported). */
    r.device_id = "IMEI:000000000000004";
    r.session_id = "with:colon";
    rc = dmd_server_start_delegation(n.s1, &r, id, sizeof id, &needed);
    CHECK(rc == DMD_OK || rc == DMD_ERR_INVALID_ARGUMENT);
    CHECK_RC(dmd_server_session_count(n.s1, &count), DMD_OK);
    CHECK(count == (rc == DMD_OK ? 2u : 1u));
    CHECK(link_pending(&n.link) == count);
#undef BAD
    net_close(&n);
    end();
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN); /* see dmd_server_new */
    (void)argc;
    (void)argv;
    test_transport_config();
    test_request_validation();
    test_delegation();
    test_out_of_order();
    test_send_failure_and_cancel();
    test_cancel_prepared();
    test_response_timeout();
    test_confirm_timeout();
    test_expiry();
    test_store();
    printf("test_transport: %d passed, %d failed\n", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}
