/* sstc error reporting.
 *
 * Library functions never exit or abort on user error. They return a status
 * code (0 on success, a negative SSTC_E* value on failure) or NULL, and leave
 * a human-readable message in a thread-local buffer that the caller reads with
 * sstc_errmsg(). Messages name the file/op, the line or byte offset where it
 * applies, and what was expected. Only the command-line program decides to
 * exit. */
#ifndef SSTC_ERROR_H
#define SSTC_ERROR_H

#include <stddef.h>

enum {
    SSTC_OK = 0,
    SSTC_EINVAL = -1,   /* invalid argument (NULL pointer, out-of-range value) */
    SSTC_ESHAPE = -2,   /* tensor shapes do not fit */
    SSTC_ENOMEM = -3,   /* allocation failed */
    SSTC_EIO = -4,      /* file could not be opened/read/written */
    SSTC_EFORMAT = -5,  /* file contents are malformed */
    SSTC_ESTATE = -6,   /* call made in the wrong state (e.g. backward before forward) */
    SSTC_ECONFIG = -7,  /* configuration error */
    SSTC_ENUMERIC = -8, /* NaN/Inf encountered */
    SSTC_EINTR = -9,    /* interrupted by a signal */
    SSTC_EBUSY = -10,   /* a resource (e.g. a run folder) is in use by another process */
};

/* Sets the thread's error message (printf-style) and returns `code`, so that
 * library code can write `return sstc_fail(SSTC_EINVAL, "...", ...);`. */
int sstc_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prefixes the current message with more context ("loading x.png: " + old). */
int sstc_fail_prefix(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The last message set on this thread ("" if none). */
const char *sstc_errmsg(void);

/* The last code set on this thread (0 if none). */
int sstc_errcode(void);

void sstc_clear_error(void);

#endif
