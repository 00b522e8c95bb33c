/* sstc import CONFIG WEIGHTS.npz --out CHECKPOINT: weights trained elsewhere
 * (e.g. PyTorch) into a checkpoint that `sstc compress --from` accepts. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "sstc/train.h"

static const char usage[] =
    "usage: sstc import CONFIG WEIGHTS.npz --out CHECKPOINT [--set S.K=V ...]\n"
    "\n"
    "Reads the network's weights from WEIGHTS.npz, named and shaped as\n"
    "`sstc export --npz` writes them (docs/export.md: fc1.weight (out,in),\n"
    "conv1.weight (OC,C,KH,KW), bn1.running_var, ..., float32), checks every name\n"
    "and shape against the network CONFIG describes (an error names the array and\n"
    "both shapes; an array the network lacks, or one it has that is missing, is an\n"
    "error), and writes a checkpoint of that network (epoch 0) to CHECKPOINT:\n"
    "\n"
    "  sstc import configs/mnist_fc.ini torch.npz --out runs/torch/checkpoint.sstc\n"
    "  sstc compress configs/mnist_fc.ini --from runs/torch/checkpoint.sstc\n"
    "\n"
    "input.mean and input.std (float32, one per channel), when present, set the\n"
    "input normalization x = (pixel/255 - mean)/std the weights were trained with;\n"
    "otherwise the config's [data] normalization applies. input.permutation and\n"
    "<layer>.out_scale (written for compressed networks) are read back too. The\n"
    "config's dataset is loaded for the image shape and class count.\n";

int cmd_import(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        fputs(usage, stdout);
        return 0;
    }
    const char *config = NULL, *npz = NULL, *out = NULL;
    const char *ovr[CLI_MAX_OVERRIDES];
    int nov = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--out") && i + 1 < argc) out = argv[++i];
        else if (!strcmp(argv[i], "--set") && i + 1 < argc && nov < CLI_MAX_OVERRIDES) ovr[nov++] = argv[++i];
        else if (argv[i][0] == '-') {
            fprintf(stderr, "sstc import: unknown or incomplete option '%s'\n\n%s", argv[i], usage);
            return 2;
        } else if (!config) config = argv[i];
        else if (!npz) npz = argv[i];
        else {
            fprintf(stderr, "sstc import: unexpected argument '%s'\n\n%s", argv[i], usage);
            return 2;
        }
    }
    if (!config || !npz || !out) {
        fprintf(stderr, "sstc import: need CONFIG, WEIGHTS.npz and --out CHECKPOINT\n\n%s", usage);
        return 2;
    }
    sstc_session *s = NULL;
    int rc = sstc_session_open(&s, config, ovr, nov, 1);
    if (!rc) rc = sstc_session_import_npz(s, npz);
    if (!rc) rc = sstc_checkpoint_save(s, out, NULL, 0);
    if (rc) fprintf(stderr, "sstc import: %s\n", sstc_errmsg());
    else printf("wrote %s (%zu parameters from %s)\n", out, sstc_model_num_params(sstc_session_model(s)), npz);
    sstc_session_close(s);
    return rc ? 1 : 0;
}
