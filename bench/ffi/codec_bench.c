/*
 * codec_bench: the per-call cost of the codec through the C ABI, the C side of
 * scripts/bench-ffi.sh. The same calls, vectors, rounds and JSON as
 * `dmdelegate-bench ffi-baseline` (bench/src/ffi.rs) and bench/ffi/codec_bench.py.
 *
 *   codec_bench [--iterations N] [--rounds R] [--vectors DIR] [--encoded-dir DIR]
 *
 * For every *.xml in DIR (default vectors/valid), in file-name order, after a warm-up of
 * N / 10 calls, R rounds (default 5) of N calls (default 10000); the figure is the
 * fastest round's nanoseconds per call:
 *   decode_ns: dmd_message_decode + dmd_message_free;
 *   validate_ns: dmd_message_validate (decodes and validates, keeps nothing: decode_ns -
 *     validate_ns is the cost of handing a message over);
 *   encode_ns: dmd_message_encode + dmd_bytes_free (the C ABI validates, then encodes).
 * And call_ns, for the first vector's message: dmd_message_seq, the cheapest call there
 * is (the fixed cost of a call through the C ABI).
 *
 * Checked outside the timed loops (each failure counts in "errors"; exit status 1 if
 * any): every vector decodes; its encoding decodes again and encodes to the same bytes.
 * With --encoded-dir, every vector's encoding is written there under the vector's name.
 * Every timed call's result is checked too.
 *
 * Prints one JSON line: {"ffi_baseline": {"language": "c", "iterations", "rounds",
 * "errors", "call_ns", "vectors": [{"name", "bytes", "encoded_bytes", "decode_ns",
 * "validate_ns", "encode_ns"} or {"name", "error"}]}}.
 *
 * Build (scripts/bench-ffi.sh does): gcc -O2 -Wall -Wextra -Werror -Iinclude
 *   bench/ffi/codec_bench.c -Ltarget/release -l:libdmdelegate.so
 *   -Wl,-rpath,$PWD/target/release -o codec_bench
 */
#define _POSIX_C_SOURCE 200809L

#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "dmdelegate.h"

typedef struct {
    size_t iterations;
    size_t rounds;
    const char *vectors;
    const char *encoded_dir;
} options;

/* One vector's result: figures, or an error. */
typedef struct {
    char *name;
    size_t bytes;
    size_t encoded_bytes;
    double decode_ns;
    double validate_ns;
    double encode_ns;
    char error[512];
} result;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The calling thread's last dmdelegate error, into buf. */
static void last_error(char *buf, size_t len) {
    if (dmd_last_error_message(buf, len) == 0 && len > 0) {
        buf[0] = '\0';
    }
}

/* Prints s as a JSON string. */
static void json_string(const char *s) {
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            printf("\\%c", *p);
        } else if (*p < 0x20) {
            printf("\\u%04x", *p);
        } else {
            putchar(*p);
        }
    }
    putchar('"');
}

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The *.xml names in dir, sorted (strcmp: the byte order Rust and Python sort by); NULL
 * on failure, with the reason on stderr. */
static char **vector_names(const char *dir, size_t *count) {
    DIR *d = opendir(dir);
    if (d == NULL) {
        fprintf(stderr, "codec_bench: %s: %s\n", dir, strerror(errno));
        return NULL;
    }
    size_t n = 0, cap = 16;
    char **names = malloc(cap * sizeof *names);
    struct dirent *e = NULL;
    while (names != NULL && (e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len <= 4 || strcmp(e->d_name + len - 4, ".xml") != 0) {
            continue;
        }
        if (n == cap) {
            char **more = realloc(names, 2 * cap * sizeof *names);
            if (more == NULL) {
                break;
            }
            names = more;
            cap *= 2;
        }
        names[n] = strdup(e->d_name);
        if (names[n] == NULL) {
            break;
        }
        n++;
    }
    closedir(d);
    if (names == NULL || e != NULL) {
        fprintf(stderr, "codec_bench: out of memory\n");
        for (size_t i = 0; names != NULL && i < n; i++) {
            free(names[i]);
        }
        free(names);
        return NULL;
    }
    qsort(names, n, sizeof *names, by_name);
    *count = n;
    return names;
}

/* The whole file at path, malloc'd; NULL on failure. */
static uint8_t *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    size_t cap = 4096, n = 0;
    uint8_t *buf = malloc(cap);
    while (buf != NULL) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) {
            break;
        }
        uint8_t *more = realloc(buf, cap * 2);
        if (more == NULL) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = more;
        cap *= 2;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

