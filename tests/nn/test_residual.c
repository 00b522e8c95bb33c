/* Skip connections through the model: shortcut, route and global average
 * pooling layers, checked by finite differences, against a PyTorch residual
 * block, by exact values, and for the errors they report. */
#include "../test_util.h"
#include "sstc/layer.h"
#include "sstc/nn.h"

struct model_arg { sstc_model *m; sstc_tensor *x; };
static sstc_tensor *f_model(sstc_ctx *c, sstc_tensor **in, void *u) {
    struct model_arg *a = u;
    return sstc_model_forward(a->m, c, a->x);
}

/* d(loss)/d(every trainable parameter and the input) in training mode, batch
 * norms' gamma and beta moved away from 1 and 0 so their gradients are
 * generic. (Evaluation mode changes only batch norm, checked in
 * test_layers.c; without the batch statistics' normalization the ReLU inputs
 * of these small nets crowd near their kinks, where a finite difference
 * measures the kink rather than the gradient.) */
static void check_model(sstc_model *m, int B, const char *what) {
    sstc_rng r;
    sstc_rng_seed(&r, 3);
    sstc_model_init(m, SSTC_INIT_HE, &r);
    sstc_model_train(m, 1);
    int shape[4] = {B, m->in_shape[0], m->in_shape[1], m->in_shape[2]};
    struct model_arg a = {.m = m, .x = sstc_param_new(m->params, m->in_ndim + 1, shape)};
    fill_away_from_zero(a.x, &r);
    sstc_named_tensor nt[64];
    int n = sstc_model_named_tensors(m, nt, 64);
    sstc_tensor *in[65];
    int nin = 0;
    in[nin++] = a.x;
    for (int i = 0; i < n; i++)
        if (nt[i].trainable) {
            if (nt[i].layer->kind == SSTC_LAYER_BATCHNORM)
                for (size_t k = 0; k < nt[i].tensor->size; k++) nt[i].tensor->data[k] += 0.3f * sstc_rng_normal(&r);
            in[nin++] = nt[i].tensor;
        }
    gradcheck(f_model, in, nin, &a, what);
}

/* conv1 bn1 relu1 conv2 bn2 | route1 (the input) conv3 (1x1, stride 2) bn3 |
 * shortcut1 = relu(bn3 + bn2), gap1, fc1: the network of the PyTorch fixture. */
static sstc_model *residual_block(int conv1_bias) {
    sstc_model *m = sstc_model_create(3, (int[]){3, 7, 7});
    cr_assert_eq(sstc_model_add_conv2d(m, NULL, 4, 3, 2, 1, conv1_bias), 0, "%s", sstc_errmsg());
    cr_assert_eq(sstc_model_add_batchnorm(m, NULL, 1e-5f, 0.1f), 0);
    cr_assert_eq(sstc_model_add_relu(m, NULL), 0);
    cr_assert_eq(sstc_model_add_conv2d(m, NULL, 4, 3, 1, 1, 0), 0);
    cr_assert_eq(sstc_model_add_batchnorm(m, NULL, 1e-5f, 0.1f), 0);
    cr_assert_eq(sstc_model_add_route(m, NULL, 1, (int[]){-6}), 0, "%s", sstc_errmsg());
    cr_assert_eq(sstc_model_add_conv2d(m, NULL, 4, 1, 2, 0, 0), 0, "%s", sstc_errmsg());
    cr_assert_eq(sstc_model_add_batchnorm(m, NULL, 1e-5f, 0.1f), 0);
    cr_assert_eq(sstc_model_add_shortcut(m, NULL, -4, SSTC_ACT_RELU), 0, "%s", sstc_errmsg());
    cr_assert_eq(sstc_model_add_globalavgpool(m, NULL), 0, "%s", sstc_errmsg());
    cr_assert_eq(sstc_model_add_linear(m, NULL, 3, 1), 0, "%s", sstc_errmsg());
    return m;
}

