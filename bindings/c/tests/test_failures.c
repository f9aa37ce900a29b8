/*
 * Failures of dmd_server with C host callbacks, over HTTPS with mutual TLS (servers.h):
 * every failed delegation must end in a terminal state at both servers with the reason
 * code of its cause, and leave the device as it was (its dump compared before/after).
 *
 * - NULL callbacks: a host with every callback NULL refuses offers (101) as DMS-2 and as
 *   DMS-1; as DMS-1 (no execute) it fails with 130 naming the callback; as DMS-2 (no
 *   dm_account) with 161. Both sides roll back.
 * - Garbage from the host: execute answers 200 to a GET_TREE without a reply, with a reply
 *   that is not TNDS or holds two nodes, 200 to a GET_ACL with no ACL, status 0 to a
 *   write; open_dm_session returns 0; dm_account replies text that is not TNDS (Method 1:
 *   refused before the ack; Method 2: after it) -> ROLLED_BACK (or REJECTED), device
 *   unchanged.
 * - Re-entrance: callbacks call dmd_server_* on their own server: every call returns
 *   DMD_ERR_INVALID_STATE (recorded inside, checked outside); the delegation completes.
 * - ROLLBACK_FAILED: DMS-1's device refuses a write and then every write -> DMS-1
 *   ROLLBACK_FAILED with its pending operations; dmd_server_retry_rollback while still
 *   broken keeps it there, after the repair ends ROLLED_BACK with the device restored.
 *
 * Usage: test_failures [--quick]   (the same cases; they are fast)
 * Prints "test_failures: N passed, M failed"; exit status 0 when none failed.
 */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>

#include "servers.h"

/* Two servers over mTLS sharing one device, reused by several cases (a failed delegation
 * leaves the device as it was, so the next case starts from the same tree). */
typedef struct pair {
    dmd_sim_device *device;
    host h1, h2;
    dmd_host_callbacks cb1, cb2;
    dmd_server *s1, *s2;
} pair;

static void pair_open(pair *x, const pki_set *p) {
    x->device = new_device();
    host_init(&x->h1, DMS1, x->device);
    host_init(&x->h2, DMS2, x->device);
    x->cb1 = callbacks_for(&x->h1);
    x->cb2 = callbacks_for(&x->h2);
    x->s1 = https_server(p, DMS1, p->id1, &x->cb1, NULL);
    x->s2 = https_server(p, DMS2, p->id2, &x->cb2, NULL);
    set_peer(x->s1, DMS2, x->s2, NULL);
    set_peer(x->s2, DMS1, x->s1, NULL);
}

static void pair_close(pair *x) {
    dmd_server_free(x->s1);
    dmd_server_free(x->s2);
    dmd_sim_device_free(x->device);
}

/* Starts `method` on the initiator of `x` and waits for both ends. */
static void delegate(dmd_server *s1, dmd_server *s2, uint8_t method, dmd_delegation_type type,
                     dmd_session_state *st1, dmd_session_state *st2) {
    int dms1_starts = method == 1 || method == 3;
    dmd_delegation_request r = request_for(dms1_starts ? DMS2 : DMS1, method, type);
    char id[DMD_SESSION_ID_MAX + 1];
    size_t needed = 0;
    memset(st1, 0, sizeof *st1);
    memset(st2, 0, sizeof *st2);
    CHECK_RC(dmd_server_start_delegation(dms1_starts ? s1 : s2, &r, id, sizeof id, &needed),
             DMD_OK);
    *st1 = wait_end(s1, id);
    *st2 = wait_end(s2, id);
}

/* ---- NULL callbacks ------------------------------------------------------------------ */

