/* stb_image, compiled here with only the JPEG and PNG decoders and static
 * linkage, so that it never clashes with another copy and the fuzz build
 * instruments it. */
#include "data/internal.h"

#include <stdlib.h>

#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_STATIC
#define STBI_ONLY_JPEG
#define STBI_ONLY_PNG
#define STBI_NO_STDIO
#define STBI_NO_HDR
#define STBI_NO_LINEAR
#define STBI_MAX_DIMENSIONS SSTC_MAX_IMAGE_SIDE
#define STBI_MALLOC(sz) malloc(sz)
#define STBI_REALLOC(p, sz) realloc(p, sz)
#define STBI_FREE(p) free(p)

/* Left on to the end of the file: unused static declarations are reported there. */
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#include <stb_image.h>
#pragma GCC diagnostic pop

uint8_t *sstc_data_stb_decode(const uint8_t *buf, size_t len, int *w, int *h, int *c, const char **why) {
    if (len > 0x7fffffff) {
        *why = "file too large";
        return NULL;
    }
    int iw, ih, ic;
    /* Check the header first so that an absurd size is refused before any allocation. */
    if (!stbi_info_from_memory(buf, (int)len, &iw, &ih, &ic)) {
        *why = stbi_failure_reason();
        return NULL;
    }
    if ((long long)iw * ih > sstc_data_max_image_pixels) {
        *why = "image too large";
        return NULL;
    }
    /* Gray stays gray, everything else becomes RGB (alpha dropped). */
    int want = (ic == 1 || ic == 2) ? 1 : 3;
    uint8_t *px = stbi_load_from_memory(buf, (int)len, &iw, &ih, &ic, want);
    if (!px) {
        *why = stbi_failure_reason();
        return NULL;
    }
    *w = iw;
    *h = ih;
    *c = want;
    return px;
}
