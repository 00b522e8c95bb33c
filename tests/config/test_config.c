/* Experiment configs: parsing, defaults, overrides and error messages. */
#include <criterion/criterion.h>
#include <string.h>

#include "sstc/config.h"

static const char *good =
    "# comment\n"
    "[experiment]\nname = t\nseed = 7\nthreads = 1\n"
    "[data]\ndataset = mnist\naugment_flip = true\naugment_cutout = 3\n"
    "[train]\nepochs = 3\nlr = 0.01 ; inline comment\noptimizer = sgd\nschedule = step\nstep_epochs = 2\n"
    "[conv]\nfilters = 4\nsize = 3\npad = 1\n"
    "[relu]\n[relu]\n"
    "[maxpool]\n"
    "[fc]\nname = head\noutputs = 10\n";

Test(config, parses_sections_keys_and_layers_in_order) {
    sstc_config c;
    cr_assert_eq(sstc_config_parse(good, "good.ini", NULL, 0, &c), 0, "%s", sstc_errmsg());
    cr_assert_str_eq(c.name, "t");
    cr_assert_eq(c.seed, 7);
    cr_assert_eq(c.threads, 1);
    cr_assert_str_eq(c.dataset, "mnist");
    cr_assert_eq(c.augment_flip, 1);
    cr_assert_eq(c.augment_cutout, 3);
    cr_assert_eq(c.epochs, 3);
    cr_assert_float_eq(c.optim.lr, 0.01f, 1e-9);
    cr_assert_eq(c.optim.kind, SSTC_OPT_SGD);
    cr_assert_eq(c.lr.kind, SSTC_LR_STEP);
    cr_assert_eq(c.nlayers, 5, "keyless sections like [relu] must count");
    cr_assert_eq(c.layers[0].kind, SSTC_LAYER_CONV2D);
    cr_assert_eq(c.layers[0].line, 16, "line %d", c.layers[0].line);
    cr_assert_eq(c.layers[1].kind, SSTC_LAYER_RELU);
    cr_assert_eq(c.layers[2].kind, SSTC_LAYER_RELU);
    cr_assert_eq(c.layers[3].kind, SSTC_LAYER_MAXPOOL);
    cr_assert_eq(c.layers[3].stride, 2, "pool stride defaults to its size");
    cr_assert_str_eq(c.layers[4].name, "head");
    cr_assert_eq(c.batch_size, 100, "defaults apply");
}

Test(config, builds_a_model_and_checks_the_class_count) {
    sstc_config c;
    cr_assert_eq(sstc_config_parse(good, "good.ini", NULL, 0, &c), 0);
    sstc_model *m = sstc_config_build_model(&c, 1, 28, 28, 10);
    cr_assert_not_null(m, "%s", sstc_errmsg());
    cr_assert_eq(m->layers[4].in_features, 4 * 14 * 14);
    sstc_model_free(m);
    cr_assert_null(sstc_config_build_model(&c, 1, 28, 28, 100));
    cr_assert_not_null(strstr(sstc_errmsg(), "good.ini:"), "%s", sstc_errmsg());
    cr_assert_not_null(strstr(sstc_errmsg(), "100"));
}

static void expect_error(const char *text, const char *where, const char *what) {
    sstc_config c;
    cr_assert_neq(sstc_config_parse(text, "x.ini", NULL, 0, &c), 0, "accepted: %s", text);
    cr_expect_not_null(strstr(sstc_errmsg(), where), "'%s' not in: %s", where, sstc_errmsg());
    cr_expect_not_null(strstr(sstc_errmsg(), what), "'%s' not in: %s", what, sstc_errmsg());
}

