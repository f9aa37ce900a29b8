/*
 * What the dmd_server tests share (test_server.c, test_failures.c, test_transport.c):
 *
 * - a C host over one simulated device (dmd_sim_device) whose callbacks can misbehave on
 *   request (refuse a write, fail every write, reply garbage, status 0, reject offers) and
 *   record what happened (offers, events, re-entrant calls);
 * - two servers over HTTPS with mutual TLS under a dmd_test_pki, or over an in-process
 *   queue (dmd_transport) that the test thread pumps with dmd_server_receive;
 * - device dumps and small checks on them.
 *
 * Everything is `static inline` so that a program using only part of it compiles with
 * -Wall -Wextra -Werror. Include after harness.h, with _POSIX_C_SOURCE 200809L defined.
 */
#ifndef DMDELEGATE_TEST_SERVERS_H
#define DMDELEGATE_TEST_SERVERS_H

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dmdelegate.h"

#include "harness.h"

#define DMS1 "dms1.operator.example"
#define DMS2 "dms2.enterprise.example"
#define DMS1_URL "https://dms1.operator.example/dm"
#define DMS2_URL "https://dms2.enterprise.example/dm"
#define DEVICE "IMEI:490154203237518"
#define MANUFACTURER "Acme"
#define MODEL "Phone X"
#define BOOTSTRAP_URL "https://bootstrap.enterprise.example/bs"
#define WAIT_MS 120000u

/* ---- time ---------------------------------------------------------------------------- */

/* Milliseconds since the Unix epoch (the clock of expires_ms and deadline_ms). */
static inline int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

/* ---- a C host over a simulated device ------------------------------------------------ */

/* What the execute callback replies to a GET_TREE or GET_ACL chosen for garbage. */
typedef enum garbage {
    GARBAGE_NONE = 0,
    GARBAGE_NO_REPLY,     /* 200 without setting the reply */
    GARBAGE_INVALID_TNDS, /* 200 with a reply that is not a TNDS document */
    GARBAGE_TWO_NODES,    /* 200 with a TNDS document of two top-level nodes */
    GARBAGE_INVALID_ACL   /* 200 with a reply that is not an ACL */
} garbage;

typedef struct host {
    const char *server_id;
    dmd_sim_device *device;

    /* Behaviour: set while no delegation runs (host_reset clears it). */
    uint16_t reject_code;   /* accept: 0 accepts, else refuses with this code */
    int refuse_write;       /* execute: refuse the Nth write (from 1) with 425 */
    int break_on_refusal;   /* execute: from that refusal on, fail every write with 500 */
    int broken;             /*   (set by the refusal; clear it to "repair" the device) */
    int zero_write;         /* execute: answer the Nth write with status 0, not running it */
    int garbage_tree;       /* execute: the Nth GET_TREE gets `garbage_kind` */
    int garbage_acl;        /* execute: the Nth GET_ACL gets GARBAGE_INVALID_ACL */
    garbage garbage_kind;
    uint16_t open_status;   /* open_dm_session: 0 forwards to the device, else returns it */
    int open_zero;          /* open_dm_session: returns 0 */
    int account_garbage;    /* dm_account: 200 with a reply that is not TNDS */
    dmd_server *reenter;    /* callbacks call dmd_server_* on it and record the results */

    /* What happened. */
    int writes, trees, acls, opens, accounts, urls;
    int offers;
    uint16_t offer_preset_code; /* *reject_code as the library preset it */
    uint8_t offer_method;
    dmd_delegation_type offer_type;
    dmd_role offer_role;
    size_t offer_subtrees;
    int64_t offer_expires_ms;
    char offer_peer[128];
    char offer_uri[128];
    char offer_rights[128];
    int reentered;      /* callbacks that called back into the library */
    int reenter_wrong;  /* calls that did not return what they must */
    dmd_result reenter_count_rc; /* what dmd_server_session_count returned inside */
    int events, state_changes, completed, failed, rolled_back, incomplete, rejected, expired;
    uint16_t event_reason; /* reason code of the last FAILED/ROLLED_BACK/REJECTED... event */
} host;

