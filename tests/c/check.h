/*
 * check.h: the checks of the C and C++ test programs in tests/c, in one
 * place (C11 and C++17, GCC or Clang).
 *
 * Define CHECK_PROGRAM (the program's name) before including it.
 *
 *   CHECK(cond)                 count the outcome; on failure print the
 *                               file, the line and the condition, and go on
 *   CHECK_EQ(actual, expected)  the same for an equality of integers,
 *                               printing both values when they differ
 *   REQUIRE(cond)               like CHECK, but a failure ends the program
 *                               (what follows would use something that
 *                               does not exist)
 *   check_at(), check_eq_at()   the functions behind them, for a check
 *                               whose description is built at run time
 *   check_skip(what)            note a check that does not apply here
 *   check_summary()             print "<CHECK_PROGRAM>: N passed, M failed"
 *                               (the line tests/common/mod.rs parses) and
 *                               return the exit status: 0 only if nothing
 *                               failed
 *
 * Failures go to stderr, the summary to stdout. The counters are atomic,
 * so any thread may check. A program may point check_on_failure at a
 * function that prints more context (the last error) after each failure.
 */
#ifndef HOSTMEM_TESTS_CHECK_H
#define HOSTMEM_TESTS_CHECK_H

#ifndef CHECK_PROGRAM
#error "define CHECK_PROGRAM, the program's name, before including check.h"
#endif

#include <stdio.h>
#include <stdlib.h>

static unsigned check_passed;
static unsigned check_failed;
static unsigned check_skipped;

/* Called after each failed check's message, if set. */
static void (*check_on_failure)(void);

static inline void check_count(unsigned* counter)
{
    __atomic_fetch_add(counter, 1, __ATOMIC_RELAXED);
}

static inline unsigned check_value(const unsigned* counter)
{
    return __atomic_load_n(counter, __ATOMIC_RELAXED);
}

static inline void check_failure_context(void)
{
    if (check_on_failure != NULL) check_on_failure();
}

/* Counts `ok`; on failure prints "file:line: CHECK failed: what". Returns
 * `ok`. */
static inline int check_at(int ok, const char* file, int line, const char* what)
{
    if (ok) {
        check_count(&check_passed);
    } else {
        check_count(&check_failed);
        fprintf(stderr, "%s:%d: CHECK failed: %s\n", file, line, what);
        check_failure_context();
    }
    return ok;
}

/* Counts `actual == expected`; on failure prints both. Returns whether
 * they are equal. */
static inline int check_eq_at(unsigned long long actual, unsigned long long expected,
                              const char* file, int line, const char* actual_text,
                              const char* expected_text)
{
    int ok = actual == expected;
    if (ok) {
        check_count(&check_passed);
    } else {
        check_count(&check_failed);
        fprintf(stderr, "%s:%d: CHECK failed: %s is %llu (0x%llx), expected %s = %llu (0x%llx)\n",
                file, line, actual_text, actual, actual, expected_text, expected, expected);
        check_failure_context();
    }
    return ok;
}

static inline void check_skip(const char* what)
{
    check_count(&check_skipped);
    printf("skipped: %s\n", what);
}

/* Prints the totals and returns the exit status. */
static inline int check_summary(void)
{
    unsigned passed = check_value(&check_passed);
    unsigned failed = check_value(&check_failed);
    unsigned skipped = check_value(&check_skipped);
    if (skipped != 0) printf("%s: %u skipped\n", CHECK_PROGRAM, skipped);
    printf("%s: %u passed, %u failed\n", CHECK_PROGRAM, passed, failed);
    fflush(stdout);
    return failed == 0 ? 0 : 1;
}

#define CHECK(cond) ((void)check_at(!!(cond), __FILE__, __LINE__, #cond))

#define CHECK_EQ(actual, expected)                                                     \
    ((void)check_eq_at((unsigned long long)(actual), (unsigned long long)(expected), \
                       __FILE__, __LINE__, #actual, #expected))

#define REQUIRE(cond)                                                        \
    do {                                                                     \
        if (!check_at(!!(cond), __FILE__, __LINE__, "REQUIRE " #cond)) {     \
            (void)check_summary();                                           \
            exit(1);                                                         \
        }                                                                    \
    } while (0)

#endif /* HOSTMEM_TESTS_CHECK_H */
