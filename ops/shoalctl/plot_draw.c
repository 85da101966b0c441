/* plot_draw.c: the loss and tokens/s panels of a run with its plan changes, drawn with cairo
 * (plot_draw.h). */
#include "plot_draw.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cairo-svg.h>
#include <cairo.h>

#define S_LEFT PLOT_LEFT
#define S_RIGHT PLOT_RIGHT
#define S_TOP 70.0
#define S_GAP 60.0
#define S_BOTTOM 50.0

typedef struct {
    double x0, y0, w, h;         /* the panel's plotting area */
    double xmin, xmax, ymin, ymax;
} s_panel_t;

void plot_xaxis(const runlog_t *log, plot_xaxis_t *ax)
{
    *ax = (plot_xaxis_t){.time = runlog_has_times(log), .unit_s = 1};
    if (!ax->time)
        return;
    /* time since the first committed step; minutes once the run is longer than 10 min */
    ax->t0_ms = log->points[0].time_ms;
    if (log->points[log->n_points - 1].time_ms - ax->t0_ms > 600 * 1000)
        ax->unit_s = 60;
}

double plot_point_x(const plot_xaxis_t *ax, const runlog_point_t *p)
{
    return ax->time ? (double)(p->time_ms - ax->t0_ms) / 1000.0 / ax->unit_s : (double)p->step;
}

double plot_marker_x(const plot_xaxis_t *ax, const runlog_marker_t *m)
{
    return ax->time ? (double)(m->time_ms - ax->t0_ms) / 1000.0 / ax->unit_s : (double)m->step;
}

unsigned plot_marker_rgb(runlog_change_t kind)
{
    switch (kind) {
    case RUNLOG_JOIN: return PLOT_RGB_JOIN;
    case RUNLOG_DEATH: return PLOT_RGB_DEATH;
    case RUNLOG_DRAIN: return PLOT_RGB_DRAIN;
    default: return PLOT_RGB_PLAN;
    }
}

static void s_rgb(cairo_t *cr, unsigned rgb)
{
    cairo_set_source_rgb(cr, ((rgb >> 16) & 0xff) / 255.0, ((rgb >> 8) & 0xff) / 255.0,
                         (rgb & 0xff) / 255.0);
}

static double s_px(const s_panel_t *p, double x)
{
    return p->x0 + (x - p->xmin) / (p->xmax - p->xmin) * p->w;
}

static double s_py(const s_panel_t *p, double y)
{
    return p->y0 + p->h - (y - p->ymin) / (p->ymax - p->ymin) * p->h;
}

/* A round tick step for a span: 1, 2 or 5 times a power of ten, about 5 ticks. */
static double s_tick(double span)
{
    double raw = span / 5, mag = pow(10, floor(log10(raw))), r = raw / mag;
    return mag * (r < 1.5 ? 1 : r < 3.5 ? 2 : r < 7.5 ? 5 : 10);
}

static void s_axes(cairo_t *cr, const s_panel_t *p, const char *ylabel, const char *xlabel)
{
    cairo_set_antialias(cr, CAIRO_ANTIALIAS_DEFAULT);
    cairo_set_line_width(cr, 1);
    s_rgb(cr, 0x000000);
    cairo_rectangle(cr, p->x0, p->y0, p->w, p->h);
    cairo_stroke(cr);
    cairo_set_font_size(cr, 11);
    char buf[64];
    double t = s_tick(p->ymax - p->ymin);
    for (double y = ceil(p->ymin / t) * t; y <= p->ymax + 1e-9 * t; y += t) {
        snprintf(buf, sizeof buf, "%g", fabs(y) < 1e-12 * t ? 0.0 : y);
        cairo_move_to(cr, p->x0 - 6 - 6.5 * (double)strlen(buf), s_py(p, y) + 4);
        cairo_show_text(cr, buf);
        cairo_move_to(cr, p->x0 - 4, s_py(p, y));
        cairo_line_to(cr, p->x0, s_py(p, y));
        cairo_stroke(cr);
    }
    t = s_tick(p->xmax - p->xmin);
    if (t < 1)
        t = 1;
    for (double x = ceil(p->xmin / t) * t; x <= p->xmax + 1e-9; x += t) {
        snprintf(buf, sizeof buf, "%g", x);
        cairo_move_to(cr, s_px(p, x) - 3.2 * (double)strlen(buf), p->y0 + p->h + 15);
        cairo_show_text(cr, buf);
    }
    cairo_set_font_size(cr, 13);
    cairo_move_to(cr, p->x0, p->y0 - 8);
    cairo_show_text(cr, ylabel);
    if (xlabel) {
        cairo_move_to(cr, p->x0 + p->w / 2 - 15, p->y0 + p->h + 35);
        cairo_show_text(cr, xlabel);
    }
}