static void test_null_callbacks(const pki_set *p) {
    dmd_sim_device *device = new_device();
    host h1, h2;
    host_init(&h1, DMS1, device);
    host_init(&h2, DMS2, device);
    dmd_host_callbacks cb1 = callbacks_for(&h1), cb2 = callbacks_for(&h2), none;
    memset(&none, 0, sizeof none);
    /* s1/s2: complete hosts; z1/z2: the same ServerIDs with every callback NULL. */
    dmd_server *s1 = https_server(p, DMS1, p->id1, &cb1, NULL);
    dmd_server *s2 = https_server(p, DMS2, p->id2, &cb2, NULL);
    dmd_server *z1 = https_server(p, DMS1, p->id1, &none, NULL);
    dmd_server *z2 = https_server(p, DMS2, p->id2, &none, NULL);
    set_peer(s1, DMS2, z2, NULL);
    set_peer(z2, DMS1, s1, NULL);
    set_peer(z1, DMS2, s2, NULL);
    set_peer(s2, DMS1, z1, NULL);
    char *before = dump(device);
    dmd_session_state a, b;

    begin("NULL callbacks: DMS-2 with no accept refuses a Method 1 offer -> both REJECTED 101");
    delegate(s1, z2, 1, DMD_DELEGATION_TYPE_PARTIAL, &a, &b);
    CHECK_STATE(a, DMD_STATE_REJECTED, 101);
    CHECK_STATE(b, DMD_STATE_REJECTED, 101);
    CHECK(strstr(b.reason, "no accept callback") != NULL);
    CHECK(strstr(a.reason, "no accept callback") != NULL); /* the nack carries the text */
    CHECK(host_view(&h1).trees == 0);
    CHECK_DEVICE_UNCHANGED(device, before);
    end();

    begin("NULL callbacks: DMS-1 with no accept refuses a Method 2 offer -> both REJECTED 101");
    delegate(z1, s2, 2, DMD_DELEGATION_TYPE_FULL, &a, &b);
    CHECK_STATE(a, DMD_STATE_REJECTED, 101);
    CHECK_STATE(b, DMD_STATE_REJECTED, 101);
    CHECK(host_view(&h2).accounts == 0 && host_view(&h2).rejected == 1);
    CHECK_DEVICE_UNCHANGED(device, before);
    end();

    begin("NULL callbacks: DMS-1 with no execute (Method 1) -> typed failure 130 naming the "
          "callback, both ROLLED_BACK, device unchanged");
    delegate(z1, s2, 1, DMD_DELEGATION_TYPE_FULL, &a, &b);
    CHECK_STATE(a, DMD_STATE_ROLLED_BACK, 130);
    CHECK_STATE(b, DMD_STATE_ROLLED_BACK, 130);
    CHECK(strstr(a.reason, "no execute callback") != NULL);
    CHECK(a.pending_operations == 0);
    CHECK(host_view(&h2).opens == 0 && host_view(&h2).rolled_back >= 1);
    CHECK_DEVICE_UNCHANGED(device, before);
    end();

    begin("NULL callbacks: DMS-2 with no dm_account (Method 2) -> 161 naming the callback, "
          "both ROLLED_BACK, device unchanged");
    delegate(s1, z2, 2, DMD_DELEGATION_TYPE_PARTIAL, &a, &b);
    CHECK_STATE(a, DMD_STATE_ROLLED_BACK, 161);
    CHECK_STATE(b, DMD_STATE_ROLLED_BACK, 161);
    CHECK(strstr(b.reason, "dm_account") != NULL);
    CHECK(host_view(&h1).offers >= 1 && host_view(&h1).writes == 0);
    CHECK_DEVICE_UNCHANGED(device, before);
    end();

    free(before);
    dmd_server_free(s1);
    dmd_server_free(s2);
    dmd_server_free(z1);
    dmd_server_free(z2);
    dmd_sim_device_free(device);
}

/* ---- garbage from the host ------------------------------------------------------------ */

typedef struct garbage_case {
    const char *name;
    uint8_t method;
    dmd_delegation_type type;
    /* DMS-1's host */
    int garbage_tree;
    garbage kind;
    int garbage_acl;
    int zero_write;
    /* DMS-2's host */
    int open_zero;
    int account_garbage;
    /* expected */
    dmd_state state;
    uint16_t reason;
    const char *detail; /* in DMS-1's reason text (NULL: not checked) */
} garbage_case;