/* Guards every host's fields: callbacks for different sessions may run concurrently, on
 * the library's threads, while the test thread reads the records. */
static pthread_mutex_t g_host_lock = PTHREAD_MUTEX_INITIALIZER;

static inline void host_lock(void) { pthread_mutex_lock(&g_host_lock); }
static inline void host_unlock(void) { pthread_mutex_unlock(&g_host_lock); }

static inline void host_init(host *h, const char *server_id, dmd_sim_device *device) {
    host_lock();
    memset(h, 0, sizeof *h);
    h->server_id = server_id;
    h->device = device;
    host_unlock();
}

/* Clears behaviour and records, keeping the id and the device. */
static inline void host_reset(host *h) { host_init(h, h->server_id, h->device); }

/* A copy of the host's fields, taken under the lock (for the test thread's checks). */
static inline host host_view(host *h) {
    host_lock();
    host copy = *h;
    host_unlock();
    return copy;
}

static inline void copy_str(char *dst, size_t size, const char *src) {
    snprintf(dst, size, "%s", src != NULL ? src : "(null)");
}

/* From a callback: every dmd_server_* function that blocks must refuse with
 * DMD_ERR_INVALID_STATE (and change nothing); dmd_server_local_port may be called from any
 * thread (DMD_ERR_INVALID_STATE only for a server on its own transport). Records what it
 * saw in h. */
static inline void host_reenter(host *h) {
    host_lock();
    dmd_server *s = h->reenter;
    host_unlock();
    if (s == NULL) return;
    int wrong = 0;
    size_t count = 12345, needed = 0, confirmed = 77;
    dmd_result count_rc = dmd_server_session_count(s, &count);
    wrong += count_rc != DMD_ERR_INVALID_STATE || count != 12345;
    dmd_session_state st;
    memset(&st, 0, sizeof st);
    wrong += dmd_server_wait(s, "any-session", 0, &st) != DMD_ERR_INVALID_STATE;
    wrong += dmd_server_cancel(s, "any-session", NULL) != DMD_ERR_INVALID_STATE;
    wrong += dmd_server_retry_rollback(s, "any-session", &st) != DMD_ERR_INVALID_STATE;
    wrong += dmd_server_client_connected(s, DEVICE, &confirmed) != DMD_ERR_INVALID_STATE;
    wrong += confirmed != 77;
    char id[DMD_SESSION_ID_MAX + 1];
    wrong += dmd_server_session_id(s, 0, id, sizeof id, &needed) != DMD_ERR_INVALID_STATE;
    dmd_subtree t = {".", "Get"};
    dmd_delegation_request r = {DMS2, 1, DMD_DELEGATION_TYPE_FULL, "IMEI:1", "A", "M", &t, 1, 0,
                                NULL};
    wrong += dmd_server_start_delegation(s, &r, id, sizeof id, &needed) != DMD_ERR_INVALID_STATE;
    int duplicate = 5;
    const uint8_t junk[] = "x";
    wrong += dmd_server_receive(s, DMS2, junk, 1, &duplicate) != DMD_ERR_INVALID_STATE;
    wrong += duplicate != 5;
    wrong += dmd_server_set_peers(s, NULL, 0) != DMD_ERR_INVALID_STATE;
    uint16_t port = 0; /* allowed on any thread: no blocking */
    dmd_result port_rc = dmd_server_local_port(s, &port);
    wrong += port_rc == DMD_OK ? port == 0 : port_rc != DMD_ERR_INVALID_STATE;
    host_lock();
    h->reentered++;
    h->reenter_wrong += wrong;
    h->reenter_count_rc = count_rc;
    host_unlock();
}

static inline int is_write(const dmd_command *c) {
    uint32_t k = dmd_command_get_kind(c);
    return k == DMD_COMMAND_ADD || k == DMD_COMMAND_REPLACE_ACL || k == DMD_COMMAND_DELETE;
}

