/*
 * Tests of the dmdelegate C ABI (include/dmdelegate.h), from C.
 *
 * Usage: test_api VECTORS_DIR [--quick]
 *   VECTORS_DIR  the repository's vectors/ directory (valid/ and invalid/ inside)
 *   --quick      one delegation over the network instead of all 4 methods x Full/Partial
 *
 * Prints one line per case ("ok - ..." or "not ok - ...") and last
 * "test_api: N passed, M failed"; exits 0 only when nothing failed.
 * scripts/c-tests.sh runs it under ASan/UBSan and under valgrind.
 */
#define _POSIX_C_SOURCE 200809L

#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dmdelegate.h"

#include "harness.h"

/* ---- files ------------------------------------------------------------------------- */

typedef struct file {
    char name[256];
    uint8_t *data;
    size_t len;
} file;

typedef struct file_list {
    file *files;
    size_t count;
} file_list;

static int by_name(const void *a, const void *b) {
    return strcmp(((const file *)a)->name, ((const file *)b)->name);
}

static int read_file(const char *path, uint8_t **data, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    size_t cap = 4096, n = 0;
    uint8_t *buf = malloc(cap);
    if (!buf) {
        fclose(f);
        return -1;
    }
    for (;;) {
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (n < cap) break;
        uint8_t *bigger = realloc(buf, cap * 2);
        if (!bigger) {
            free(buf);
            fclose(f);
            return -1;
        }
        buf = bigger;
        cap *= 2;
    }
    int err = ferror(f);
    fclose(f);
    if (err) {
        free(buf);
        return -1;
    }
    *data = buf;
    *len = n;
    return 0;
}

/* Every *.xml file in dir, sorted by name. Returns 0 on success. */
static int read_xml_files(const char *dir, file_list *out) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    file_list list = {NULL, 0};
    size_t cap = 0;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        if (n < 5 || strcmp(e->d_name + n - 4, ".xml") != 0) continue;
        if (n >= sizeof list.files[0].name) {
            rc = -1;
            break;
        }
        if (list.count == cap) {
            cap = cap ? cap * 2 : 16;
            file *bigger = realloc(list.files, cap * sizeof *bigger);
            if (!bigger) {
                rc = -1;
                break;
            }
            list.files = bigger;
        }
        file *f = &list.files[list.count];
        memcpy(f->name, e->d_name, n + 1);
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (read_file(path, &f->data, &f->len) != 0) {
            rc = -1;
            break;
        }
        list.count++;
    }
    closedir(d);
    if (list.files) qsort(list.files, list.count, sizeof *list.files, by_name);
    *out = list;
    return rc;
}

static void free_files(file_list *list) {
    for (size_t i = 0; i < list->count; i++) free(list->files[i].data);
    free(list->files);
    list->files = NULL;
    list->count = 0;
}

/* ---- version, result codes, last error --------------------------------------------- */

static void test_version(void) {
    begin("dmd_version is a static x.y.z string");
    const char *v = dmd_version();
    CHECK(v != NULL);
    if (v) {
        unsigned major, minor, patch;
        CHECK(sscanf(v, "%u.%u.%u", &major, &minor, &patch) == 3);
        CHECK(v == dmd_version());
    }
    end();
}

static void test_result_messages(void) {
    begin("dmd_result_message: every code described, unknown codes too");
    const dmd_result all[] = {
        DMD_OK, DMD_ERR_NULL_ARGUMENT, DMD_ERR_INVALID_ARGUMENT, DMD_ERR_DECODE,
        DMD_ERR_INVALID_STATE, DMD_ERR_UNKNOWN_SESSION, DMD_ERR_AUTHENTICATION,
        DMD_ERR_DEVICE, DMD_ERR_HOST, DMD_ERR_TRANSPORT, DMD_ERR_STORE, DMD_ERR_FAILED,
        DMD_ERR_PANIC, DMD_ERR_BUFFER_TOO_SMALL, DMD_ERR_WRONG_RECIPIENT, DMD_ERR_RUNTIME,
    };
    const char *unknown = dmd_result_message((dmd_result)9999);
    CHECK(unknown != NULL && strcmp(unknown, "unknown result code") == 0);
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        /* The numbers are part of the ABI: dense, from 0, in this order. */
        CHECK((int)all[i] == (int)i);
        const char *m = dmd_result_message(all[i]);
        CHECK(m != NULL && m[0] != '\0' && strcmp(m, unknown) != 0);
        for (size_t j = 0; j < i; j++) CHECK(strcmp(m, dmd_result_message(all[j])) != 0);
    }
    CHECK(strcmp(dmd_result_message(DMD_OK), "ok") == 0);
    end();
}

