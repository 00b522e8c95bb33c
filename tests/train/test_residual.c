/* A residual network in a training session on the tiny generated dataset: it
 * learns, and its checkpoint rebuilds the same skip connections (the config
 * travels in the checkpoint) and evaluates identically. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "sstc/train.h"

#include "../tiny_dataset.h"

static char dir[256];
static void make_dataset(void) { tiny_dataset_make(dir, sizeof dir, 60, 20); }
static void cleanup(void) { tiny_dataset_remove(dir); }

TestSuite(train_residual, .init = make_dataset, .fini = cleanup);

/* 8x8 gray: a stem, a basic block, a downsampling block with a projection
 * shortcut (route back, 1x1 stride-2 conv, batch norm), global average pooling */
static const char *config(char *buf, size_t n) {
    snprintf(buf, n,
             "[experiment]\nseed = 4\nthreads = 1\n"
             "[data]\ndataset = %s\n"
             "[train]\nepochs = 4\nbatch_size = 16\noptimizer = sgd\nlr = 0.05\nschedule = cosine\n"
             "[conv]\nfilters = 4\npad = 1\nbias = false\n[batchnorm]\n[relu]\n"
             "[conv]\nfilters = 4\npad = 1\nbias = false\n[batchnorm]\n[relu]\n"
             "[conv]\nfilters = 4\npad = 1\nbias = false\n[batchnorm]\n"
             "[shortcut]\nfrom = -6\nactivation = relu\n"
             "[conv]\nfilters = 8\npad = 1\nstride = 2\nbias = false\n[batchnorm]\n[relu]\n"
             "[conv]\nfilters = 8\npad = 1\nbias = false\n[batchnorm]\n"
             "[route]\nlayers = -6\n"
             "[conv]\nfilters = 8\nsize = 1\nstride = 2\nbias = false\n[batchnorm]\n"
             "[shortcut]\nfrom = -4\nactivation = relu\n"
             "[globalavgpool]\n[fc]\noutputs = 2\n",
             dir);
    return buf;
}

Test(train_residual, residual_network_learns_and_its_checkpoint_rebuilds_it) {
    char text[2048];
    sstc_session *s = NULL;
    cr_assert_eq(sstc_session_open_text(&s, config(text, sizeof text), "res.ini", NULL, 0, 1), 0, "%s",
                 sstc_errmsg());
    sstc_session_set_quiet(s, 1);
    cr_assert_eq(sstc_session_model(s)->nlayers, 20);
    double tl = 0, te = 0;
    while (sstc_session_state(s)->epoch < sstc_session_config_mut(s)->epochs) {
        cr_assert_eq(sstc_session_train_epoch(s, &sstc_session_config(s)->lr, sstc_session_config_mut(s)->epochs, "t", &tl, &te), 0, "%s", sstc_errmsg());
        sstc_session_state(s)->epoch++;
        sstc_session_state(s)->batch = 0;
    }
    sstc_eval_result r1, r2;
    cr_assert_eq(sstc_session_evaluate(s, sstc_session_test_set(s), NULL, sstc_session_test_set(s)->n, &r1), 0, "%s", sstc_errmsg());
    cr_assert_lt(r1.error, 0.2, "the tiny problem is learnable (error %g, training loss %g)", r1.error, tl);
    char ck[300];
    snprintf(ck, sizeof ck, "%s/res.sstc", dir);
    cr_assert_eq(sstc_checkpoint_save(s, ck, NULL, 0), 0, "%s", sstc_errmsg());
    sstc_session *o = NULL;
    cr_assert_eq(sstc_checkpoint_open(&o, ck, 1, NULL, NULL), 0, "%s", sstc_errmsg());
    cr_assert_eq(sstc_session_model(o)->nlayers, sstc_session_model(s)->nlayers);
    cr_assert_eq(sstc_session_model(o)->layers[18].kind, SSTC_LAYER_GLOBALAVGPOOL);
    cr_assert_eq(sstc_session_model(o)->layers[17].from, 13);
    cr_assert_eq(sstc_session_model(o)->layers[14].route[0], 8);
    cr_assert_eq(sstc_session_evaluate(o, sstc_session_test_set(o), NULL, sstc_session_test_set(o)->n, &r2), 0, "%s", sstc_errmsg());
    cr_assert_eq(r1.loss, r2.loss);
    cr_assert_eq(r1.error, r2.error);
    sstc_session_close(o);
    sstc_session_close(s);
}

/* The optimizer step applied parameter by parameter during the backward pass
 * (SSTC_STEP=layer) and after it (the default) give the same bits: every
 * parameter, moments included, after two epochs of SGD and of Adam with
 * weight decay, on the residual network (shortcuts, a route, batch norms
 * fused with their ReLUs and not). */
static void train_and_dump(const char *text, int layerwise, float **out, size_t *n) {
    sstc_train_force_step_mode(layerwise);
    sstc_session *s = NULL;
    cr_assert_eq(sstc_session_open_text(&s, text, "res.ini", NULL, 0, 1), 0, "%s", sstc_errmsg());
    sstc_session_set_quiet(s, 1);
    sstc_session_config_mut(s)->epochs = 2;
    double tl, te;
    for (int e = 0; e < 2; e++) {
        cr_assert_eq(sstc_session_train_epoch(s, &sstc_session_config(s)->lr, 2, "t", &tl, &te), 0, "%s", sstc_errmsg());
        sstc_session_state(s)->epoch++;
        sstc_session_state(s)->batch = 0;
    }
    sstc_optimizer *o = sstc_session_optimizer(s);
    size_t total = 0;
    for (int p = 0; p < o->nparams; p++) total += 3 * o->params[p]->size;
    float *buf = malloc(total * sizeof(float)), *q = buf;
    for (int p = 0; p < o->nparams; p++) {
        size_t m = o->params[p]->size;
        memcpy(q, o->params[p]->data, m * sizeof(float)), q += m;
        memcpy(q, o->m[p], m * sizeof(float)), q += m;
        if (o->v) memcpy(q, o->v[p], m * sizeof(float));
        else memset(q, 0, m * sizeof(float));
        q += m;
    }
    cr_assert_gt(o->step, 2, "steps were taken");
    sstc_session_close(s);
    *out = buf;
    *n = total;
}

Test(train_residual, stepping_each_parameter_during_the_backward_pass_gives_the_same_bits) {
    char text[2048];
    config(text, sizeof text);
    const char *opts[] = {"optimizer = sgd\nlr = 0.05\nweight_decay = 0.001", "optimizer = adam\nlr = 0.003\nweight_decay = 0.01"};
    for (int k = 0; k < 2; k++) {
        char t2[2400];
        char *at = strstr(text, "optimizer = sgd\nlr = 0.05");
        cr_assert_not_null(at);
        size_t head = (size_t)(at - text);
        snprintf(t2, sizeof t2, "%.*s%s%s", (int)head, text, opts[k], at + strlen("optimizer = sgd\nlr = 0.05"));
        float *a, *b;
        size_t na, nb;
        train_and_dump(t2, 0, &a, &na);
        train_and_dump(t2, 1, &b, &nb);
        sstc_train_force_step_mode(0);
        cr_assert_eq(na, nb);
        size_t diff = 0;
        for (size_t i = 0; i < na; i++) diff += memcmp(&a[i], &b[i], sizeof(float)) != 0;
        cr_assert_eq(diff, 0, "%s: %zu of %zu values differ", k ? "adam" : "sgd", diff, na);
        free(a), free(b);
    }
}
