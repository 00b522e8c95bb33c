/* Small PNG charts with libgd: see plot.h. */
#include "plot.h"

#include <gdfontl.h>
#include <gdfontmb.h>
#include <gdfonts.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "sstc/error.h"
#include "sstc/io.h"

int plot_rgb(int r, int g, int b) { return gdTrueColor(r, g, b); }

int plot_color(gdImagePtr im, int i) {
    (void)im;
    static const int pal[][3] = {{31, 119, 180}, {255, 127, 14}, {214, 39, 40}, {44, 160, 44},
                                 {148, 103, 189}, {140, 86, 75}, {227, 119, 194}, {127, 127, 127}};
    const int *c = pal[((i % 8) + 8) % 8];
    return gdTrueColor(c[0], c[1], c[2]);
}

gdImagePtr plot_new(int w, int h) {
    gdImagePtr im = gdImageCreateTrueColor(w, h);
    if (!im) {
        sstc_fail(SSTC_ENOMEM, "plot: out of memory for a %dx%d image", w, h);
        return NULL;
    }
    gdImageFilledRectangle(im, 0, 0, w - 1, h - 1, gdTrueColor(255, 255, 255));
    return im;
}

static gdFontPtr font_of(int f) {
    return f == 2 ? gdFontGetLarge() : f == 1 ? gdFontGetMediumBold() : gdFontGetSmall();
}

void plot_text(gdImagePtr im, int x, int y, const char *s, int font, int color) {
    gdImageString(im, font_of(font), x, y, (unsigned char *)s, color);
}

static int text_width(const char *s, int font) { return (int)strlen(s) * font_of(font)->w; }

/* A tick step of 1, 2 or 5 times a power of ten giving about `want` ticks. */
static double nice_step(double range, int want) {
    if (!(range > 0)) return 1;
    double raw = range / want, p = pow(10, floor(log10(raw))), m = raw / p;
    return (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10) * p;
}

static void tick_label(char *buf, size_t n, double v, double step) {
    if (fabs(v) < step * 1e-6) v = 0;
    int decimals = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
    if (decimals > 6 || fabs(v) >= 1e5) snprintf(buf, n, "%.3g", v);
    else snprintf(buf, n, "%.*f", decimals, v);
}

int plot_px(const plot_axes *a, double x) {
    double t = (x - a->xmin) / (a->xmax - a->xmin);
    return a->x0 + (int)lround(t * (a->x1 - a->x0));
}

int plot_py(const plot_axes *a, double y) {
    double t = (y - a->ymin) / (a->ymax - a->ymin);
    if (t < 0) t = 0;
    if (t > 1) t = 1;
    return a->y1 - (int)lround(t * (a->y1 - a->y0));
}

void plot_axes_init(plot_axes *a, gdImagePtr im, int x, int y, int w, int h, double xmin, double xmax,
                    double ymin, double ymax, const char *title, const char *xlabel, const char *ylabel) {
    if (!(xmax > xmin)) xmax = xmin + 1;
    if (!(ymax > ymin)) ymax = ymin + 1;
    a->im = im;
    a->xmin = xmin, a->xmax = xmax, a->ymin = ymin, a->ymax = ymax;
    a->x0 = x + 62, a->x1 = x + w - 12;
    a->y0 = y + (title && *title ? 24 : 8), a->y1 = y + h - (xlabel && *xlabel ? 40 : 24);
    int black = gdTrueColor(0, 0, 0), grid = gdTrueColor(225, 225, 225), grey = gdTrueColor(90, 90, 90);
    char buf[64];
    double ys = nice_step(ymax - ymin, 5);
    for (double v = ceil(ymin / ys - 1e-9) * ys; v <= ymax + ys * 1e-9; v += ys) {
        int py = plot_py(a, v);
        gdImageLine(im, a->x0, py, a->x1, py, grid);
        gdImageLine(im, a->x0 - 4, py, a->x0, py, black);
        tick_label(buf, sizeof buf, v, ys);
        plot_text(im, a->x0 - 6 - text_width(buf, 0), py - 6, buf, 0, grey);
    }
    double xs = nice_step(xmax - xmin, 8);
    for (double v = ceil(xmin / xs - 1e-9) * xs; v <= xmax + xs * 1e-9; v += xs) {
        int px = plot_px(a, v);
        gdImageLine(im, px, a->y0, px, a->y1, grid);
        gdImageLine(im, px, a->y1, px, a->y1 + 4, black);
        tick_label(buf, sizeof buf, v, xs);
        plot_text(im, px - text_width(buf, 0) / 2, a->y1 + 6, buf, 0, grey);
    }
    gdImageRectangle(im, a->x0, a->y0, a->x1, a->y1, black);
    if (title && *title) plot_text(im, (a->x0 + a->x1 - text_width(title, 1)) / 2, y + 4, title, 1, black);
    if (xlabel && *xlabel) plot_text(im, (a->x0 + a->x1 - text_width(xlabel, 0)) / 2, a->y1 + 22, xlabel, 0, black);
    if (ylabel && *ylabel)
        gdImageStringUp(im, gdFontGetSmall(), x + 4, (a->y0 + a->y1 + text_width(ylabel, 0)) / 2,
                        (unsigned char *)ylabel, black);
}