static void *fail_on_other_thread(void *arg) {
    (void)arg;
    size_t needed = 0;
    dmd_result rc = dmd_message_session_id(NULL, NULL, 0, &needed);
    char buf[256];
    size_t n = dmd_last_error_message(buf, sizeof buf);
    int ok = rc == DMD_ERR_NULL_ARGUMENT && n > 1 && strstr(buf, "message") != NULL;
    return ok ? (void *)1 : NULL;
}

static void test_last_error(void) {
    begin("dmd_last_error_message: set on failure, cleared on success, truncated, per thread");
    const uint8_t junk[] = "<not-delegation/>";
    CHECK_RC(dmd_message_validate(junk, sizeof junk - 1), DMD_ERR_DECODE);

    size_t needed = dmd_last_error_message(NULL, 0);
    CHECK(needed > 1);
    char *full = malloc(needed);
    CHECK(full != NULL);
    if (full) {
        CHECK(dmd_last_error_message(full, needed) == needed);
        CHECK(strlen(full) == needed - 1);
        CHECK(strstr(full, "Delegation") != NULL);

        /* Truncated: len - 1 bytes and a NUL; the return value still says the full size. */
        char small[6];
        memset(small, 'x', sizeof small);
        CHECK(dmd_last_error_message(small, sizeof small) == needed);
        CHECK(small[5] == '\0' && strlen(small) == 5 && strncmp(small, full, 5) == 0);
        /* len 0: nothing written. */
        small[0] = 'x';
        CHECK(dmd_last_error_message(small, 0) == needed);
        CHECK(small[0] == 'x');
        /* Reading does not consume it. */
        CHECK(dmd_last_error_message(NULL, 0) == needed);

        /* Another thread's failure does not touch this thread's message. */
        pthread_t t;
        void *thread_ok = NULL;
        CHECK(pthread_create(&t, NULL, fail_on_other_thread, NULL) == 0);
        CHECK(pthread_join(t, &thread_ok) == 0);
        CHECK(thread_ok != NULL);
        char again[1024];
        dmd_last_error_message(again, sizeof again);
        CHECK(strcmp(again, full) == 0);
        free(full);
    }

    /* A success clears it. */
    CHECK_RC(dmd_message_validate(junk, sizeof junk - 1), DMD_ERR_DECODE);
    dmd_message *m = NULL;
    uint8_t ok_msg[] =
        "<Delegation xmlns=\"urn:dmdelegate:params:xml:ns:delegation-1\" version=\"1.0\">"
        "<Header><SessionID>s-1</SessionID><Seq>2</Seq><Sender>dms2.enterprise.example</Sender>"
        "<Recipient>dms1.operator.example</Recipient><Method>1</Method>"
        "<Timestamp>2026-11-21T10:00:00Z</Timestamp></Header><Confirm/></Delegation>";
    CHECK_RC(dmd_message_decode(ok_msg, sizeof ok_msg - 1, &m), DMD_OK);
    CHECK(dmd_last_error_message(NULL, 0) == 1);
    char empty[4] = "zzz";
    CHECK(dmd_last_error_message(empty, sizeof empty) == 1 && empty[0] == '\0');
    dmd_message_free(m);
    end();
}

/* ---- the codec --------------------------------------------------------------------- */

/* Reads one string field by the needed-length convention: size query, then exact size. */
typedef dmd_result (*string_getter)(const dmd_message *, char *, size_t, size_t *);