Test(config, errors_name_file_line_and_expectation) {
    expect_error("[data]\ndataset = mnist\n[train]\nepochz = 3\n[fc]\noutputs=10\n", "x.ini:4", "unknown key 'epochz'");
    expect_error("[data]\ndataset = mnist\n[train]\nepochs = three\n", "x.ini:4", "expected an integer");
    expect_error("[data]\ndataset = mnist\n[train]\nlr = -1\n", "x.ini:4", "out of range");
    expect_error("[data]\ndataset = mnist\n[train]\nlabel_smoothing = 1\n", "x.ini:4", "out of range");
    expect_error("[data]\ndataset = mnist\n\n[bogus]\n", "x.ini:4", "unknown section [bogus]");
    expect_error("[data]\ndataset = mnist\n[train]\noptimizer = rmsprop\n", "x.ini:4", "sgd|adam");
    expect_error("[data]\ndataset = mnist\n[data]\n", "x.ini:3", "appears twice");
    expect_error("[data]\ndataset = mnist\nthis is not ini\n", "x.ini:3", "cannot parse");
    expect_error("[data]\ndataset = mnist\n[fc]\n", "x.ini:3", "outputs");
    expect_error("[train]\nepochs = 1\n[fc]\noutputs = 10\n", "x.ini", "dataset is missing");
    expect_error("[data]\ndataset = mnist\n[dropout]\np = 1.5\n", "x.ini:4", "out of range");
    expect_error("[data]\ndataset = mnist\nnormalize = given\nmean = 0.5\nstd = 0.2,0.2,0.2\n[fc]\noutputs=10\n", "x.ini",
                 "mean has 1 values and std 3");
    expect_error("[experiment]\nseed = 1e3\n[data]\ndataset = mnist\n", "x.ini:2", "digits");
}

Test(config, layer_shapes_that_do_not_fit_name_the_line) {
    sstc_config c;
    const char *t = "[data]\ndataset = mnist\n[fc]\noutputs = 20\n[conv]\nfilters = 3\n[fc]\noutputs = 10\n";
    cr_assert_eq(sstc_config_parse(t, "x.ini", NULL, 0, &c), 0);
    cr_assert_null(sstc_config_build_model(&c, 1, 28, 28, 10));
    cr_assert_not_null(strstr(sstc_errmsg(), "x.ini:5"), "%s", sstc_errmsg());
}

Test(config, compress_section_is_validated) {
    const char *base = "[data]\ndataset = mnist\n[fc]\noutputs = 10\n[compress]\n";
    char t[512];
    snprintf(t, sizeof t, "%sN = 4\nK = 6\n", base);
    expect_error(t, "x.ini:5", "K = 6 > N = 4");
    snprintf(t, sizeof t, "%sN = 8\nK = 2\nschedule = 6,4,3\n", base);
    expect_error(t, "x.ini:5", "end at K = 2");
    snprintf(t, sizeof t, "%sN = 8\nK = 2\nschedule = 4,6,2\n", base);
    expect_error(t, "x.ini:5", "strictly decrease");
    snprintf(t, sizeof t, "%sN = 17\n", base);
    expect_error(t, "x.ini:6", "out of range");
    sstc_config c;
    snprintf(t, sizeof t, "%sN = 8\nK = 2\nschedule = 6,4,3,2\nmethod = sst\n", base);
    cr_assert_eq(sstc_config_parse(t, "x.ini", NULL, 0, &c), 0, "%s", sstc_errmsg());
    cr_assert_eq(c.compress.nstages, 4);
    cr_assert_eq(c.compress.schedule[3], 2);
    const char *direct[] = {"compress.schedule=direct"};
    cr_assert_eq(sstc_config_parse(t, "x.ini", direct, 1, &c), 0, "%s", sstc_errmsg());
    cr_assert_eq(c.compress.nstages, 0, "schedule = direct clears the stages");
}