Test(residual, block_with_projection_shortcut_gradients_match_finite_differences) {
    sstc_model *m = residual_block(1);
    cr_assert_eq(m->layers[5].nroute, 1);
    cr_assert_eq(m->layers[5].route[0], -1, "route -6 from layer 5 is the input");
    cr_assert_eq(m->layers[6].out_shape[1], 4, "1x1 stride 2 on 7x7 gives 4x4");
    cr_assert_eq(m->layers[8].from, 4, "from -4 at layer 8 is layer 4, stored absolute");
    cr_assert_eq(m->layers[8].activation, SSTC_ACT_RELU);
    cr_assert_eq(m->layers[9].out_ndim, 1);
    cr_assert_eq(m->layers[9].out_shape[0], 4);
    check_model(m, 3, "residual block");
    sstc_model_free(m);
}

/* A shortcut and a route that reach the model's input, routes of several
 * layers, a linear shortcut, on images and on feature vectors. */
Test(residual, shortcut_and_route_reaching_the_input_gradients_match_finite_differences) {
    sstc_model *m = sstc_model_create(3, (int[]){2, 4, 4});
    cr_assert_eq(sstc_model_add_conv2d(m, NULL, 2, 3, 1, 1, 1), 0);
    cr_assert_eq(sstc_model_add_shortcut(m, NULL, -2, SSTC_ACT_LINEAR), 0, "%s", sstc_errmsg());
    cr_assert_eq(sstc_model_add_route(m, NULL, 3, (int[]){-1, -3, 0}), 0, "%s", sstc_errmsg());
    cr_assert_eq(m->layers[2].out_shape[0], 6);
    cr_assert_eq(m->layers[2].route[1], -1);
    cr_assert_eq(sstc_model_add_relu(m, NULL), 0);
    cr_assert_eq(sstc_model_add_globalavgpool(m, NULL), 0);
    cr_assert_eq(sstc_model_add_linear(m, NULL, 3, 1), 0);
    check_model(m, 2, "image skips");
    sstc_model_free(m);

    m = sstc_model_create(1, (int[]){5});
    cr_assert_eq(sstc_model_add_linear(m, NULL, 4, 1), 0);
    cr_assert_eq(sstc_model_add_relu(m, NULL), 0);
    cr_assert_eq(sstc_model_add_linear(m, NULL, 3, 1), 0);
    cr_assert_eq(sstc_model_add_route(m, NULL, 2, (int[]){-1, -3}), 0, "%s", sstc_errmsg());
    cr_assert_eq(m->layers[3].out_ndim, 1);
    cr_assert_eq(m->layers[3].out_shape[0], 7);
    cr_assert_eq(sstc_model_add_linear(m, NULL, 5, 1), 0);
    cr_assert_eq(sstc_model_add_shortcut(m, NULL, -6, SSTC_ACT_RELU), 0, "%s", sstc_errmsg());
    cr_assert_eq(m->layers[5].from, -1, "from -6 at layer 5 is the input");
    cr_assert_eq(sstc_model_add_linear(m, NULL, 2, 1), 0);
    check_model(m, 3, "feature-vector skips");
    sstc_model_free(m);
}

/* Copies the fixture's value of every trainable parameter into the model. */
static void load_params(sstc_model *m, fx_file *f) {
    sstc_named_tensor nt[64];
    int n = sstc_model_named_tensors(m, nt, 64);
    for (int i = 0; i < n; i++) {
        if (!nt[i].trainable) continue;
        fx_array *a = fx_get(f, nt[i].name);
        cr_assert_eq(a->n, nt[i].tensor->size, "%s", nt[i].name);
        memcpy(nt[i].tensor->data, a->v, a->n * sizeof(float));
    }
}