static char *get_string(string_getter get, const dmd_message *m) {
    size_t needed = 0;
    if (get(m, NULL, 0, &needed) != DMD_ERR_BUFFER_TOO_SMALL || needed == 0) return NULL;
    char *buf = malloc(needed);
    if (!buf) return NULL;
    size_t again = 0;
    if (get(m, buf, needed, &again) != DMD_OK || again != needed || strlen(buf) != needed - 1) {
        free(buf);
        return NULL;
    }
    return buf;
}

typedef struct header {
    dmd_message_type kind;
    uint32_t seq;
    uint8_t method;
    char *session_id;
    char *sender;
    char *recipient;
} header;

static int read_header(const dmd_message *m, header *h) {
    memset(h, 0, sizeof *h);
    if (dmd_message_kind(m, &h->kind) != DMD_OK) return -1;
    if (dmd_message_seq(m, &h->seq) != DMD_OK) return -1;
    if (dmd_message_method(m, &h->method) != DMD_OK) return -1;
    h->session_id = get_string(dmd_message_session_id, m);
    h->sender = get_string(dmd_message_sender, m);
    h->recipient = get_string(dmd_message_recipient, m);
    return h->session_id && h->sender && h->recipient ? 0 : -1;
}

static void free_header(header *h) {
    free(h->session_id);
    free(h->sender);
    free(h->recipient);
}

static int same_header(const header *a, const header *b) {
    return a->kind == b->kind && a->seq == b->seq && a->method == b->method &&
           strcmp(a->session_id, b->session_id) == 0 && strcmp(a->sender, b->sender) == 0 &&
           strcmp(a->recipient, b->recipient) == 0;
}

static void test_valid_vectors(const char *vectors) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/valid", vectors);
    file_list list;
    int read_rc = read_xml_files(dir, &list);
    begin("vectors/valid: readable, at least 14 files");
    CHECK(read_rc == 0);
    CHECK(list.count >= 14);
    end();

    int kinds_seen[9] = {0};
    for (size_t i = 0; i < list.count; i++) {
        const file *f = &list.files[i];
        char name[512];
        snprintf(name, sizeof name, "vectors/valid/%s: validate, decode, read, encode, round trip",
                 f->name);
        begin(name);
        CHECK_RC(dmd_message_validate(f->data, f->len), DMD_OK);

        dmd_message *m = NULL;
        CHECK_RC(dmd_message_decode(f->data, f->len, &m), DMD_OK);
        if (!m) {
            end();
            continue;
        }
        header h;
        CHECK(read_header(m, &h) == 0);
        CHECK(h.kind >= DMD_MESSAGE_TYPE_NOTIF && h.kind <= DMD_MESSAGE_TYPE_BOOTSTRAP_URL);
        if (h.kind >= 1 && h.kind <= 8) kinds_seen[h.kind] = 1;
        CHECK(h.seq >= 1);
        CHECK(h.method >= 1 && h.method <= 4);

        dmd_bytes *enc = NULL;
        CHECK_RC(dmd_message_encode(m, &enc), DMD_OK);
        const uint8_t *data = dmd_bytes_data(enc);
        size_t len = dmd_bytes_len(enc);
        CHECK(data != NULL && len > 0);
        if (data) {
            CHECK(data[len] == '\0');
            CHECK(strlen((const char *)data) == len);
            CHECK(strncmp((const char *)data, "<?xml", 5) == 0);
        }
        CHECK_RC(dmd_message_validate(data, len), DMD_OK);

        /* decode(encode(m)) has the same header, and encoding it again gives the same bytes. */
        dmd_message *again = NULL;
        CHECK_RC(dmd_message_decode(data, len, &again), DMD_OK);
        if (again) {
            header h2;
            CHECK(read_header(again, &h2) == 0);
            CHECK(h.session_id && h2.session_id && same_header(&h, &h2));
            free_header(&h2);
            dmd_bytes *enc2 = NULL;
            CHECK_RC(dmd_message_encode(again, &enc2), DMD_OK);
            CHECK(dmd_bytes_len(enc2) == len);
            CHECK(data && dmd_bytes_data(enc2) && memcmp(dmd_bytes_data(enc2), data, len) == 0);
            dmd_bytes_free(enc2);
            dmd_message_free(again);
        }
        free_header(&h);
        dmd_bytes_free(enc);
        dmd_message_free(m);
        end();
    }

    begin("vectors/valid: every one of the 8 message types is covered");
    for (int k = 1; k <= 8; k++) CHECK(kinds_seen[k]);
    end();
    free_files(&list);
}