/* y in pixels without clamping (lines leaving the axes are clipped by gd) */
static int py_free(const plot_axes *a, double y) {
    double t = (y - a->ymin) / (a->ymax - a->ymin);
    if (t < -10) t = -10;
    if (t > 10) t = 10;
    return a->y1 - (int)lround(t * (a->y1 - a->y0));
}

void plot_line(const plot_axes *a, const double *x, const double *y, int n, int color, int thick, int dashed) {
    gdImageSetThickness(a->im, thick > 0 ? thick : 1);
    gdImageSetClip(a->im, a->x0, a->y0, a->x1, a->y1);
    for (int i = 1; i < n; i++) {
        if (!isfinite(y[i - 1]) || !isfinite(y[i])) continue;
        int px0 = plot_px(a, x[i - 1]), py0 = py_free(a, y[i - 1]), px1 = plot_px(a, x[i]), py1 = py_free(a, y[i]);
        if (dashed) gdImageDashedLine(a->im, px0, py0, px1, py1, color);
        else gdImageLine(a->im, px0, py0, px1, py1, color);
    }
    /* a marker on each point inside the axes (points above ymax are off the chart) */
    for (int i = 0; i < n; i++)
        if (isfinite(y[i]) && y[i] >= a->ymin && y[i] <= a->ymax)
            gdImageFilledEllipse(a->im, plot_px(a, x[i]), plot_py(a, y[i]), 5, 5, color);
    gdImageSetClip(a->im, 0, 0, gdImageSX(a->im) - 1, gdImageSY(a->im) - 1);
    gdImageSetThickness(a->im, 1);
}

void plot_bar(const plot_axes *a, double x0, double x1, double y, int color) {
    double base = a->ymin > 0 ? a->ymin : 0;
    int px0 = plot_px(a, x0), px1 = plot_px(a, x1), top = plot_py(a, y), bot = plot_py(a, base);
    if (px1 <= px0) px1 = px0 + 1;
    if (top > bot) top = bot;
    gdImageFilledRectangle(a->im, px0, top, px1 - 1, bot, color);
}

void plot_band(const plot_axes *a, double x0, double x1, int color, const char *label) {
    int px0 = plot_px(a, x0), px1 = plot_px(a, x1);
    gdImageFilledRectangle(a->im, px0 + 1, a->y0 + 1, px1 - 1, a->y1 - 1, color);
    if (label && text_width(label, 0) + 4 < px1 - px0)
        plot_text(a->im, (px0 + px1 - text_width(label, 0)) / 2, a->y0 + 3, label, 0, gdTrueColor(60, 60, 60));
    else if (label && px1 - px0 >= 10) /* a narrow band: the label upright along it */
        gdImageStringUp(a->im, gdFontGetSmall(), (px0 + px1) / 2 - 6, a->y0 + 4 + text_width(label, 0),
                        (unsigned char *)label, gdTrueColor(60, 60, 60));
}

void plot_legend(const plot_axes *a, const char *const *names, const int *colors, int n, int corner) {
    int wmax = 0;
    for (int i = 0; i < n; i++)
        if (text_width(names[i], 0) > wmax) wmax = text_width(names[i], 0);
    int x = corner ? a->x0 + 14 : a->x1 - wmax - 34, y = corner ? a->y1 - 8 - 15 * n : a->y0 + 18;
    gdImageFilledRectangle(a->im, x - 4, y - 3, x + wmax + 28, y + 15 * n, gdTrueColor(255, 255, 255));
    gdImageRectangle(a->im, x - 4, y - 3, x + wmax + 28, y + 15 * n, gdTrueColor(180, 180, 180));
    for (int i = 0; i < n; i++) {
        gdImageFilledRectangle(a->im, x, y + 15 * i + 3, x + 18, y + 15 * i + 9, colors[i]);
        plot_text(a->im, x + 24, y + 15 * i, names[i], 0, gdTrueColor(0, 0, 0));
    }
}

int plot_diverging(double v) {
    if (!isfinite(v)) v = 0;
    if (v > 1) v = 1;
    if (v < -1) v = -1;
    int k = (int)lround(255 * (1 - fabs(v)));
    return v >= 0 ? gdTrueColor(255, k, k) : gdTrueColor(k, k, 255);
}

int plot_save(gdImagePtr im, const char *path) {
    int size = 0;
    void *png = gdImagePngPtr(im, &size);
    if (!png || size <= 0) return sstc_fail(SSTC_ENOMEM, "%s: could not encode the PNG image", path);
    int rc = sstc_write_atomic(path, png, (size_t)size);
    gdFree(png);
    return rc;
}