Test(residual, block_with_projection_shortcut_matches_pytorch) {
    fx_file f;
    fx_load(&f, "residual_block");
    sstc_model *m = residual_block(0);
    load_params(m, &f);
    sstc_model_train(m, 1);
    sstc_ctx *ctx = sstc_ctx_create(0);
    sstc_tensor *x = fx_tensor(m->params, fx_get(&f, "x"), 1);
    sstc_tensor *y = sstc_model_forward(m, ctx, x);
    cr_assert_not_null(y, "%s", sstc_errmsg());
    fx_array *yr = fx_get(&f, "y"), *r = fx_get(&f, "r");
    cr_assert_eq(y->size, yr->n);
    expect_close(y->data, yr->v, yr->n, 1e-5f, 1e-4f, "logits");
    sstc_tensor *rt = sstc_tensor_wrap(ctx, r->v, y->ndim, y->shape);
    cr_assert_eq(sstc_backward(ctx, sstc_sum(ctx, sstc_mul(ctx, y, rt))), 0, "%s", sstc_errmsg());
    fx_array *dx = fx_get(&f, "dx");
    expect_close(x->grad, dx->v, dx->n, 1e-5f, 1e-4f, "dx");
    sstc_named_tensor nt[64];
    int n = sstc_model_named_tensors(m, nt, 64), checked = 0;
    for (int i = 0; i < n; i++) {
        char gname[64];
        snprintf(gname, sizeof gname, "%s%.47s", nt[i].trainable ? "d." : "", nt[i].name);
        fx_array *g = fx_get(&f, gname);
        cr_assert_eq(g->n, nt[i].tensor->size, "%s", gname);
        /* running statistics after the step; gradients of the parameters */
        expect_close(nt[i].trainable ? nt[i].tensor->grad : nt[i].tensor->data, g->v, g->n, 1e-5f, 1e-4f, gname);
        checked++;
    }
    cr_assert_eq(checked, 3 * 1 + 3 * 4 + 2, "conv weights, batch norms (4 tensors each), fc weight and bias");
    sstc_ctx_free(ctx);
    sstc_model_free(m);
    fx_free(&f);
}

/* Values, not only gradients: a shortcut adds exactly the earlier output, a
 * route concatenates in list order, global average pooling takes plane means. */
Test(residual, shortcut_route_and_gap_compute_the_expected_values) {
    sstc_model *m = sstc_model_create(3, (int[]){1, 2, 2});
    cr_assert_eq(sstc_model_add_relu(m, NULL), 0);                                   /* 0 */
    cr_assert_eq(sstc_model_add_shortcut(m, NULL, -2, SSTC_ACT_LINEAR), 0);           /* 1: relu(x) + x */
    cr_assert_eq(sstc_model_add_route(m, NULL, 3, (int[]){0, -3, 1}), 0);             /* 2: relu, x, sum */
    cr_assert_eq(sstc_model_add_shortcut(m, "act", -1, SSTC_ACT_RELU), 0);            /* 3: relu(2 route) */
    cr_assert_eq(sstc_model_add_globalavgpool(m, NULL), 0);                           /* 4 */
    cr_assert_eq(m->nlayers, 5);
    sstc_ctx *ctx = sstc_ctx_create(0);
    float xv[4] = {1, -2, 3, -4};
    sstc_tensor *y = sstc_model_forward(m, ctx, sstc_tensor_wrap(ctx, xv, 4, (int[]){1, 1, 2, 2}));
    cr_assert_not_null(y, "%s", sstc_errmsg());
    cr_assert_eq(y->ndim, 2);
    cr_assert_eq(y->shape[1], 3);
    /* channels: relu(x) = (1,0,3,0), x, relu(x)+x = (2,-2,6,-4); then relu(2 * .) and plane means */
    float want[3] = {(2 + 0 + 6 + 0) / 4.0f, (2 + 0 + 6 + 0) / 4.0f, (4 + 0 + 12 + 0) / 4.0f};
    for (int c = 0; c < 3; c++) cr_expect_float_eq(y->data[c], want[c], 1e-6, "channel %d: %g", c, y->data[c]);
    sstc_ctx_free(ctx);
    char *buf = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&buf, &len);
    sstc_model_print(m, fp);
    fclose(fp);
    cr_expect_not_null(strstr(buf, "shortcut1  shortcut  1x2x2 -> 1x2x2  (+ the input)"), "%s", buf);
    cr_expect_not_null(strstr(buf, "(relu1, the input, shortcut1)"), "%s", buf);
    cr_expect_not_null(strstr(buf, "(+ route1, relu)"), "%s", buf);
    cr_expect_not_null(strstr(buf, "gap1"), "%s", buf);
    free(buf);
    sstc_model_free(m);
}