static void test_invalid_vectors(const char *vectors) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/invalid", vectors);
    file_list list;
    int read_rc = read_xml_files(dir, &list);
    begin("vectors/invalid: readable, at least 20 files");
    CHECK(read_rc == 0);
    CHECK(list.count >= 20);
    end();

    for (size_t i = 0; i < list.count; i++) {
        const file *f = &list.files[i];
        char name[512];
        snprintf(name, sizeof name, "vectors/invalid/%s: DMD_ERR_DECODE with a message", f->name);
        begin(name);
        CHECK_RC(dmd_message_validate(f->data, f->len), DMD_ERR_DECODE);
        CHECK(dmd_last_error_message(NULL, 0) > 1);

        dmd_message *sentinel = (dmd_message *)&list; /* never dereferenced */
        dmd_message *m = sentinel;
        CHECK_RC(dmd_message_decode(f->data, f->len, &m), DMD_ERR_DECODE);
        CHECK(m == sentinel); /* outputs are written only on success */
        char msg[512];
        size_t n = dmd_last_error_message(msg, sizeof msg);
        CHECK(n > 1 && msg[0] != '\0');
        if (n > 1) printf("    %s\n", msg);
        if (m != sentinel) dmd_message_free(m);
        end();
    }
    free_files(&list);
}

/* A message for the accessor tests: DELEGATION_CONFIRM, seq 2, method 1. */
static dmd_message *sample_message(void) {
    static const char xml[] =
        "<Delegation xmlns=\"urn:dmdelegate:params:xml:ns:delegation-1\" version=\"1.0\">"
        "<Header><SessionID>sess-42</SessionID><Seq>2</Seq>"
        "<Sender>dms2.enterprise.example</Sender><Recipient>dms1.operator.example</Recipient>"
        "<Method>1</Method><Timestamp>2026-11-21T10:00:00Z</Timestamp></Header>"
        "<Confirm/></Delegation>";
    dmd_message *m = NULL;
    if (dmd_message_decode((const uint8_t *)xml, sizeof xml - 1, &m) != DMD_OK) return NULL;
    return m;
}