static int write_file(const char *path, const uint8_t *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (f == NULL) {
        return -1;
    }
    size_t written = fwrite(data, 1, len, f);
    int bad = fclose(f) != 0 || written != len;
    return bad ? -1 : 0;
}

/* The fastest of o->rounds rounds of o->iterations runs of CALL (an expression that is
 * DMD_OK on success), ns per call, into BEST, after a warm-up of iterations / 10 runs;
 * FAILURES counts the runs that were not DMD_OK. A macro, so that the timed loop calls
 * the library directly. */
#define TIME_CALLS(o, best, failures, call)                                   \
    do {                                                                      \
        for (size_t i_ = 0; i_ < (o)->iterations / 10; i_++) {                \
            (failures) += (call) != DMD_OK;                                   \
        }                                                                     \
        (best) = -1;                                                          \
        for (size_t r_ = 0; r_ < (o)->rounds; r_++) {                         \
            uint64_t started_ = now_ns();                                     \
            for (size_t i_ = 0; i_ < (o)->iterations; i_++) {                 \
                (failures) += (call) != DMD_OK;                               \
            }                                                                 \
            double ns_ = (double)(now_ns() - started_) / (double)(o)->iterations; \
            if ((best) < 0 || ns_ < (best)) {                                 \
                (best) = ns_;                                                 \
            }                                                                 \
        }                                                                     \
    } while (0)

/* dmd_message_decode, then dmd_message_free. */
static dmd_result decode_free(const uint8_t *xml, size_t len) {
    dmd_message *m = NULL;
    dmd_result rc = dmd_message_decode(xml, len, &m);
    dmd_message_free(m);
    return rc;
}

/* dmd_message_encode, then dmd_bytes_free. */
static dmd_result encode_free(const dmd_message *message) {
    dmd_bytes *b = NULL;
    dmd_result rc = dmd_message_encode(message, &b);
    dmd_bytes_free(b);
    return rc;
}

/* Fills res for the vector `name`, and *call_ns (dmd_message_seq on its message) if it is
 * negative; 0, or -1 with res->error set. */
static int one(const options *o, const char *name, result *res, double *call_ns) {
    char path[4096], why[400];
    int rc = -1;
    uint8_t *xml = NULL;
    dmd_message *message = NULL, *again = NULL;
    dmd_bytes *encoded = NULL, *reencoded = NULL;

    snprintf(path, sizeof path, "%s/%s", o->vectors, name);
    xml = read_file(path, &res->bytes);
    if (xml == NULL) {
        snprintf(res->error, sizeof res->error, "%s: cannot read: %s", name, strerror(errno));
        goto done;
    }
    if (dmd_message_decode(xml, res->bytes, &message) != DMD_OK) {
        last_error(why, sizeof why);
        snprintf(res->error, sizeof res->error, "%s: does not decode: %s", name, why);
        goto done;
    }
    if (dmd_message_encode(message, &encoded) != DMD_OK) {
        last_error(why, sizeof why);
        snprintf(res->error, sizeof res->error, "%s: does not encode: %s", name, why);
        goto done;
    }
    const uint8_t *data = dmd_bytes_data(encoded);
    res->encoded_bytes = dmd_bytes_len(encoded);
    if (data == NULL || data[res->encoded_bytes] != '\0') {
        snprintf(res->error, sizeof res->error, "%s: encoded buffer without its NUL", name);
        goto done;
    }
    if (dmd_message_decode(data, res->encoded_bytes, &again) != DMD_OK ||
        dmd_message_encode(again, &reencoded) != DMD_OK) {
        last_error(why, sizeof why);
        snprintf(res->error, sizeof res->error, "%s: its encoding does not decode and encode: %s",
                 name, why);
        goto done;
    }
    if (dmd_bytes_len(reencoded) != res->encoded_bytes ||
        memcmp(dmd_bytes_data(reencoded), data, res->encoded_bytes) != 0) {
        snprintf(res->error, sizeof res->error, "%s: encoding its encoding gives other bytes",
                 name);
        goto done;
    }
    if (o->encoded_dir != NULL) {
        snprintf(path, sizeof path, "%s/%s", o->encoded_dir, name);
        if (write_file(path, data, res->encoded_bytes) != 0) {
            snprintf(res->error, sizeof res->error, "%s: cannot write it to %s: %s", name,
                     o->encoded_dir, strerror(errno));
            goto done;
        }
    }

    size_t failures = 0;
    TIME_CALLS(o, res->decode_ns, failures, decode_free(xml, res->bytes));
    TIME_CALLS(o, res->validate_ns, failures, dmd_message_validate(xml, res->bytes));
    TIME_CALLS(o, res->encode_ns, failures, encode_free(message));
    if (failures > 0) {
        snprintf(res->error, sizeof res->error, "%s: %zu timed calls failed", name, failures);
        goto done;
    }
    if (*call_ns < 0) {
        uint32_t seq = 0;
        TIME_CALLS(o, *call_ns, failures, dmd_message_seq(message, &seq));
        if (failures > 0 || seq == 0) {
            snprintf(res->error, sizeof res->error, "%s: dmd_message_seq failed", name);
            goto done;
        }
    }
    rc = 0;
done:
    dmd_bytes_free(reencoded);
    dmd_bytes_free(encoded);
    dmd_message_free(again);
    dmd_message_free(message);
    free(xml);
    return rc;
}