static inline int host_accept(void *userdata, const dmd_offer *offer, uint16_t *reject_code) {
    host *h = userdata;
    host_reenter(h);
    host_lock();
    h->offers++;
    h->offer_preset_code = *reject_code;
    h->offer_method = offer->method;
    h->offer_type = offer->delegation_type;
    h->offer_role = offer->role;
    h->offer_subtrees = offer->subtree_count;
    h->offer_expires_ms = offer->expires_ms;
    copy_str(h->offer_peer, sizeof h->offer_peer, offer->peer);
    if (offer->subtree_count > 0) {
        copy_str(h->offer_uri, sizeof h->offer_uri, offer->subtrees[0].uri);
        copy_str(h->offer_rights, sizeof h->offer_rights, offer->subtrees[0].rights);
    }
    uint16_t code = h->reject_code;
    host_unlock();
    if (code != 0) {
        *reject_code = code;
        return 0;
    }
    if (strcmp(offer->device_id, DEVICE) != 0 || offer->subtree_count == 0) {
        *reject_code = 102; /* unknown device */
        return 0;
    }
    return 1;
}

typedef enum action { FORWARD, REFUSE_425, FAIL_500, STATUS_ZERO, GARBAGE } action;

static inline uint16_t host_execute(void *userdata, const char *device_id,
                                    const dmd_command *command, dmd_reply *reply) {
    host *h = userdata;
    host_reenter(h);
    if (strcmp(device_id, DEVICE) != 0) return 404;
    uint32_t kind = dmd_command_get_kind(command);
    action what = FORWARD;
    garbage junk = GARBAGE_NONE;
    host_lock();
    if (is_write(command)) {
        int n = ++h->writes;
        if (h->broken) {
            what = FAIL_500;
        } else if (n == h->refuse_write) {
            what = REFUSE_425;
            if (h->break_on_refusal) h->broken = 1;
        } else if (n == h->zero_write) {
            what = STATUS_ZERO;
        }
    } else if (kind == DMD_COMMAND_GET_TREE) {
        if (++h->trees == h->garbage_tree) {
            what = GARBAGE;
            junk = h->garbage_kind;
        }
    } else if (kind == DMD_COMMAND_GET_ACL) {
        if (++h->acls == h->garbage_acl) {
            what = GARBAGE;
            junk = GARBAGE_INVALID_ACL;
        }
    }
    host_unlock();
    switch (what) {
    case REFUSE_425:
        dmd_reply_set_text(reply, "refused by the C host (test)");
        return 425;
    case FAIL_500:
        dmd_reply_set_text(reply, "the device is broken (test)");
        return 500;
    case STATUS_ZERO:
        return 0;
    case GARBAGE:
        switch (junk) {
        case GARBAGE_INVALID_TNDS:
            dmd_reply_set_text(reply, "<MgmtTree><Node>this is not TNDS");
            break;
        case GARBAGE_TWO_NODES:
            dmd_reply_set_text(reply,
                               "<MgmtTree xmlns=\"syncml:dmddf1.2\"><VerDTD>1.2</VerDTD>"
                               "<Node><NodeName>A</NodeName><Value>1</Value></Node>"
                               "<Node><NodeName>B</NodeName><Value>2</Value></Node></MgmtTree>");
            break;
        case GARBAGE_INVALID_ACL:
            dmd_reply_set_text(reply, "this is not an ACL");
            break;
        default:
            break; /* GARBAGE_NO_REPLY */
        }
        return 200;
    default:
        return dmd_sim_device_execute(h->device, h->server_id, command, reply);
    }
}

static inline uint16_t host_open_dm_session(void *userdata, const char *device_id) {
    host *h = userdata;
    (void)device_id;
    host_reenter(h);
    host_lock();
    h->opens++;
    uint16_t status = h->open_status;
    int zero = h->open_zero;
    host_unlock();
    if (zero) return 0;
    if (status != 0) return status;
    return dmd_sim_device_open_session(h->device, h->server_id);
}