static void test_null_arguments(void) {
    begin("NULL arguments give DMD_ERR_NULL_ARGUMENT and write nothing");
    dmd_message *m = sample_message();
    CHECK(m != NULL);
    const uint8_t xml[] = "<x/>";
    dmd_message *out_m = NULL;
    dmd_bytes *out_b = NULL;
    dmd_message_type kind = (dmd_message_type)0;
    uint32_t seq = 77;
    uint8_t method = 77;
    char buf[64] = "untouched";
    size_t needed = 77;

    CHECK_RC(dmd_message_validate(NULL, 0), DMD_ERR_NULL_ARGUMENT);
    CHECK_RC(dmd_message_validate(NULL, 10), DMD_ERR_NULL_ARGUMENT);
    CHECK(strstr(last_error(), "xml") != NULL);
    CHECK_RC(dmd_message_decode(NULL, 4, &out_m), DMD_ERR_NULL_ARGUMENT);
    CHECK_RC(dmd_message_decode(xml, sizeof xml - 1, NULL), DMD_ERR_NULL_ARGUMENT);
    CHECK(strstr(last_error(), "out") != NULL);
    CHECK_RC(dmd_message_kind(NULL, &kind), DMD_ERR_NULL_ARGUMENT);
    CHECK_RC(dmd_message_kind(m, NULL), DMD_ERR_NULL_ARGUMENT);
    CHECK_RC(dmd_message_seq(NULL, &seq), DMD_ERR_NULL_ARGUMENT);
    CHECK_RC(dmd_message_seq(m, NULL), DMD_ERR_NULL_ARGUMENT);
    CHECK_RC(dmd_message_method(NULL, &method), DMD_ERR_NULL_ARGUMENT);
    CHECK_RC(dmd_message_method(m, NULL), DMD_ERR_NULL_ARGUMENT);

    string_getter getters[] = {dmd_message_session_id, dmd_message_sender,
                               dmd_message_recipient};
    for (size_t i = 0; i < 3; i++) {
        CHECK_RC(getters[i](NULL, buf, sizeof buf, &needed), DMD_ERR_NULL_ARGUMENT);
        CHECK(strstr(last_error(), "message") != NULL);
        CHECK_RC(getters[i](m, buf, sizeof buf, NULL), DMD_ERR_NULL_ARGUMENT);
        CHECK(strstr(last_error(), "needed") != NULL);
        CHECK_RC(getters[i](m, NULL, sizeof buf, &needed), DMD_ERR_NULL_ARGUMENT);
        CHECK(strstr(last_error(), "buf") != NULL);
    }
    CHECK_RC(dmd_message_encode(NULL, &out_b), DMD_ERR_NULL_ARGUMENT);
    CHECK_RC(dmd_message_encode(m, NULL), DMD_ERR_NULL_ARGUMENT);
    CHECK(dmd_bytes_data(NULL) == NULL);
    CHECK(dmd_bytes_len(NULL) == 0);
    CHECK_RC(dmd_local_pair_new(NULL), DMD_ERR_NULL_ARGUMENT);
    dmd_outcome outcome;
    memset(&outcome, 0x5a, sizeof outcome);
    CHECK_RC(dmd_local_pair_run(NULL, 1, DMD_DELEGATION_TYPE_PARTIAL, &outcome),
             DMD_ERR_NULL_ARGUMENT);
    CHECK(strstr(last_error(), "pair") != NULL);

    /* Frees accept NULL. */
    dmd_message_free(NULL);
    dmd_bytes_free(NULL);
    dmd_local_pair_free(NULL);

    /* Nothing was written. */
    CHECK(out_m == NULL && out_b == NULL && (int)kind == 0 && seq == 77 && method == 77);
    CHECK(needed == 77 && strcmp(buf, "untouched") == 0);
    unsigned char expect[sizeof outcome];
    memset(expect, 0x5a, sizeof expect);
    CHECK(memcmp(&outcome, expect, sizeof outcome) == 0);
    dmd_message_free(m);
    end();
}