static void test_garbage(const pki_set *p) {
    static const garbage_case cases[] = {
        {"garbage: execute answers 200 to the 2nd GET_TREE without a reply -> both "
         "ROLLED_BACK 130, device unchanged",
         1, DMD_DELEGATION_TYPE_PARTIAL, 2, GARBAGE_NO_REPLY, 0, 0, 0, 0, DMD_STATE_ROLLED_BACK,
         130, "without the TNDS document"},
        {"garbage: execute answers 200 to the 2nd GET_TREE with text that is not TNDS -> both "
         "ROLLED_BACK 130, device unchanged",
         1, DMD_DELEGATION_TYPE_PARTIAL, 2, GARBAGE_INVALID_TNDS, 0, 0, 0, 0,
         DMD_STATE_ROLLED_BACK, 130, "TNDS is not valid"},
        {"garbage: execute answers 200 to the 1st GET_TREE with two top-level nodes -> both "
         "ROLLED_BACK 130, device unchanged",
         2, DMD_DELEGATION_TYPE_FULL, 1, GARBAGE_TWO_NODES, 0, 0, 0, 0, DMD_STATE_ROLLED_BACK,
         130, "exactly one top-level node"},
        {"garbage: execute answers 200 to a GET_ACL with text that is not an ACL -> both "
         "ROLLED_BACK 130, device unchanged",
         1, DMD_DELEGATION_TYPE_PARTIAL, 0, GARBAGE_NONE, 1, 0, 0, 0, DMD_STATE_ROLLED_BACK,
         130, "ACL is not valid"},
        {"garbage: execute returns status 0 for the 3rd write -> both ROLLED_BACK 130, device "
         "unchanged",
         1, DMD_DELEGATION_TYPE_FULL, 0, GARBAGE_NONE, 0, 3, 0, 0, DMD_STATE_ROLLED_BACK, 130,
         "returned 0"},
        {"garbage: DMS-2's open_dm_session returns status 0 -> both ROLLED_BACK 132, the "
         "prepared device restored",
         1, DMD_DELEGATION_TYPE_PARTIAL, 0, GARBAGE_NONE, 0, 0, 1, 0, DMD_STATE_ROLLED_BACK,
         132, "open_dm_session"},
        {"garbage: DMS-2's dm_account replies text that is not TNDS (Method 1) -> both "
         "REJECTED 161 before the ack",
         1, DMD_DELEGATION_TYPE_FULL, 0, GARBAGE_NONE, 0, 0, 0, 1, DMD_STATE_REJECTED, 161,
         "TNDS"},
        {"garbage: DMS-2's dm_account replies text that is not TNDS (Method 2) -> both "
         "ROLLED_BACK 161, device unchanged",
         2, DMD_DELEGATION_TYPE_PARTIAL, 0, GARBAGE_NONE, 0, 0, 0, 1, DMD_STATE_ROLLED_BACK,
         161, "TNDS"},
    };
    pair x;
    pair_open(&x, p);
    char *before = dump(x.device);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const garbage_case *c = &cases[i];
        begin(c->name);
        host_reset(&x.h1);
        host_reset(&x.h2);
        host_lock();
        x.h1.garbage_tree = c->garbage_tree;
        x.h1.garbage_kind = c->kind;
        x.h1.garbage_acl = c->garbage_acl;
        x.h1.zero_write = c->zero_write;
        x.h2.open_zero = c->open_zero;
        x.h2.account_garbage = c->account_garbage;
        host_unlock();
        dmd_session_state a, b;
        delegate(x.s1, x.s2, c->method, c->type, &a, &b);
        CHECK_STATE(a, c->state, c->reason);
        CHECK_STATE(b, c->state, c->reason);
        CHECK(a.role == DMD_ROLE_DELEGATING && b.role == DMD_ROLE_DELEGATED);
        CHECK(a.pending_operations == 0 && a.deadline_ms == 0 && b.deadline_ms == 0);
        if (c->detail != NULL) {
            const char *text = c->open_zero || c->account_garbage ? b.reason : a.reason;
            if (strstr(text, c->detail) == NULL)
                printf("    reason \"%s\" does not name \"%s\"\n", text, c->detail);
            CHECK(strstr(text, c->detail) != NULL);
        }
        host v1 = host_view(&x.h1), v2 = host_view(&x.h2);
        if (c->state == DMD_STATE_ROLLED_BACK) {
            CHECK(v1.failed == 1 && v1.rolled_back == 1 && v1.event_reason == c->reason);
            CHECK(v2.rolled_back == 1 && v2.completed == 0);
        } else {
            CHECK(v1.rejected == 1 && v2.rejected == 1 && v1.trees == 0);
        }
        if (c->open_zero) CHECK(v2.opens == 1 && v1.writes > 6); /* prepared, then undone */
        CHECK_DEVICE_UNCHANGED(x.device, before);
        end();
    }
    free(before);
    pair_close(&x);
}

/* ---- re-entrance ------------------------------------------------------------------------ */

