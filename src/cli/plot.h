/* Small PNG charts for `sstc plot`, drawn with libgd (its built-in bitmap
 * fonts label the axes): axes with readable ticks, lines, bars, a legend,
 * diverging-colour weight images, and an atomic PNG write. */
#ifndef SSTC_CLI_PLOT_H
#define SSTC_CLI_PLOT_H

#include <gd.h>

typedef struct {
    gdImagePtr im;
    int x0, y0, x1, y1;          /* plot area in pixels (x0,y0 top left) */
    double xmin, xmax, ymin, ymax;
} plot_axes;

/* Colours of a palette of distinct series colours (i wraps around). */
int plot_color(gdImagePtr im, int i);
int plot_rgb(int r, int g, int b);

/* A white true-colour image; NULL (with sstc_fail) when out of memory. */
gdImagePtr plot_new(int w, int h);

/* Sets up axes in the box (x, y, w, h) of im (room for tick labels and titles
 * is taken inside the box), draws the frame, grid, ticks and labels. */
void plot_axes_init(plot_axes *a, gdImagePtr im, int x, int y, int w, int h, double xmin, double xmax,
                    double ymin, double ymax, const char *title, const char *xlabel, const char *ylabel);
int plot_px(const plot_axes *a, double x);
int plot_py(const plot_axes *a, double y);
/* A polyline through (x[i], y[i]); points with a non-finite y are skipped
 * (the line is broken there). */
void plot_line(const plot_axes *a, const double *x, const double *y, int n, int color, int thick, int dashed);
/* A filled bar from y = max(ymin, 0) up to y, between x0 and x1. */
void plot_bar(const plot_axes *a, double x0, double x1, double y, int color);
/* A shaded vertical band between x0 and x1 with a label at its top. */
void plot_band(const plot_axes *a, double x0, double x1, int color, const char *label);
/* Legend entries in a corner of the axes: 0 top right, 1 bottom left. */
void plot_legend(const plot_axes *a, const char *const *names, const int *colors, int n, int corner);
/* Text at (x, y), top left; font 0 small, 1 bold, 2 large. */
void plot_text(gdImagePtr im, int x, int y, const char *s, int font, int color);

/* Colour of v in [-1, 1]: blue (negative) - white (0) - red (positive). */
int plot_diverging(double v);

/* Writes im as PNG to path (atomically: temporary file, fsync, rename).
 * 0 or an sstc error code with a message. */
int plot_save(gdImagePtr im, const char *path);

#endif