static void test_accessors_and_small_buffers(void) {
    begin("accessors; string outputs: size query, too small, exact fit");
    dmd_message *m = sample_message();
    CHECK(m != NULL);
    if (!m) {
        end();
        return;
    }
    dmd_message_type kind;
    uint32_t seq;
    uint8_t method;
    CHECK_RC(dmd_message_kind(m, &kind), DMD_OK);
    CHECK(kind == DMD_MESSAGE_TYPE_CONFIRM);
    CHECK_RC(dmd_message_seq(m, &seq), DMD_OK);
    CHECK(seq == 2);
    CHECK_RC(dmd_message_method(m, &method), DMD_OK);
    CHECK(method == 1);

    /* "sess-42" needs 8 bytes. */
    size_t needed = 0;
    CHECK_RC(dmd_message_session_id(m, NULL, 0, &needed), DMD_ERR_BUFFER_TOO_SMALL);
    CHECK(needed == 8);
    CHECK(strstr(last_error(), "8 bytes") != NULL);

    char buf[16];
    memset(buf, '#', sizeof buf);
    needed = 0;
    CHECK_RC(dmd_message_session_id(m, buf, 7, &needed), DMD_ERR_BUFFER_TOO_SMALL);
    CHECK(needed == 8);
    for (size_t i = 0; i < sizeof buf; i++) CHECK(buf[i] == '#'); /* buf untouched */
    CHECK_RC(dmd_message_session_id(m, buf, 1, &needed), DMD_ERR_BUFFER_TOO_SMALL);
    CHECK(buf[0] == '#');

    needed = 0;
    CHECK_RC(dmd_message_session_id(m, buf, 8, &needed), DMD_OK);
    CHECK(needed == 8 && strcmp(buf, "sess-42") == 0 && buf[8] == '#');
    CHECK(dmd_last_error_message(NULL, 0) == 1);
    CHECK_RC(dmd_message_session_id(m, buf, sizeof buf, &needed), DMD_OK);
    CHECK(strcmp(buf, "sess-42") == 0);

    CHECK_RC(dmd_message_sender(m, buf, sizeof buf, &needed), DMD_ERR_BUFFER_TOO_SMALL);
    CHECK(needed == strlen("dms2.enterprise.example") + 1);
    char big[64];
    CHECK_RC(dmd_message_sender(m, big, sizeof big, &needed), DMD_OK);
    CHECK(strcmp(big, "dms2.enterprise.example") == 0);
    CHECK_RC(dmd_message_recipient(m, big, sizeof big, &needed), DMD_OK);
    CHECK(strcmp(big, "dms1.operator.example") == 0);
    dmd_message_free(m);
    end();
}

/* ---- delegations over HTTPS with mutual TLS ---------------------------------------- */

static const char *state_name(dmd_state s) {
    switch (s) {
    case DMD_STATE_NONE: return "NONE";
    case DMD_STATE_COMPLETED: return "COMPLETED";
    case DMD_STATE_REJECTED: return "REJECTED";
    case DMD_STATE_ROLLED_BACK: return "ROLLED_BACK";
    case DMD_STATE_ROLLBACK_FAILED: return "ROLLBACK_FAILED";
    case DMD_STATE_EXPIRED: return "EXPIRED";
    default: return "(not terminal)";
    }
}

static void test_local_pair_arguments(void) {
    begin("dmd_local_pair_run: bad method or type, NULL out; outputs untouched");
    dmd_local_pair *pair = NULL;
    CHECK_RC(dmd_local_pair_new(&pair), DMD_OK);
    if (!pair) {
        end();
        return;
    }
    dmd_outcome out = {DMD_STATE_EXPIRED, DMD_STATE_EXPIRED, 4242};
    CHECK_RC(dmd_local_pair_run(pair, 0, DMD_DELEGATION_TYPE_FULL, &out),
             DMD_ERR_INVALID_ARGUMENT);
    CHECK(strstr(last_error(), "method") != NULL);
    CHECK_RC(dmd_local_pair_run(pair, 5, DMD_DELEGATION_TYPE_FULL, &out),
             DMD_ERR_INVALID_ARGUMENT);
    CHECK_RC(dmd_local_pair_run(pair, 1, (dmd_delegation_type)0, &out),
             DMD_ERR_INVALID_ARGUMENT);
    CHECK_RC(dmd_local_pair_run(pair, 1, (dmd_delegation_type)3, &out),
             DMD_ERR_INVALID_ARGUMENT);
    CHECK(strstr(last_error(), "type") != NULL);
    CHECK_RC(dmd_local_pair_run(pair, 1, DMD_DELEGATION_TYPE_FULL, NULL),
             DMD_ERR_NULL_ARGUMENT);
    CHECK(out.dms1_state == DMD_STATE_EXPIRED && out.dms2_state == DMD_STATE_EXPIRED &&
          out.reason_code == 4242);
    /* None of these used the pair up: it still runs its one delegation. */
    CHECK_RC(dmd_local_pair_run(pair, 2, DMD_DELEGATION_TYPE_PARTIAL, &out), DMD_OK);
    CHECK(out.dms1_state == DMD_STATE_COMPLETED && out.dms2_state == DMD_STATE_COMPLETED);
    dmd_local_pair_free(pair);
    end();
}