/* The TNDS of the simple account of `server_id` (its URL derived from it) into buf. */
static inline dmd_result account_tnds(const char *server_id, char *buf, size_t len) {
    char url[256];
    size_t needed = 0;
    snprintf(url, sizeof url, "https://%s/dm", server_id);
    return dmd_dmacc_simple_tnds(server_id, url, "client-secret", "server-secret", buf, len,
                                 &needed);
}

static inline uint16_t host_dm_account(void *userdata, const char *device_id, dmd_reply *reply) {
    host *h = userdata;
    (void)device_id;
    host_reenter(h);
    host_lock();
    h->accounts++;
    int junk = h->account_garbage;
    host_unlock();
    if (junk) return dmd_reply_set_text(reply, "<MgmtTree>not an account") == DMD_OK ? 200 : 500;
    char buf[4096];
    if (account_tnds(h->server_id, buf, sizeof buf) != DMD_OK) return 500;
    return dmd_reply_set_text(reply, buf) == DMD_OK ? 200 : 500;
}

static inline uint16_t host_bootstrap_url(void *userdata, const char *device_id,
                                          dmd_reply *reply) {
    host *h = userdata;
    (void)device_id;
    host_lock();
    h->urls++;
    host_unlock();
    return dmd_reply_set_text(reply, BOOTSTRAP_URL) == DMD_OK ? 200 : 500;
}

static inline void host_on_event(void *userdata, const dmd_event *event) {
    host *h = userdata;
    host_reenter(h);
    host_lock();
    h->events++;
    switch (event->kind) {
    case DMD_EVENT_STATE_CHANGED: h->state_changes++; break;
    case DMD_EVENT_COMPLETED: h->completed++; break;
    case DMD_EVENT_FAILED: h->failed++; break;
    case DMD_EVENT_ROLLED_BACK: h->rolled_back++; break;
    case DMD_EVENT_ROLLBACK_INCOMPLETE: h->incomplete++; break;
    case DMD_EVENT_REJECTED: h->rejected++; break;
    case DMD_EVENT_EXPIRED: h->expired++; break;
    }
    if (event->reason_code != 0) h->event_reason = event->reason_code;
    host_unlock();
}

static inline dmd_host_callbacks callbacks_for(host *h) {
    dmd_host_callbacks cb;
    memset(&cb, 0, sizeof cb);
    cb.userdata = h;
    cb.accept = host_accept;
    cb.execute = host_execute;
    cb.open_dm_session = host_open_dm_session;
    cb.dm_account = host_dm_account;
    cb.bootstrap_url = host_bootstrap_url;
    cb.on_event = host_on_event;
    return cb;
}

/* ---- device dumps ------------------------------------------------------------------- */

