/* plot_draw.h: draws a run's loss and tokens/s curves over wall time (the coordinator's
 * history: every point has its commit time) or over steps (workers' metrics files, which carry
 * no time), with plan changes (joins, deaths, drains) marked as vertical lines at their time
 * (or step), into a PNG or SVG file with cairo. Built only where cairo is (SHOAL_HAVE_CAIRO);
 * `shoalctl plot` says so otherwise. */
#ifndef SHOAL_PLOT_DRAW_H
#define SHOAL_PLOT_DRAW_H

#include "err.h"
#include "runlog.h"

/* The colours (0xRRGGBB) the curves and markers are drawn in, exactly (no antialiasing on
 * them), so a pixel check can find each. */
#define PLOT_RGB_LOSS 0x1f77b4
#define PLOT_RGB_TOKENS 0xff7f0e
#define PLOT_RGB_JOIN 0x2ca02c
#define PLOT_RGB_DEATH 0xd62728
#define PLOT_RGB_DRAIN 0x9467bd
#define PLOT_RGB_PLAN 0x7f7f7f

#define PLOT_WIDTH 1000
#define PLOT_HEIGHT 640
/* margins of the plotting area: x runs from PLOT_LEFT to PLOT_WIDTH - PLOT_RIGHT */
#define PLOT_LEFT 90.0
#define PLOT_RIGHT 30.0

/* The x axis: time (seconds, or minutes for runs over 10 min, since the first point's commit)
 * when every point has a time, else the step. */
typedef struct {
    int time;
    long long t0_ms;
    double unit_s; /* 1 or 60 */
} plot_xaxis_t;
void plot_xaxis(const runlog_t *log, plot_xaxis_t *ax);
/* A point's and a plan change's x on that axis (a change at its ledger entry's time). */
double plot_point_x(const plot_xaxis_t *ax, const runlog_point_t *p);
double plot_marker_x(const plot_xaxis_t *ax, const runlog_marker_t *m);

/* The colour of a plan change's marker. */
unsigned plot_marker_rgb(runlog_change_t kind);

/* Draws `log` (at least one point) to `path`: SVG when it ends in .svg, PNG when in .png
 * (SHOAL_ERR_INVALID otherwise). SHOAL_ERR_IO when cairo cannot write the file. */
shoal_err_t plot_draw(const runlog_t *log, const char *title, const char *path);

#endif
