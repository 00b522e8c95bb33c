/* sstc: train, compress and run networks with structured sparse ternary codes. */
#include "cli.h"
#include "startup.h"
#include "sstc/dist.h"
#include "sstc/error.h"
#include "sstc/tensor.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    const char *name;
    int (*run)(int, char **);
    const char *summary;
} command;

/* One line per subcommand; keep alphabetical within each group. */
static const command commands[] = {
    {"run", cmd_run, "the whole experiment of a config: train, compress, check the .sst file"},
    {"train", cmd_train, "train the network a config describes"},
    {"compress", cmd_compress, "compress a trained network into (N,K) ternary codes"},
    {"eval", cmd_eval, "loss and error of a checkpoint or .sst file on a test set"},
    {"export", cmd_export, "weights as NumPy .npz, or a .sst network as standalone C"},
    {"import", cmd_import, "weights from a NumPy .npz (e.g. trained in PyTorch) into a checkpoint"},
    {"data", cmd_data, "prepare, describe and show datasets"},
    {"codes", cmd_codes, "size of the (N,K) code, or its table (--list)"},
    {"inspect", cmd_inspect, "check a .sst file and print its layers and bits per weight"},
    {"plot", cmd_plot, "charts as PNG: error per epoch, weight histograms, layer rows, code usage"},
    {"infer", cmd_infer, "test error of a .sst network with the multiplication-free engine"},
    {"help", NULL, "show this help"},
};

static void usage(FILE *f) {
    fprintf(f,
            "usage: sstc COMMAND [ARGS...]\n"
            "\n"
            "Train neural networks and compress them with structured sparse ternary\n"
            "(N,K) weight coding.\n"
            "\n"
            "commands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\nRun 'sstc COMMAND --help' for the options of one command.\n");
}

int cli_wants_help(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) return 1;
    return 0;
}

static int dispatch(int argc, char **argv);

int main(int argc, char **argv) {
    cli_platform_init(argc, argv);
    if (sstc_dist_init(&argc, &argv)) {
        fprintf(stderr, "sstc: %s\n", sstc_errmsg());
        return 1;
    }
    /* in an MPI job (build/sstc-mpi) rank 0 prints the results; the other
     * ranks report only errors */
    if (sstc_dist_rank() > 0 && !freopen("/dev/null", "w", stdout)) return 1;
    int rc = dispatch(argc, argv);
    fflush(stdout);
    sstc_dist_finalize(rc == 1 ? 1 : 0);
    return rc;
}

static int dispatch(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (commands[i].run && !strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "sstc: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