/* The device's dump (malloc'd; NULL on failure). */
static inline char *dump(const dmd_sim_device *d) {
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

/* Whether the dump holds an account (a ServerID leaf) for server_id. */
static inline int has_account(const char *dump_text, const char *server_id) {
    const char *p = dump_text;
    char want[256];
    snprintf(want, sizeof want, "<Value>%s</Value>", server_id);
    while (p != NULL && (p = strstr(p, "<NodeName>ServerID</NodeName>")) != NULL) {
        const char *value = strstr(p, "<Value>");
        const char *next = strstr(p + 1, "<NodeName>");
        if (value != NULL && (next == NULL || value < next) &&
            strncmp(value, want, strlen(want)) == 0)
            return 1;
        p = next;
    }
    return 0;
}

/* How many ACLs in the dump name server_id. */
static inline int acls_naming(const char *dump_text, const char *server_id) {
    int n = 0;
    const char *p = dump_text;
    while ((p = strstr(p, "<ACL>")) != NULL) {
        const char *end = strstr(p, "</ACL>");
        if (end == NULL) break;
        const char *hit = strstr(p, server_id);
        if (hit != NULL && hit < end) n++;
        p = end;
    }
    return n;
}

/* The ACL of the node named `name` (first match) into buf; "" when it has none. */
static inline void acl_of(const char *dump_text, const char *name, char *buf, size_t len) {
    char want[256];
    buf[0] = '\0';
    snprintf(want, sizeof want, "<NodeName>%s</NodeName><RTProperties><ACL>", name);
    const char *p = strstr(dump_text, want);
    if (p == NULL) return;
    p += strlen(want);
    const char *end = strstr(p, "</ACL>");
    if (end == NULL) return;
    size_t n = (size_t)(end - p) < len - 1 ? (size_t)(end - p) : len - 1;
    memcpy(buf, p, n);
    buf[n] = '\0';
}

/* Checks that the device dump equals `before` (printing the first difference). */
#define CHECK_DEVICE_UNCHANGED(device, before)                                             \
    do {                                                                                   \
        char *now_ = dump(device);                                                         \
        CHECK(now_ != NULL && (before) != NULL);                                           \
        if (now_ != NULL && (before) != NULL && strcmp(now_, (before)) != 0) {             \
            size_t i_ = 0;                                                                 \
            while (now_[i_] != '\0' && now_[i_] == (before)[i_]) i_++;                     \
            size_t from_ = i_ > 80 ? i_ - 80 : 0;                                          \
            printf("    device changed at byte %zu: before \"%.160s\", now \"%.160s\"\n", i_, \
                   (before) + from_, now_ + from_);                                        \
            CHECK(!"the device dump equals the one before");                               \
        }                                                                                  \
        free(now_);                                                                        \
    } while (0)

/* ---- states ----------------------------------------------------------------------- */

static inline const char *state_name(dmd_state s) {
    switch (s) {
    case DMD_STATE_NONE: return "NONE";
    case DMD_STATE_NOTIF_SENT: return "NOTIF_SENT";
    case DMD_STATE_AWAITING_START: return "AWAITING_START";
    case DMD_STATE_AWAITING_BOOTSTRAP_URL: return "AWAITING_BOOTSTRAP_URL";
    case DMD_STATE_PREPARING: return "PREPARING";
    case DMD_STATE_AWAITING_CONFIRM: return "AWAITING_CONFIRM";
    case DMD_STATE_FINALIZING: return "FINALIZING";
    case DMD_STATE_AWAITING_PREPARED: return "AWAITING_PREPARED";
    case DMD_STATE_AWAITING_BOOTSTRAP_REQUEST: return "AWAITING_BOOTSTRAP_REQUEST";
    case DMD_STATE_OPENING_SESSION: return "OPENING_SESSION";
    case DMD_STATE_AWAITING_CLIENT: return "AWAITING_CLIENT";
    case DMD_STATE_ROLLING_BACK: return "ROLLING_BACK";
    case DMD_STATE_COMPLETED: return "COMPLETED";
    case DMD_STATE_REJECTED: return "REJECTED";
    case DMD_STATE_ROLLED_BACK: return "ROLLED_BACK";
    case DMD_STATE_ROLLBACK_FAILED: return "ROLLBACK_FAILED";
    case DMD_STATE_EXPIRED: return "EXPIRED";
    }
    return "?";
}

/* Checks a session's state and reason code, printing both on a mismatch. */
#define CHECK_STATE(st, want_state, want_reason)                                           \
    do {                                                                                   \
        if ((st).state != (want_state) || (st).reason_code != (want_reason)) {             \
            printf("    %s:%d: %s is %s (%u \"%s\"), expected %s (%u)\n", __FILE__, __LINE__, \
                   #st, state_name((st).state), (unsigned)(st).reason_code, (st).reason,   \
                   state_name(want_state), (unsigned)(want_reason));                       \
            g_case_failed = 1;                                                             \
        }                                                                                  \
    } while (0)

/* Waits for a session to end at a server (up to WAIT_MS); the state is zeroed first. */
static inline dmd_session_state wait_end(dmd_server *s, const char *id) {
    dmd_session_state st;
    memset(&st, 0, sizeof st);
    CHECK_RC(dmd_server_wait(s, id, WAIT_MS, &st), DMD_OK);
    CHECK(st.terminal == 1);
    return st;
}

/* The current state of a session (dmd_server_wait with timeout 0). */
static inline dmd_session_state state_now(dmd_server *s, const char *id) {
    dmd_session_state st;
    memset(&st, 0, sizeof st);
    CHECK_RC(dmd_server_wait(s, id, 0, &st), DMD_OK);
    return st;
}

/* Polls until the session is in `want` (or `ms` pass); returns the last state seen. */
static inline dmd_session_state poll_state(dmd_server *s, const char *id, dmd_state want,
                                           long ms) {
    dmd_session_state st;
    int64_t until = now_ms() + ms;
    for (;;) {
        memset(&st, 0, sizeof st);
        if (dmd_server_wait(s, id, 0, &st) == DMD_OK && st.state == want) break;
        if (now_ms() > until) break;
        sleep_ms(50);
    }
    return st;
}

/* ---- requests --------------------------------------------------------------------- */

/* A request for DEVICE: the whole tree (Full) or ./Vendor/Apps (Partial). */
static inline dmd_delegation_request request_for(const char *peer, uint8_t method,
                                                 dmd_delegation_type type) {
    static const dmd_subtree full = {".", "Get"};
    static const dmd_subtree apps = {"./Vendor/Apps", "Add+Get+Replace"};
    dmd_delegation_request r;
    memset(&r, 0, sizeof r);
    r.peer = peer;
    r.method = method;
    r.delegation_type = type;
    r.device_id = DEVICE;
    r.manufacturer = MANUFACTURER;
    r.model = MODEL;
    r.subtrees = type == DMD_DELEGATION_TYPE_FULL ? &full : &apps;
    r.subtree_count = 1;
    return r;
}

static inline dmd_sim_device *new_device(void) {
    dmd_sim_device *device = NULL;
    CHECK_RC(dmd_sim_device_new(DEVICE, MANUFACTURER, MODEL, DMS1, DMS1_URL, "client-secret-1",
                                "server-secret-1", &device),
             DMD_OK);
    return device;
}

/* ---- two servers over HTTPS with mutual TLS ---------------------------------------- */

typedef struct pki_set {
    dmd_test_pki *pki;
    dmd_identity *id1, *id2;
} pki_set;

static inline int make_pki(pki_set *p) {
    memset(p, 0, sizeof *p);
    if (dmd_test_pki_new("C test CA", &p->pki) != DMD_OK) return 0;
    if (dmd_test_pki_issue(p->pki, DMS1, &p->id1) != DMD_OK) return 0;
    if (dmd_test_pki_issue(p->pki, DMS2, &p->id2) != DMD_OK) return 0;
    return 1;
}

static inline void free_pki(pki_set *p) {
    dmd_identity_free(p->id1);
    dmd_identity_free(p->id2);
    dmd_test_pki_free(p->pki);
}

/* An HTTPS server on 127.0.0.1, port chosen by the system, no peers yet, with the HTTPS
 * settings `https` (NULL: the defaults). */
static inline dmd_server *https_server_with(const pki_set *p, const char *server_id,
                                            const dmd_identity *id, const dmd_host_callbacks *cb,
                                            const dmd_timeouts *timeouts,
                                            const dmd_https_options *https) {
    dmd_server_config config;
    memset(&config, 0, sizeof config);
    config.server_id = server_id;
    config.listen_address = "127.0.0.1:0";
    config.cert_pem = dmd_identity_cert_pem(id);
    config.key_pem = dmd_identity_key_pem(id);
    config.trust_pem = dmd_test_pki_ca_pem(p->pki);
    config.timeouts = timeouts;
    config.https = https;
    dmd_server *s = NULL;
    CHECK_RC(dmd_server_new(&config, cb, &s), DMD_OK);
    return s;
}

/* An HTTPS server on 127.0.0.1 with the default HTTPS settings, no peers yet. */
static inline dmd_server *https_server(const pki_set *p, const char *server_id,
                                       const dmd_identity *id, const dmd_host_callbacks *cb,
                                       const dmd_timeouts *timeouts) {
    return https_server_with(p, server_id, id, cb, timeouts, NULL);
}

/* Tells `s` that its one peer `peer_id` is `peer` (identity: NULL or the TLS name). */
static inline void set_peer(dmd_server *s, const char *peer_id, const dmd_server *peer,
                            const char *identity) {
    uint16_t port = 0;
    CHECK_RC(dmd_server_local_port(peer, &port), DMD_OK);
    char endpoint[256], address[64];
    snprintf(endpoint, sizeof endpoint, "https://%s:%u/dm-delegation", peer_id, (unsigned)port);
    snprintf(address, sizeof address, "127.0.0.1:%u", (unsigned)port);
    dmd_peer p = {peer_id, endpoint, address, identity};
    CHECK_RC(dmd_server_set_peers(s, &p, 1), DMD_OK);
}

/* ---- two servers over an in-process queue (dmd_transport) --------------------------- */

typedef struct queued {
    struct queued *next;
    char from[128];
    char to[128];
    dmd_message_type type;
    size_t len;
    uint8_t *data;
} queued;

/* The sending side of one server: dmd_transport.userdata. */
typedef struct endpoint {
    struct qlink *link;
    const char *server_id;
    dmd_message_type fail_type; /* send returns -1 for messages of this type (0: never) */
    int failed;                 /* sends refused so far */
} endpoint;

typedef struct qlink {
    pthread_mutex_t lock;
    queued *head, *tail;
    int sent;
    endpoint ends[2]; /* [0] DMS1's, [1] DMS2's */
    dmd_server *servers[2];
    char log[512]; /* the types delivered, in order, e.g. "NOTIF RES START" */
} qlink;

static inline const char *type_name(dmd_message_type t) {
    switch (t) {
    case DMD_MESSAGE_TYPE_NOTIF: return "NOTIF";
    case DMD_MESSAGE_TYPE_RES: return "RES";
    case DMD_MESSAGE_TYPE_START: return "START";
    case DMD_MESSAGE_TYPE_PREPARED: return "PREPARED";
    case DMD_MESSAGE_TYPE_CONFIRM: return "CONFIRM";
    case DMD_MESSAGE_TYPE_FAILURE: return "FAILURE";
    case DMD_MESSAGE_TYPE_BOOTSTRAP_URL_REQUEST: return "BOOTSTRAP_URL_REQUEST";
    case DMD_MESSAGE_TYPE_BOOTSTRAP_URL: return "BOOTSTRAP_URL";
    }
    return "?";
}

/* The type of an encoded message, 0 when it does not decode. */
static inline dmd_message_type message_type(const uint8_t *data, size_t len) {
    dmd_message *m = NULL;
    dmd_message_type t = (dmd_message_type)0;
    if (dmd_message_decode(data, len, &m) == DMD_OK) {
        if (dmd_message_kind(m, &t) != DMD_OK) t = (dmd_message_type)0;
    }
    dmd_message_free(m);
    return t;
}

/* dmd_transport.send: copies the message into the queue. Runs on the library's threads:
 * it calls no dmd_server_* function. */
static inline int32_t link_send(void *userdata, const char *recipient, const uint8_t *document,
                                size_t len) {
    endpoint *e = userdata;
    qlink *l = e->link;
    dmd_message_type type = message_type(document, len);
    pthread_mutex_lock(&l->lock);
    if (e->fail_type != 0 && type == e->fail_type) {
        e->failed++;
        pthread_mutex_unlock(&l->lock);
        return -1;
    }
    pthread_mutex_unlock(&l->lock);
    queued *q = calloc(1, sizeof *q);
    if (q == NULL) return -1;
    q->data = malloc(len + 1);
    if (q->data == NULL) {
        free(q);
        return -1;
    }
    memcpy(q->data, document, len);
    q->data[len] = 0;
    q->len = len;
    q->type = type;
    copy_str(q->from, sizeof q->from, e->server_id);
    copy_str(q->to, sizeof q->to, recipient);
    pthread_mutex_lock(&l->lock);
    if (l->tail != NULL)
        l->tail->next = q;
    else
        l->head = q;
    l->tail = q;
    l->sent++;
    pthread_mutex_unlock(&l->lock);
    return 0;
}

static inline void link_init(qlink *l) {
    memset(l, 0, sizeof *l);
    pthread_mutex_init(&l->lock, NULL);
    l->ends[0].link = l;
    l->ends[0].server_id = DMS1;
    l->ends[1].link = l;
    l->ends[1].server_id = DMS2;
}

static inline void queued_free(queued *q) {
    if (q != NULL) free(q->data);
    free(q);
}

/* The next queued message (the caller frees it with queued_free), or NULL. */
static inline queued *link_pop(qlink *l) {
    pthread_mutex_lock(&l->lock);
    queued *q = l->head;
    if (q != NULL) {
        l->head = q->next;
        if (l->head == NULL) l->tail = NULL;
        q->next = NULL;
    }
    pthread_mutex_unlock(&l->lock);
    return q;
}

static inline size_t link_pending(qlink *l) {
    size_t n = 0;
    pthread_mutex_lock(&l->lock);
    for (queued *q = l->head; q != NULL; q = q->next) n++;
    pthread_mutex_unlock(&l->lock);
    return n;
}

/* Waits up to `ms` for a message in the queue (a server may send one just after the
 * state change a test waited for). Returns whether one is there. */
static inline int link_wait(qlink *l, long ms) {
    int64_t until = now_ms() + ms;
    while (link_pending(l) == 0) {
        if (now_ms() > until) return 0;
        sleep_ms(10);
    }
    return 1;
}

static inline void link_clear(qlink *l) {
    queued *q;
    while ((q = link_pop(l)) != NULL) queued_free(q);
}

static inline void link_destroy(qlink *l) {
    link_clear(l);
    pthread_mutex_destroy(&l->lock);
}

/* A server whose messages travel over `l` (as DMS1 when `which` is 0, DMS2 when 1). */
static inline dmd_server *link_server(qlink *l, int which, const dmd_host_callbacks *cb,
                                      const dmd_timeouts *timeouts, const char *store_path) {
    dmd_transport t;
    t.userdata = &l->ends[which];
    t.send = link_send;
    dmd_server_config config;
    memset(&config, 0, sizeof config);
    config.server_id = l->ends[which].server_id;
    config.timeouts = timeouts;
    config.store_path = store_path;
    config.transport = &t; /* copied by dmd_server_new */
    dmd_server *s = NULL;
    CHECK_RC(dmd_server_new(&config, cb, &s), DMD_OK);
    l->servers[which] = s;
    return s;
}

/* Hands one message to its recipient with the sender as the authenticated peer. */
static inline dmd_result link_deliver(qlink *l, const queued *q, int *duplicate) {
    dmd_server *to = strcmp(q->to, DMS1) == 0 ? l->servers[0]
                     : strcmp(q->to, DMS2) == 0 ? l->servers[1]
                                                : NULL;
    if (to == NULL) return DMD_ERR_WRONG_RECIPIENT;
    size_t used = strlen(l->log);
    snprintf(l->log + used, sizeof l->log - used, "%s%s", used ? " " : "", type_name(q->type));
    return dmd_server_receive(to, q->from, q->data, q->len, duplicate);
}

/* Delivers every queued message, also those sent meanwhile, dropping (and counting) the
 * ones of type `drop` (0: none). Each delivery must return DMD_OK and no duplicate.
 * Returns how many were delivered. */
static inline int link_pump(qlink *l, dmd_message_type drop, int *dropped) {
    int n = 0;
    queued *q;
    while ((q = link_pop(l)) != NULL) {
        if (drop != 0 && q->type == drop) {
            if (dropped != NULL) (*dropped)++;
        } else {
            int duplicate = -1;
            dmd_result rc = link_deliver(l, q, &duplicate);
            if (rc != DMD_OK || duplicate != 0)
                printf("    delivering %s to %s: %d (%s), duplicate %d (last error: \"%s\")\n",
                       type_name(q->type), q->to, (int)rc, dmd_result_message(rc), duplicate,
                       last_error());
            CHECK(rc == DMD_OK && duplicate == 0);
            n++;
        }
        queued_free(q);
    }
    return n;
}

#endif /* DMDELEGATE_TEST_SERVERS_H */