Test(config, overrides_apply_to_sections_and_layers_by_name) {
    sstc_config c;
    const char *ov[] = {"train.epochs=9", "head.outputs=10", "conv1.filters=8", "data.dataset=cifar10"};
    cr_assert_eq(sstc_config_parse(good, "good.ini", ov, 4, &c), 0, "%s", sstc_errmsg());
    cr_assert_eq(c.epochs, 9);
    cr_assert_eq(c.layers[0].outputs, 8);
    cr_assert_str_eq(c.dataset, "cifar10");
    const char *bad[] = {"train.epochs=abc"};
    cr_assert_neq(sstc_config_parse(good, "good.ini", bad, 1, &c), 0);
    cr_assert_not_null(strstr(sstc_errmsg(), "--set #1"), "%s", sstc_errmsg());
    const char *nolayer[] = {"fc9.outputs=3"};
    cr_assert_neq(sstc_config_parse(good, "good.ini", nolayer, 1, &c), 0);
    cr_assert_not_null(strstr(sstc_errmsg(), "fc9"));
}

Test(config, shipped_configs_parse) {
    const char *files[] = {"configs/mnist_fc.ini", "configs/fashion_fc.ini", "configs/cifar10_cnn.ini",
                           "configs/cifar10_cnn_small.ini", "configs/cifar10_resnet20.ini"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        sstc_config c;
        cr_assert_eq(sstc_config_load(files[i], NULL, 0, &c), 0, "%s", sstc_errmsg());
    }
}

Test(config, hostile_values_are_refused_where_they_are_written) {
    sstc_config c;
    const char *base = "[data]\ndataset = mnist\n[fc]\noutputs = 10\n";
    char text[512];
    /* a name that would leave runs/ */
    snprintf(text, sizeof text, "[experiment]\nname = ../../x\n%s", base);
    cr_assert_neq(sstc_config_parse(text, "h.ini", NULL, 0, &c), 0);
    cr_assert_not_null(strstr(sstc_errmsg(), "names the run's folder"), "%s", sstc_errmsg());
    snprintf(text, sizeof text, "[experiment]\nname = .hidden\n%s", base);
    cr_assert_neq(sstc_config_parse(text, "h.ini", NULL, 0, &c), 0);
    /* a file name that is not a plain folder name gives a cleaned default */
    cr_assert_eq(sstc_config_parse(base, "/some/dir/my exp.ini", NULL, 0, &c), 0, "%s", sstc_errmsg());
    cr_assert_str_eq(c.name, "my_exp");
    /* NaN and infinity are not numbers a config can mean */
    const char *bad[] = {"mean = nan\nstd = 1\nnormalize = given\n", "mean = 0\nstd = inf\nnormalize = given\n"};
    for (int i = 0; i < 2; i++) {
        snprintf(text, sizeof text, "[data]\ndataset = mnist\n%s[fc]\noutputs = 10\n", bad[i]);
        cr_assert_neq(sstc_config_parse(text, "h.ini", NULL, 0, &c), 0, "case %d accepted", i);
        cr_assert_not_null(strstr(sstc_errmsg(), "h.ini:"), "%s", sstc_errmsg());
    }
    const char *ov[] = {"train.lr=nan"};
    cr_assert_neq(sstc_config_parse(base, "h.ini", ov, 1, &c), 0);
    /* a given name equal to a later layer's default name would merge their tensors */
    cr_assert_eq(sstc_config_parse("[data]\ndataset = mnist\n[fc]\nname = fc2\noutputs = 10\n[relu]\n[fc]\noutputs = 10\n",
                                   "h.ini", NULL, 0, &c), 0, "%s", sstc_errmsg());
    cr_assert_null(sstc_config_build_model(&c, 1, 28, 28, 10));
    cr_assert_not_null(strstr(sstc_errmsg(), "default name"), "%s", sstc_errmsg());
    cr_assert_not_null(strstr(sstc_errmsg(), "h.ini:7"), "%s", sstc_errmsg());
    /* a UTF-8 byte-order mark before the first section is skipped */
    snprintf(text, sizeof text, "\xEF\xBB\xBF%s", base);
    cr_assert_eq(sstc_config_parse(text, "h.ini", NULL, 0, &c), 0, "%s", sstc_errmsg());
    cr_assert_str_eq(c.dataset, "mnist");
}

/* ---- skip connections ---- */