/* The curve of field `off` (a double of runlog_point_t) over the panel, unantialiased. */
static void s_curve(cairo_t *cr, const s_panel_t *p, const plot_xaxis_t *ax, const runlog_t *log,
                    size_t off, unsigned rgb)
{
    cairo_set_antialias(cr, CAIRO_ANTIALIAS_NONE);
    cairo_set_line_width(cr, 2);
    s_rgb(cr, rgb);
    for (int i = 0; i < log->n_points; i++) {
        const runlog_point_t *pt = &log->points[i];
        double v = *(const double *)((const char *)pt + off);
        /* on the step axis, steps without metrics (a worker without --metrics held them) leave
         * a gap; on the time axis the history's rows are joined (a row may stand for several
         * steps committed at once) */
        const double x = plot_point_x(ax, pt);
        if (i == 0 || (!ax->time && pt->step != log->points[i - 1].step + 1))
            cairo_move_to(cr, s_px(p, x), s_py(p, v));
        else
            cairo_line_to(cr, s_px(p, x), s_py(p, v));
    }
    if (log->n_points == 1) /* one step: a dot, so that it shows */
        cairo_rel_line_to(cr, 3, 0);
    cairo_stroke(cr);
}

static void s_range(const runlog_t *log, size_t off, double *lo, double *hi)
{
    *lo = INFINITY;
    *hi = -INFINITY;
    for (int i = 0; i < log->n_points; i++) {
        double v = *(const double *)((const char *)&log->points[i] + off);
        *lo = v < *lo ? v : *lo;
        *hi = v > *hi ? v : *hi;
    }
    double pad = (*hi - *lo) * 0.05;
    if (pad <= 0)
        pad = fabs(*hi) * 0.05 + 1e-3;
    *lo -= pad;
    *hi += pad;
}

static void s_markers(cairo_t *cr, const s_panel_t *top, const s_panel_t *bottom,
                      const plot_xaxis_t *ax, const runlog_t *log)
{
    const double dash[] = {6, 4};
    for (int i = 0; i < log->n_markers; i++) {
        const runlog_marker_t *m = &log->markers[i];
        const double mx = plot_marker_x(ax, m);
        if (mx < top->xmin || mx > top->xmax)
            continue;
        double x = floor(s_px(top, mx)) + 0.5;
        cairo_set_antialias(cr, CAIRO_ANTIALIAS_NONE);
        cairo_set_line_width(cr, 2);
        cairo_set_dash(cr, dash, 2, 0);
        s_rgb(cr, plot_marker_rgb(m->kind));
        cairo_move_to(cr, x, top->y0);
        cairo_line_to(cr, x, top->y0 + top->h);
        cairo_move_to(cr, x, bottom->y0);
        cairo_line_to(cr, x, bottom->y0 + bottom->h);
        cairo_stroke(cr);
        cairo_set_dash(cr, NULL, 0, 0);
        cairo_set_antialias(cr, CAIRO_ANTIALIAS_DEFAULT);
        char label[64];
        snprintf(label, sizeof label, "g%lld %s", m->generation, runlog_change_name(m->kind));
        cairo_set_font_size(cr, 10);
        cairo_move_to(cr, x + 3, top->y0 + 12 + 11 * (i % 3));
        cairo_show_text(cr, label);
    }
}

static void s_legend(cairo_t *cr, double x, double y)
{
    static const struct {
        unsigned rgb;
        const char *name;
    } items[] = {{PLOT_RGB_LOSS, "loss"},   {PLOT_RGB_TOKENS, "tokens/s"},
                 {PLOT_RGB_JOIN, "join"},   {PLOT_RGB_DEATH, "death"},
                 {PLOT_RGB_DRAIN, "drain"}, {PLOT_RGB_PLAN, "other plan"}};
    cairo_set_font_size(cr, 11);
    for (size_t i = 0; i < sizeof items / sizeof items[0]; i++) {
        s_rgb(cr, items[i].rgb);
        cairo_rectangle(cr, x, y - 8, 14, 8);
        cairo_fill(cr);
        s_rgb(cr, 0x000000);
        cairo_move_to(cr, x + 18, y);
        cairo_show_text(cr, items[i].name);
        x += 32 + 7.0 * (double)strlen(items[i].name);
    }
}

