/* sstc_dataset_load: finds out what a name or path holds and calls the right
 * loader. */
#include "data/internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "sstc/error.h"

static const char *const known[] = {"mnist", "cifar10", "fashion-mnist"};
static const char *const fashion_names[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                              "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

const char *sstc_data_root(void) {
    const char *r = getenv("SSTC_DATA_DIR");
    return r && *r ? r : "datasets";
}

int sstc_dataset_is_known(const char *name) {
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (name && !strcmp(name, known[i])) return 1;
    return 0;
}

/* First existing file among dir/<prefix>-<kind>-<idxn>-ubyte[.gz] (and the
 * "<prefix>-<kind>.<idxn>-ubyte" spelling) for the given prefixes; malloc'd
 * path or NULL. */
static char *find_idx(const char *dir, const char *const *prefixes, const char *kind, const char *idxn) {
    for (int p = 0; prefixes[p]; p++)
        for (int dot = 0; dot < 2; dot++)
            for (int gz = 1; gz >= 0; gz--) {
                char *path = sstc_data_strdup_printf("%s/%s-%s%c%s-ubyte%s", dir, prefixes[p], kind, dot ? '.' : '-',
                                                idxn, gz ? ".gz" : "");
                if (path && sstc_data_is_file(path)) return path;
                free(path);
            }
    return NULL;
}

static int load_idx_dir(const char *dir, const char *split, int num_classes, sstc_dataset *out, int *found) {
    static const char *const train_p[] = {"train", NULL};
    static const char *const test_p[] = {"t10k", "test", NULL};
    const char *const *pre = strcmp(split, "train") ? test_p : train_p;
    char *img = find_idx(dir, pre, "images", "idx3");
    if (!img) img = find_idx(dir, pre, "images", "idx4");
    char *lab = find_idx(dir, pre, "labels", "idx1");
    *found = img || lab;
    int rc = 0;
    if (!img && lab)
        rc = sstc_fail(SSTC_EIO, "%s: has %s but no %s-images-idx3-ubyte[.gz] next to it", dir, lab, pre[0]);
    else if (img && !lab)
        rc = sstc_fail(SSTC_EIO, "%s: has %s but no %s-labels-idx1-ubyte[.gz] next to it", dir, img, pre[0]);
    else if (img)
        rc = sstc_dataset_from_idx_files(img, lab, num_classes, out);
    free(img);
    free(lab);
    return rc;
}

/* Replaces CIFAR class names with the lines of batches.meta.txt if it has
 * one name per class. */
static void cifar_meta_names(const char *dir, sstc_dataset *ds) {
    char *path = sstc_data_path_join(dir, "batches.meta.txt");
    uint8_t *buf = NULL;
    size_t len;
    if (!path || !sstc_data_is_file(path) || sstc_data_read_file(path, &buf, &len)) {
        free(path);
        sstc_clear_error();
        return;
    }
    char *names[16];
    int k = 0;
    for (char *save = NULL, *tok = strtok_r((char *)buf, "\r\n", &save); tok && k < 16;
         tok = strtok_r(NULL, "\r\n", &save)) {
        while (*tok == ' ') tok++;
        if (*tok) names[k++] = tok;
    }
    if (k == ds->num_classes) {
        for (int i = 0; i < k; i++) {
            char *s = sstc_data_strdup_printf("%s", names[i]);
            if (!s) break;
            free(ds->class_names[i]);
            ds->class_names[i] = s;
        }
    }
    free(buf);
    free(path);
}

static int load_cifar_dir(const char *dir0, const char *split, sstc_dataset *out, int *found) {
    char *sub = sstc_data_path_join(dir0, "cifar-10-batches-bin");
    const char *dir = sub && sstc_data_is_dir(sub) ? sub : dir0;
    char *paths[64];
    int n = 0;
    if (!strcmp(split, "train")) {
        for (int i = 1; i <= 64; i++) {
            char *p = sstc_data_strdup_printf("%s/data_batch_%d.bin", dir, i);
            if (!p || !sstc_data_is_file(p)) {
                free(p);
                break;
            }
            paths[n++] = p;
        }
    } else {
        char *p = sstc_data_path_join(dir, "test_batch.bin");
        if (p && sstc_data_is_file(p)) paths[n++] = p;
        else free(p);
    }
    int rc = 0;
    *found = n > 0;
    if (n == 0) {
        /* The other split's files mean this is CIFAR, with this split missing. */
        char *other = sstc_data_strdup_printf("%s/%s", dir, strcmp(split, "train") ? "data_batch_1.bin" : "test_batch.bin");
        if (other && sstc_data_is_file(other)) {
            *found = 1;
            rc = sstc_fail(SSTC_EIO, "%s: has CIFAR-10 batches but no %s", dir,
                           strcmp(split, "train") ? "test_batch.bin" : "data_batch_1.bin");
        }
        free(other);
    } else {
        rc = sstc_dataset_from_cifar_files((const char *const *)paths, n, out);
        if (rc == 0) cifar_meta_names(dir, out);
    }
    for (int i = 0; i < n; i++) free(paths[i]);
    free(sub);
    return rc;
}

static int load_dir(const char *dir, const char *split, const char *known_name, sstc_dataset *out) {
    char *splitdir = sstc_data_path_join(dir, split);
    if (!splitdir) return sstc_fail(SSTC_ENOMEM, "out of memory");
    int rc, found = 0;
    if (sstc_data_is_dir(splitdir)) {
        /* Class list from train/, so that labels mean the same in both splits. */
        char *traindir = sstc_data_path_join(dir, "train");
        char *cache = sstc_data_strdup_printf("%s/%s.sstcache", dir, split);
        const char *classes = traindir && sstc_data_is_dir(traindir) ? traindir : splitdir;
        rc = traindir && cache ? sstc_dataset_from_folder(splitdir, classes, cache, out)
                               : sstc_fail(SSTC_ENOMEM, "out of memory");
        free(traindir);
        free(cache);
        free(splitdir);
        return rc;
    }
    free(splitdir);
    int idx_classes = known_name ? 10 : 0;
    rc = load_idx_dir(dir, split, idx_classes, out, &found);
    if (found) {
        if (rc == 0 && known_name && !strcmp(known_name, "fashion-mnist")) {
            for (int i = 0; i < 10; i++) {
                char *s = sstc_data_strdup_printf("%s", fashion_names[i]);
                if (!s) break;
                free(out->class_names[i]);
                out->class_names[i] = s;
            }
        }
        return rc;
    }
    rc = load_cifar_dir(dir, split, out, &found);
    if (found) return rc;
    return sstc_fail(SSTC_EFORMAT,
                     "%s: no %s/ image folder, no IDX files (%s-images-idx3-ubyte[.gz]) and no CIFAR-10 batches "
                     "(%s) found; expected one of these layouts",
                     dir, split, strcmp(split, "train") ? "t10k" : "train",
                     strcmp(split, "train") ? "test_batch.bin" : "data_batch_1.bin");
}

static int load_file(const char *path, sstc_dataset *out) {
    size_t len = strlen(path);
    if (len >= 4 && !strcmp(path + len - 4, ".bin")) {
        const char *p[1] = {path};
        return sstc_dataset_from_cifar_files(p, 1, out);
    }
    const char *pairs[][2] = {{"images-idx3", "labels-idx1"}, {"images.idx3", "labels.idx1"}};
    for (int i = 0; i < 2; i++) {
        const char *at = strstr(path, pairs[i][0]);
        if (!at) continue;
        char *lab = sstc_data_strdup_printf("%.*s%s%s", (int)(at - path), path, pairs[i][1], at + strlen(pairs[i][0]));
        if (!lab) return sstc_fail(SSTC_ENOMEM, "out of memory");
        int rc;
        if (!sstc_data_is_file(lab))
            rc = sstc_fail(SSTC_EIO, "%s: IDX images file given, but its labels file %s does not exist", path, lab);
        else
            rc = sstc_dataset_from_idx_files(path, lab, 0, out);
        free(lab);
        return rc;
    }
    return sstc_fail(SSTC_EFORMAT,
                     "%s: unknown kind of file; expected a CIFAR-10 batch (*.bin) or an IDX images file "
                     "(*-images-idx3-ubyte[.gz])",
                     path);
}

int sstc_dataset_has_split(const char *name, const char *split) {
    if (!name || !split) return 0;
    char *dir = sstc_dataset_is_known(name) ? sstc_data_path_join(sstc_data_root(), name) : sstc_data_strdup_printf("%s", name);
    if (!dir) return 0;
    int yes = 0;
    if (sstc_data_is_file(dir)) {
        yes = 1; /* a single file holds its only split */
    } else if (sstc_data_is_dir(dir)) {
        static const char *const train_p[] = {"train", NULL};
        static const char *const test_p[] = {"t10k", "test", NULL};
        int test = strcmp(split, "train") != 0;
        char *sd = sstc_data_path_join(dir, split);
        char *idx = find_idx(dir, test ? test_p : train_p, "images", "idx3");
        char *c1 = sstc_data_strdup_printf("%s/%s", dir, test ? "test_batch.bin" : "data_batch_1.bin");
        char *c2 = sstc_data_strdup_printf("%s/cifar-10-batches-bin/%s", dir, test ? "test_batch.bin" : "data_batch_1.bin");
        yes = (sd && sstc_data_is_dir(sd)) || idx || (c1 && sstc_data_is_file(c1)) || (c2 && sstc_data_is_file(c2));
        free(sd), free(idx), free(c1), free(c2);
    }
    free(dir);
    return yes;
}

int sstc_dataset_load(const char *name, const char *split, sstc_dataset *out) {
    if (!out) return sstc_fail(SSTC_EINVAL, "sstc_dataset_load: NULL output");
    memset(out, 0, sizeof *out);
    if (!name || !*name) return sstc_fail(SSTC_EINVAL, "sstc_dataset_load: no dataset name given");
    if (sstc_dataset_is_known(name)) {
        if (!split || (strcmp(split, "train") && strcmp(split, "test")))
            return sstc_fail(SSTC_EINVAL, "%s: split '%s', expected 'train' or 'test'", name, split ? split : "(null)");
        char *dir = sstc_data_path_join(sstc_data_root(), name);
        if (!dir) return sstc_fail(SSTC_ENOMEM, "out of memory");
        int rc;
        if (!sstc_data_is_dir(dir))
            rc = sstc_fail(SSTC_EIO, "%s: dataset '%s' is not prepared; run 'sstc data prepare %s' (or 'make data')",
                           dir, name, name);
        else
            rc = load_dir(dir, split, name, out);
        free(dir);
        return rc;
    }
    struct stat st;
    if (stat(name, &st) != 0)
        return sstc_fail(SSTC_EIO,
                         "%s: %s; expected a known dataset (mnist, cifar10, fashion-mnist) or the path of an image "
                         "folder dataset (train/ and test/ with one sub-folder per class), IDX files or CIFAR-10 "
                         "batches",
                         name, strerror(errno));
    if (S_ISDIR(st.st_mode)) {
        if (!split || (strcmp(split, "train") && strcmp(split, "test")))
            return sstc_fail(SSTC_EINVAL, "%s: split '%s', expected 'train' or 'test'", name, split ? split : "(null)");
        return load_dir(name, split, NULL, out);
    }
    return load_file(name, out);
}