static const char *residual =
    "[data]\ndataset = cifar10\n"
    "[conv]\nfilters = 4\npad = 1\n"                          /* 0, line 3 */
    "[batchnorm]\n[relu]\n"                                   /* 1, 2 */
    "[conv]\nfilters = 4\npad = 1\n[batchnorm]\n"              /* 3, 4 */
    "[shortcut]\nfrom = -3\nactivation = relu\n"              /* 5: relu1 + bn2, line 12 */
    "[route]\nlayers = -1, -4\n"                               /* 6: shortcut1, bn1 */
    "[conv]\nfilters = 8\nsize = 1\nstride = 2\n"             /* 7 */
    "[globalavgpool]\n"                                         /* 8 */
    "[fc]\noutputs = 10\n";

Test(config, parses_and_builds_shortcut_route_and_globalavgpool) {
    sstc_config c;
    cr_assert_eq(sstc_config_parse(residual, "r.ini", NULL, 0, &c), 0, "%s", sstc_errmsg());
    cr_assert_eq(c.nlayers, 10);
    cr_assert_eq(c.layers[5].kind, SSTC_LAYER_SHORTCUT);
    cr_assert_eq(c.layers[5].line, 12, "line %d", c.layers[5].line);
    cr_assert_eq(c.layers[5].from, -3, "specs keep references as written");
    cr_assert_eq(c.layers[5].activation, SSTC_ACT_RELU);
    cr_assert_eq(c.layers[6].kind, SSTC_LAYER_ROUTE);
    cr_assert_eq(c.layers[6].nroute, 2);
    cr_assert_eq(c.layers[6].route[1], -4);
    cr_assert_eq(c.layers[8].kind, SSTC_LAYER_GLOBALAVGPOOL);
    sstc_model *m = sstc_config_build_model(&c, 3, 8, 8, 10);
    cr_assert_not_null(m, "%s", sstc_errmsg());
    cr_assert_eq(m->layers[5].from, 2, "built layers hold absolute indices");
    cr_assert_eq(m->layers[6].route[0], 5);
    cr_assert_eq(m->layers[6].route[1], 2);
    cr_assert_eq(m->layers[6].out_shape[0], 8);
    cr_assert_eq(m->layers[7].out_shape[1], 4);
    cr_assert_eq(m->layers[8].out_ndim, 1);
    cr_assert_eq(m->layers[9].in_features, 8);
    cr_assert_str_eq(m->layers[5].name, "shortcut1");
    cr_assert_str_eq(m->layers[6].name, "route1");
    cr_assert_str_eq(m->layers[8].name, "gap1");
    sstc_model_free(m);
    /* the shortcut's activation defaults to linear */
    const char *lin = "[data]\ndataset = cifar10\n[conv]\nfilters = 3\npad = 1\n[shortcut]\nfrom = -2\n"
                      "[globalavgpool]\n[fc]\noutputs = 10\n";
    cr_assert_eq(sstc_config_parse(lin, "l.ini", NULL, 0, &c), 0, "%s", sstc_errmsg());
    cr_assert_eq(c.layers[1].activation, SSTC_ACT_LINEAR);
    m = sstc_config_build_model(&c, 3, 5, 5, 10);
    cr_assert_not_null(m, "%s", sstc_errmsg());
    cr_assert_eq(m->layers[1].from, -1, "from = -2 at layer 1 reaches the input");
    sstc_model_free(m);
}