Test(residual, shortcut_of_different_shapes_names_both_layers_and_shapes) {
    sstc_model *m = sstc_model_create(3, (int[]){3, 8, 8});
    cr_assert_eq(sstc_model_add_conv2d(m, NULL, 4, 3, 1, 1, 0), 0);
    cr_assert_eq(sstc_model_add_conv2d(m, "down", 4, 3, 2, 1, 0), 0);
    cr_assert_neq(sstc_model_add_shortcut(m, NULL, -2, SSTC_ACT_LINEAR), 0);
    const char *msg = sstc_errmsg();
    cr_expect_eq(sstc_errcode(), SSTC_ESHAPE);
    cr_expect_not_null(strstr(msg, "shortcut1"), "%s", msg);
    cr_expect_not_null(strstr(msg, "down"), "%s", msg);
    cr_expect_not_null(strstr(msg, "4x4x4"), "%s", msg);
    cr_expect_not_null(strstr(msg, "conv1"), "%s", msg);
    cr_expect_not_null(strstr(msg, "4x8x8"), "%s", msg);
    cr_assert_neq(sstc_model_add_shortcut(m, NULL, -3, SSTC_ACT_LINEAR), 0);
    cr_expect_not_null(strstr(sstc_errmsg(), "the input"), "%s", sstc_errmsg());
    cr_expect_not_null(strstr(sstc_errmsg(), "3x8x8"), "%s", sstc_errmsg());
    cr_assert_eq(m->nlayers, 2, "a rejected layer is not added");
    sstc_model_free(m);
}

Test(residual, references_outside_the_earlier_layers_and_mismatched_routes_are_rejected) {
    sstc_model *m = sstc_model_create(3, (int[]){3, 8, 8});
    cr_assert_eq(sstc_model_add_conv2d(m, NULL, 4, 3, 1, 1, 0), 0);
    cr_assert_eq(sstc_model_add_maxpool(m, NULL, 2, 2, 0), 0);
    cr_assert_neq(sstc_model_add_shortcut(m, NULL, -4, SSTC_ACT_LINEAR), 0);
    cr_expect_not_null(strstr(sstc_errmsg(), "from = -4"), "%s", sstc_errmsg());
    cr_expect_not_null(strstr(sstc_errmsg(), "-3..-1"), "%s", sstc_errmsg());
    cr_assert_neq(sstc_model_add_shortcut(m, NULL, 2, SSTC_ACT_LINEAR), 0, "a layer cannot add itself");
    cr_assert_neq(sstc_model_add_shortcut(m, NULL, -1, 7), 0);
    cr_assert_neq(sstc_model_add_route(m, NULL, 2, (int[]){-1, -2}), 0);
    cr_expect_eq(sstc_errcode(), SSTC_ESHAPE);
    cr_expect_not_null(strstr(sstc_errmsg(), "maxpool1 gives 4x4x4 and conv1 gives 4x8x8"), "%s", sstc_errmsg());
    cr_assert_neq(sstc_model_add_route(m, NULL, 0, (int[]){0}), 0);
    cr_assert_neq(sstc_model_add_route(m, NULL, SSTC_MAX_ROUTE + 1, (int[SSTC_MAX_ROUTE + 1]){0}), 0);
    cr_assert_eq(sstc_model_add_route(m, NULL, 2, (int[]){-2, -3}), 0, "%s", sstc_errmsg());
    cr_assert_eq(m->layers[2].out_shape[0], 7, "conv1 (4) and the input (3) channels");
    cr_assert_eq(sstc_model_add_flatten(m, NULL), 0);
    cr_assert_neq(sstc_model_add_globalavgpool(m, NULL), 0);
    cr_expect_not_null(strstr(sstc_errmsg(), "expected an image"), "%s", sstc_errmsg());
    sstc_model_free(m);
}