static int parse_count(const char *flag, const char *value, size_t *out) {
    char *end = NULL;
    errno = 0;
    unsigned long long v = value == NULL ? 0 : strtoull(value, &end, 10);
    if (value == NULL || *value == '\0' || *end != '\0' || errno != 0 || v == 0 || v > SIZE_MAX) {
        fprintf(stderr, "codec_bench: %s needs a number of at least 1\n", flag);
        return -1;
    }
    *out = (size_t)v;
    return 0;
}

int main(int argc, char **argv) {
    options o = {10000, 5, "vectors/valid", NULL};
    for (int i = 1; i < argc; i++) {
        const char *value = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(argv[i], "--iterations") == 0) {
            if (parse_count(argv[i], value, &o.iterations) != 0) return 2;
        } else if (strcmp(argv[i], "--rounds") == 0) {
            if (parse_count(argv[i], value, &o.rounds) != 0) return 2;
        } else if (strcmp(argv[i], "--vectors") == 0 && value != NULL) {
            o.vectors = value;
        } else if (strcmp(argv[i], "--encoded-dir") == 0 && value != NULL) {
            o.encoded_dir = value;
        } else {
            fprintf(stderr,
                    "usage: codec_bench [--iterations N] [--rounds R] [--vectors DIR] "
                    "[--encoded-dir DIR]\n");
            return 2;
        }
        i++;
    }

    size_t count = 0, errors = 0;
    if (o.encoded_dir != NULL && mkdir(o.encoded_dir, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "codec_bench: %s: %s\n", o.encoded_dir, strerror(errno));
        errors++;
    }
    char **names = vector_names(o.vectors, &count);
    if (names == NULL) {
        return 1;
    }
    if (count == 0) {
        fprintf(stderr, "codec_bench: no *.xml in %s\n", o.vectors);
        errors++;
    }
    result *results = calloc(count > 0 ? count : 1, sizeof *results);
    if (results == NULL) {
        fprintf(stderr, "codec_bench: out of memory\n");
        return 1;
    }
    double call_ns = -1;
    for (size_t i = 0; i < count; i++) {
        results[i].name = names[i];
        if (one(&o, names[i], &results[i], &call_ns) != 0) {
            fprintf(stderr, "codec_bench: %s\n", results[i].error);
            errors++;
        }
    }

    printf("{\"ffi_baseline\":{\"language\":\"c\",\"iterations\":%zu,\"rounds\":%zu,"
           "\"errors\":%zu,\"call_ns\":",
           o.iterations, o.rounds, errors);
    if (call_ns < 0) {
        printf("null");
    } else {
        printf("%.3f", call_ns);
    }
    printf(",\"vectors\":[");
    for (size_t i = 0; i < count; i++) {
        const result *r = &results[i];
        printf("%s{\"name\":", i ? "," : "");
        json_string(r->name);
        if (r->error[0] != '\0') {
            printf(",\"error\":");
            json_string(r->error);
        } else {
            printf(",\"bytes\":%zu,\"encoded_bytes\":%zu,\"decode_ns\":%.3f,"
                   "\"validate_ns\":%.3f,\"encode_ns\":%.3f",
                   r->bytes, r->encoded_bytes, r->decode_ns, r->validate_ns, r->encode_ns);
        }
        putchar('}');
    }
    printf("]}}\n");

    for (size_t i = 0; i < count; i++) {
        free(names[i]);
    }
    free(names);
    free(results);
    return errors ? 1 : 0;
}