static void test_reentrance(const pki_set *p) {
    begin("re-entrance: callbacks calling dmd_server_* get DMD_ERR_INVALID_STATE, the "
          "delegation completes");
    pair x;
    pair_open(&x, p);
    host_lock();
    x.h1.reenter = x.s1;
    x.h2.reenter = x.s2;
    host_unlock();
    dmd_session_state a, b;
    delegate(x.s1, x.s2, 1, DMD_DELEGATION_TYPE_PARTIAL, &a, &b);
    CHECK_STATE(a, DMD_STATE_COMPLETED, 0);
    CHECK_STATE(b, DMD_STATE_COMPLETED, 0);
    host v1 = host_view(&x.h1), v2 = host_view(&x.h2);
    /* DMS-1: execute and on_event called back; DMS-2: accept, dm_account, open, on_event. */
    CHECK(v1.reentered > 5 && v2.reentered > 3);
    CHECK(v1.reenter_wrong == 0 && v2.reenter_wrong == 0);
    CHECK(v1.reenter_count_rc == DMD_ERR_INVALID_STATE);
    CHECK(v2.reenter_count_rc == DMD_ERR_INVALID_STATE);
    /* Outside a callback the same calls work. */
    size_t count = 0;
    CHECK_RC(dmd_server_session_count(x.s1, &count), DMD_OK);
    CHECK(count == 1);
    /* A completed session: nothing to cancel or retry. */
    char id[DMD_SESSION_ID_MAX + 1];
    size_t needed = 0;
    CHECK_RC(dmd_server_session_id(x.s1, 0, id, sizeof id, &needed), DMD_OK);
    CHECK_RC(dmd_server_retry_rollback(x.s1, id, NULL), DMD_ERR_INVALID_STATE);
    CHECK_RC(dmd_server_cancel(x.s1, id, NULL), DMD_ERR_INVALID_STATE);
    pair_close(&x);
    end();
}

/* ---- ROLLBACK_FAILED and dmd_server_retry_rollback ------------------------------------------ */

static void test_rollback_failed(const pki_set *p) {
    begin("rollback failed: the 3rd write refused, then every write fails -> DMS-1 "
          "ROLLBACK_FAILED (2 pending), retried after the repair -> ROLLED_BACK, device "
          "restored");
    pair x;
    pair_open(&x, p);
    char *before = dump(x.device);
    host_lock();
    x.h1.refuse_write = 3;
    x.h1.break_on_refusal = 1;
    host_unlock();
    dmd_delegation_request r = request_for(DMS2, 1, DMD_DELEGATION_TYPE_FULL);
    char id[DMD_SESSION_ID_MAX + 1];
    size_t needed = 0;
    CHECK_RC(dmd_server_start_delegation(x.s1, &r, id, sizeof id, &needed), DMD_OK);
    dmd_session_state a = wait_end(x.s1, id), b = wait_end(x.s2, id);
    CHECK_STATE(a, DMD_STATE_ROLLBACK_FAILED, 130);
    CHECK_STATE(b, DMD_STATE_ROLLED_BACK, 130);
    CHECK(a.terminal == 1 && a.pending_operations == 2); /* DMS-2's account and its marker */
    host v1 = host_view(&x.h1);
    CHECK(v1.incomplete == 1 && v1.rolled_back == 0);
    char *broken = dump(x.device);
    CHECK(broken != NULL && has_account(broken, DMS2)); /* the device needs attention */

    /* Retrying while the device still fails changes nothing. */
    dmd_session_state again;
    memset(&again, 0, sizeof again);
    CHECK_RC(dmd_server_retry_rollback(x.s1, id, &again), DMD_OK);
    CHECK_STATE(again, DMD_STATE_ROLLBACK_FAILED, 130);
    CHECK(again.pending_operations == 2);
    CHECK_RC(dmd_server_retry_rollback(x.s2, id, &again), DMD_ERR_INVALID_STATE);

    /* Repaired: the retry undoes both writes. */
    host_lock();
    x.h1.broken = 0;
    host_unlock();
    memset(&again, 0, sizeof again);
    CHECK_RC(dmd_server_retry_rollback(x.s1, id, &again), DMD_OK);
    CHECK_STATE(again, DMD_STATE_ROLLED_BACK, 130);
    CHECK(again.pending_operations == 0 && again.terminal == 1);
    CHECK_DEVICE_UNCHANGED(x.device, before);
    CHECK(host_view(&x.h1).rolled_back == 1);
    dmd_session_state now = state_now(x.s1, id);
    CHECK_STATE(now, DMD_STATE_ROLLED_BACK, 130);
    CHECK_RC(dmd_server_retry_rollback(x.s1, id, NULL), DMD_ERR_INVALID_STATE);
    free(before);
    free(broken);
    pair_close(&x);
    end();
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN); /* see dmd_server_new */
    (void)argc;
    (void)argv;
    pki_set p;
    if (!make_pki(&p)) {
        printf("test PKI: %s\n", last_error());
        return 1;
    }
    test_null_callbacks(&p);
    test_garbage(&p);
    test_reentrance(&p);
    test_rollback_failed(&p);
    free_pki(&p);
    printf("test_failures: %d passed, %d failed\n", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}
