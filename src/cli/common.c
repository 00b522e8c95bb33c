/* What the run commands (train, compress, run) share: their options, signal
 * handling, and how a library result becomes an exit status. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "sstc/dist.h"
#include "sstc/error.h"

static volatile sig_atomic_t stop_requested;
static void on_signal(int sig) { stop_requested = sig; }

void cli_install_stop_handlers(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

volatile sig_atomic_t *cli_stop_flag(void) { return &stop_requested; }

int cli_parse_run_args(int argc, char **argv, cli_run_args *a, const char *cmd, const char *usage, int allow_from) {
    memset(a, 0, sizeof *a);
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        int has_value = i + 1 < argc;
        if (!strcmp(s, "--out") && has_value) a->out = argv[++i];
        else if (!strcmp(s, "--from") && has_value && allow_from) a->from = argv[++i];
        else if (!strcmp(s, "--epochs") && has_value) {
            char *end;
            long e = strtol(argv[++i], &end, 10);
            if (!*argv[i] || *end || e < 0 || e > 1000000) {
                fprintf(stderr, "sstc %s: --epochs '%s': expected a whole number >= 0\n", cmd, argv[i]);
                return 2;
            }
            snprintf(a->epochs_buf, sizeof a->epochs_buf, "train.epochs=%ld", e);
        } else if (!strcmp(s, "--set") && has_value) {
            if (a->noverrides >= CLI_MAX_OVERRIDES - 1) {
                fprintf(stderr, "sstc %s: too many --set options (at most %d)\n", cmd, CLI_MAX_OVERRIDES - 1);
                return 2;
            }
            a->overrides[a->noverrides++] = argv[++i];
        } else if (!strcmp(s, "--resume")) a->resume = 1;
        else if (!strcmp(s, "--allow-config-change")) a->allow_config_change = 1;
        else if (!strcmp(s, "--quiet") || !strcmp(s, "-q")) a->quiet = 1;
        else if (s[0] == '-' && s[1]) {
            fprintf(stderr, "sstc %s: unknown or incomplete option '%s'\n\n%s", cmd, s, usage);
            return 2;
        } else if (!a->config) a->config = s;
        else {
            fprintf(stderr, "sstc %s: unexpected argument '%s'\n\n%s", cmd, s, usage);
            return 2;
        }
    }
    if (!a->config) {
        fprintf(stderr, "sstc %s: missing CONFIG\n\n%s", cmd, usage);
        return 2;
    }
    if (a->epochs_buf[0]) a->overrides[a->noverrides++] = a->epochs_buf;
    /* the command that continues this run after an interrupt */
    size_t off = (size_t)snprintf(a->resume_hint, sizeof a->resume_hint, "sstc %s", cmd);
    for (int i = 1; i < argc && off < sizeof a->resume_hint; i++)
        if (strcmp(argv[i], "--resume"))
            off += (size_t)snprintf(a->resume_hint + off, sizeof a->resume_hint - off, " %s", argv[i]);
    if (off < sizeof a->resume_hint) snprintf(a->resume_hint + off, sizeof a->resume_hint - off, " --resume");
    return 0;
}

int cli_open_session(const cli_run_args *a, const char *cmd, sstc_session **s) {
    int quiet = a->quiet || sstc_dist_rank() > 0; /* rank 0 speaks for an MPI job */
    if (!quiet) fprintf(stderr, "loading %s\n", a->config);
    /* an MPI job's rank count is part of its configuration (recorded in the
     * checkpoint; --resume with another count is refused) */
    const char *ovr[CLI_MAX_OVERRIDES + 1];
    int nov = a->noverrides;
    memcpy(ovr, a->overrides, (size_t)nov * sizeof *ovr);
    char ranks[48];
    if (sstc_dist_size() > 1) {
        snprintf(ranks, sizeof ranks, "experiment.ranks=%d", sstc_dist_size());
        ovr[nov++] = ranks;
    }
    if (sstc_session_open(s, a->config, ovr, nov, 1)) {
        fprintf(stderr, "sstc %s: %s\n", cmd, sstc_errmsg());
        return 1;
    }
    sstc_session_set_quiet(*s, quiet);
    cli_install_stop_handlers();
    sstc_session_set_stop(*s, cli_stop_flag());
    return 0;
}

int cli_run_status(int rc, const char *cmd) {
    if (!rc) return 0;
    fprintf(stderr, "\nsstc %s: %s\n", cmd, sstc_errmsg());
    return rc == SSTC_EINTR ? 130 : 1;
}
