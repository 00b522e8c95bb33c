#include "sstc/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char errbuf[1024];
static _Thread_local int errcode;

int sstc_fail(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errbuf, sizeof errbuf, fmt, ap);
    va_end(ap);
    errcode = code;
    return code;
}

int sstc_fail_prefix(int code, const char *fmt, ...) {
    char old[sizeof errbuf];
    memcpy(old, errbuf, sizeof old);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(errbuf, sizeof errbuf, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof errbuf)
        snprintf(errbuf + n, sizeof errbuf - (size_t)n, "%s", old);
    errcode = code;
    return code;
}

const char *sstc_errmsg(void) { return errbuf; }
int sstc_errcode(void) { return errcode; }
void sstc_clear_error(void) { errbuf[0] = 0; errcode = 0; }