static int s_ends_with(const char *s, const char *suf)
{
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && strcmp(s + n - m, suf) == 0;
}

shoal_err_t plot_draw(const runlog_t *log, const char *title, const char *path)
{
    if (log->n_points < 1)
        return shoal_fail(SHOAL_ERR_INVALID, "plot: no metrics to draw");
    const int svg = s_ends_with(path, ".svg");
    if (!svg && !s_ends_with(path, ".png"))
        return shoal_fail(SHOAL_ERR_INVALID, "plot: %s: the file name must end in .png or .svg",
                          path);
    cairo_surface_t *sf = svg ? cairo_svg_surface_create(path, PLOT_WIDTH, PLOT_HEIGHT)
                              : cairo_image_surface_create(CAIRO_FORMAT_RGB24, PLOT_WIDTH,
                                                           PLOT_HEIGHT);
    cairo_t *cr = cairo_create(sf);
    const double ph = (PLOT_HEIGHT - S_TOP - S_GAP - S_BOTTOM) / 2;
    const double pw = PLOT_WIDTH - S_LEFT - S_RIGHT;
    plot_xaxis_t ax;
    plot_xaxis(log, &ax);
    double xmin = plot_point_x(&ax, &log->points[0]);
    double xmax = plot_point_x(&ax, &log->points[log->n_points - 1]);
    for (int i = 0; i < log->n_markers; i++) { /* a change outside the steps still shows */
        const double mx = plot_marker_x(&ax, &log->markers[i]);
        xmin = mx < xmin ? mx : xmin;
        xmax = mx > xmax ? mx : xmax;
    }
    if (xmax <= xmin)
        xmax = xmin + 1;
    s_panel_t top = {S_LEFT, S_TOP, pw, ph, xmin, xmax, 0, 0};
    s_panel_t bottom = {S_LEFT, S_TOP + ph + S_GAP, pw, ph, xmin, xmax, 0, 0};
    s_range(log, offsetof(runlog_point_t, loss), &top.ymin, &top.ymax);
    s_range(log, offsetof(runlog_point_t, tokens_per_s), &bottom.ymin, &bottom.ymax);

    s_rgb(cr, 0xffffff);
    cairo_paint(cr);
    s_rgb(cr, 0x000000);
    cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_BOLD);
    cairo_set_font_size(cr, 15);
    cairo_move_to(cr, S_LEFT, 22);
    cairo_show_text(cr, title);
    cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
    s_legend(cr, S_LEFT, 42);
    s_axes(cr, &top, "loss", NULL);
    s_axes(cr, &bottom, "tokens/s",
           !ax.time ? "step" : ax.unit_s > 1 ? "minutes since the first step"
                                             : "seconds since the first step");
    s_curve(cr, &top, &ax, log, offsetof(runlog_point_t, loss), PLOT_RGB_LOSS);
    s_curve(cr, &bottom, &ax, log, offsetof(runlog_point_t, tokens_per_s), PLOT_RGB_TOKENS);
    s_markers(cr, &top, &bottom, &ax, log);

    shoal_err_t rc = SHOAL_OK;
    if (cairo_status(cr) != CAIRO_STATUS_SUCCESS)
        rc = shoal_fail(SHOAL_ERR_IO, "plot: drawing %s: %s", path,
                        cairo_status_to_string(cairo_status(cr)));
    cairo_destroy(cr);
    if (rc == SHOAL_OK && !svg && cairo_surface_write_to_png(sf, path) != CAIRO_STATUS_SUCCESS)
        rc = shoal_fail(SHOAL_ERR_IO, "plot: cannot write %s", path);
    cairo_surface_finish(sf);
    if (rc == SHOAL_OK && cairo_surface_status(sf) != CAIRO_STATUS_SUCCESS)
        rc = shoal_fail(SHOAL_ERR_IO, "plot: writing %s: %s", path,
                        cairo_status_to_string(cairo_surface_status(sf)));
    cairo_surface_destroy(sf);
    return rc;
}