static void run_delegation(uint8_t method, dmd_delegation_type type) {
    char name[128];
    snprintf(name, sizeof name, "Method %u %s over HTTPS with mutual TLS: both COMPLETED",
             (unsigned)method, type == DMD_DELEGATION_TYPE_FULL ? "Full" : "Partial");
    begin(name);
    dmd_local_pair *pair = NULL;
    CHECK_RC(dmd_local_pair_new(&pair), DMD_OK);
    if (!pair) {
        end();
        return;
    }
    dmd_outcome out;
    memset(&out, 0, sizeof out);
    CHECK_RC(dmd_local_pair_run(pair, method, type, &out), DMD_OK);
    if (out.dms1_state != DMD_STATE_COMPLETED || out.dms2_state != DMD_STATE_COMPLETED ||
        out.reason_code != 0) {
        printf("    DMS-1 %s, DMS-2 %s, reason %u\n", state_name(out.dms1_state),
               state_name(out.dms2_state), (unsigned)out.reason_code);
        g_case_failed = 1;
    }
    /* The device is delegated now: the pair runs no second delegation. */
    dmd_outcome again = out;
    CHECK_RC(dmd_local_pair_run(pair, method, type, &again), DMD_ERR_INVALID_STATE);
    /* Field by field: the struct's padding bytes are unspecified. */
    CHECK(again.dms1_state == out.dms1_state && again.dms2_state == out.dms2_state &&
          again.reason_code == out.reason_code);
    dmd_local_pair_free(pair);
    end();
}

typedef struct concurrent_run {
    uint8_t method;
    dmd_result rc;
    dmd_outcome out;
} concurrent_run;

static void *run_on_thread(void *arg) {
    concurrent_run *r = arg;
    dmd_local_pair *pair = NULL;
    r->rc = dmd_local_pair_new(&pair);
    if (r->rc == DMD_OK) {
        r->rc = dmd_local_pair_run(pair, r->method, DMD_DELEGATION_TYPE_PARTIAL, &r->out);
        dmd_local_pair_free(pair);
    }
    return NULL;
}

static void test_concurrent_pairs(void) {
    begin("two pairs on two threads at once (Methods 3 and 4, Partial)");
    concurrent_run runs[2];
    memset(runs, 0, sizeof runs);
    runs[0].method = 3;
    runs[1].method = 4;
    pthread_t threads[2];
    for (int i = 0; i < 2; i++) CHECK(pthread_create(&threads[i], NULL, run_on_thread, &runs[i]) == 0);
    for (int i = 0; i < 2; i++) CHECK(pthread_join(threads[i], NULL) == 0);
    for (int i = 0; i < 2; i++) {
        CHECK(runs[i].rc == DMD_OK);
        CHECK(runs[i].out.dms1_state == DMD_STATE_COMPLETED);
        CHECK(runs[i].out.dms2_state == DMD_STATE_COMPLETED);
    }
    end();
}

int main(int argc, char **argv) {
    /* A peer closing a TLS connection must not kill the process (see dmd_server_new). */
    signal(SIGPIPE, SIG_IGN);
    if (argc < 2) {
        fprintf(stderr, "usage: %s VECTORS_DIR [--quick]\n", argv[0]);
        return 2;
    }
    const char *vectors = argv[1];
    int quick = argc > 2 && strcmp(argv[2], "--quick") == 0;

    test_version();
    test_result_messages();
    test_last_error();
    test_valid_vectors(vectors);
    test_invalid_vectors(vectors);
    test_null_arguments();
    test_accessors_and_small_buffers();
    test_local_pair_arguments();
    if (quick) {
        run_delegation(1, DMD_DELEGATION_TYPE_FULL);
    } else {
        for (uint8_t method = 1; method <= 4; method++) {
            run_delegation(method, DMD_DELEGATION_TYPE_FULL);
            run_delegation(method, DMD_DELEGATION_TYPE_PARTIAL);
        }
        test_concurrent_pairs();
    }

    printf("test_api: %d passed, %d failed\n", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}
