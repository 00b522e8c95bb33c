/* Classifies images with a coded network through sstc's public API: loads a
 * .sst file into the multiplication-free inference engine and prints the
 * class of each image given as a raw pixel file (C x H x W bytes, the
 * network's input shape, channel after channel).
 *
 * Build against an installed sstc:
 *     cc -std=c11 classify.c $(pkg-config --cflags --libs sstc) -o classify
 *     ./classify runs/mnist_fc-sst-8-2/model.sst digit.raw ...
 */
#include <stdio.h>
#include <stdlib.h>

#include <sstc/error.h>
#include <sstc/infer.h>
#include <sstc/io.h>

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL.sst IMAGE.raw ...\n", argv[0]);
        return 2;
    }
    sstc_engine *e = NULL;
    if (sstc_engine_load(argv[1], &e)) {
        fprintf(stderr, "%s\n", sstc_errmsg());
        return 1;
    }
    sstc_engine_info info;
    sstc_engine_get_info(e, &info);
    size_t need = (size_t)info.in_c * info.in_h * info.in_w;
    float *logits = malloc((size_t)info.num_classes * sizeof(float));
    int status = logits ? 0 : 1;
    for (int i = 2; i < argc && !status; i++) {
        uint8_t *pixels;
        size_t n;
        if (sstc_read_file(argv[i], need, "image", &pixels, &n)) {
            fprintf(stderr, "%s\n", sstc_errmsg());
            status = 1;
            break;
        }
        if (n != need) {
            fprintf(stderr, "%s: %zu bytes, expected %zu (%dx%dx%d)\n", argv[i], n, need, info.in_c, info.in_h, info.in_w);
            status = 1;
        } else if (sstc_engine_forward_pixels(e, pixels, 1, logits)) {
            fprintf(stderr, "%s: %s\n", argv[i], sstc_errmsg());
            status = 1;
        } else {
            int cls;
            sstc_engine_argmax(logits, 1, info.num_classes, &cls);
            printf("%s: class %d\n", argv[i], cls);
        }
        free(pixels);
    }
    free(logits);
    sstc_engine_free(e);
    return status;
}