Test(config, skip_connection_keys_are_checked_and_overridable_by_default_name) {
    const char *base = "[data]\ndataset = mnist\n[conv]\nfilters = 2\n";
    char t[512];
    snprintf(t, sizeof t, "%s[shortcut]\nactivation = relu\n[fc]\noutputs = 10\n", base);
    expect_error(t, "x.ini:5", "[shortcut] needs from");
    snprintf(t, sizeof t, "%s[shortcut]\nfrom = -1\nactivation = tanh\n", base);
    expect_error(t, "x.ini:7", "linear|relu");
    snprintf(t, sizeof t, "%s[route]\n[fc]\noutputs = 10\n", base);
    expect_error(t, "x.ini:5", "[route] needs layers");
    snprintf(t, sizeof t, "%s[route]\nlayers = -1, x\n", base);
    expect_error(t, "x.ini:6", "comma-separated list of integers");
    snprintf(t, sizeof t, "%s[route]\nlayers = -1,-1,-1,-1,-1,-1,-1,-1,-1\n", base);
    expect_error(t, "x.ini:6", "more than 8 values");
    snprintf(t, sizeof t, "%s[globalavgpool]\nsize = 2\n", base);
    expect_error(t, "x.ini:6", "unknown key 'size'; known keys: name");
    snprintf(t, sizeof t, "%s[route]\nlayers = -1\nfrom = 2\n", base);
    expect_error(t, "x.ini:7", "known keys: name, layers");
    expect_error("[data]\ndataset = mnist\n[resblock]\n", "x.ini:3",
                 "fc, conv, batchnorm, relu, maxpool, avgpool, dropout, flatten, shortcut, route, globalavgpool");

    sstc_config c;
    const char *ov[] = {"shortcut1.from=-5", "route1.layers=-2,-5", "gap1.name=pool"};
    cr_assert_eq(sstc_config_parse(residual, "r.ini", ov, 3, &c), 0, "%s", sstc_errmsg());
    cr_assert_eq(c.layers[5].from, -5);
    cr_assert_eq(c.layers[6].nroute, 2);
    cr_assert_eq(c.layers[6].route[0], -2);
    cr_assert_str_eq(c.layers[8].name, "pool");
    const char *bad[] = {"route1.layers=1.5"};
    cr_assert_neq(sstc_config_parse(residual, "r.ini", bad, 1, &c), 0);
    cr_assert_not_null(strstr(sstc_errmsg(), "--set #1"), "%s", sstc_errmsg());
    cr_assert_not_null(strstr(sstc_errmsg(), "[route1] layers"), "%s", sstc_errmsg());
}

Test(config, skip_connections_that_do_not_fit_name_the_line_both_layers_and_shapes) {
    sstc_config c;
    /* the shortcut adds relu1 (4x8x8) to conv2's stride-2 output (4x4x4) */
    const char *t = "[data]\ndataset = cifar10\n[conv]\nfilters = 4\npad = 1\n[relu]\n"
                    "[conv]\nfilters = 4\npad = 1\nstride = 2\n[shortcut]\nfrom = -2\n[fc]\noutputs = 10\n";
    cr_assert_eq(sstc_config_parse(t, "x.ini", NULL, 0, &c), 0, "%s", sstc_errmsg());
    cr_assert_null(sstc_config_build_model(&c, 3, 8, 8, 10));
    const char *msg = sstc_errmsg();
    cr_expect_not_null(strstr(msg, "x.ini:11: shortcut layer 'shortcut1'"), "%s", msg);
    cr_expect_not_null(strstr(msg, "conv2"), "%s", msg);
    cr_expect_not_null(strstr(msg, "4x4x4"), "%s", msg);
    cr_expect_not_null(strstr(msg, "relu1"), "%s", msg);
    cr_expect_not_null(strstr(msg, "4x8x8"), "%s", msg);
    /* a reference before the input */
    const char *far = "[data]\ndataset = cifar10\n[conv]\nfilters = 3\npad = 1\n[route]\nlayers = -1, -3\n"
                      "[fc]\noutputs = 10\n";
    cr_assert_eq(sstc_config_parse(far, "x.ini", NULL, 0, &c), 0, "%s", sstc_errmsg());
    cr_assert_null(sstc_config_build_model(&c, 3, 8, 8, 10));
    cr_expect_not_null(strstr(sstc_errmsg(), "x.ini:6: route layer 'route1': layers = -3"), "%s", sstc_errmsg());
    cr_expect_not_null(strstr(sstc_errmsg(), "-2 being the input"), "%s", sstc_errmsg());
}
