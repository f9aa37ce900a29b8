/*
 * A minimal test harness shared by the C tests: CHECK / CHECK_RC record a failure with
 * the library's last-error message; begin()/end() print one TAP-like line per case.
 * Each test program includes it once.
 */
#ifndef DMDELEGATE_TEST_HARNESS_H
#define DMDELEGATE_TEST_HARNESS_H

#include <stdio.h>

#include "dmdelegate.h"

/* ---- a minimal harness ------------------------------------------------------------ */

static int g_passed;
static int g_failed;
static int g_case_failed;
static const char *g_case;

/* The calling thread's last-error message (static buffer; for diagnostics). */
static const char *last_error(void) {
    static char buf[1024];
    dmd_last_error_message(buf, sizeof buf);
    return buf;
}

#define CHECK(cond)                                                                        \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            printf("    %s:%d: check failed: %s (last error: \"%s\")\n", __FILE__, __LINE__,  \
                   #cond, last_error());                                                   \
            g_case_failed = 1;                                                             \
        }                                                                                  \
    } while (0)

/* Checks a dmd_result against the expected code. */
#define CHECK_RC(expr, expected)                                                           \
    do {                                                                                   \
        dmd_result rc_ = (expr);                                                           \
        if (rc_ != (expected)) {                                                           \
            printf("    %s:%d: %s returned %d (%s), expected %s (last error: \"%s\")\n",     \
                   __FILE__, __LINE__, #expr, (int)rc_, dmd_result_message(rc_), #expected, \
                   last_error());                                                          \
            g_case_failed = 1;                                                             \
        }                                                                                  \
    } while (0)

static void begin(const char *name) {
    g_case = name;
    g_case_failed = 0;
}

static void end(void) {
    if (g_case_failed) {
        g_failed++;
        printf("not ok - %s\n", g_case);
    } else {
        g_passed++;
        printf("ok - %s\n", g_case);
    }
    fflush(stdout);
}

#endif /* DMDELEGATE_TEST_HARNESS_H */
