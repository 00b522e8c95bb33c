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
