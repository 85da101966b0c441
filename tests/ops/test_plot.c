/* test_plot: shoalctl plot's pieces: the metrics merge (newest generation of a step, the run's
 * throughput over the slowest rank, the run filter), the coordinator's history rows as points,
 * the plan changes read from plan entries, and the drawing: a PNG that cairo reads back holds
 * pixels of both curves' colours and of each plan change's marker colour, and none of a marker
 * that is not in the run; on the time axis the marker sits at its time's x. */
/* cmocka needs these first, in this order */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cairo.h>

#include "plot_draw.h"
#include "runlog.h"

static char s_dir[] = "/tmp/shoal-test-plot-XXXXXX";

static void s_write(const char *name, const char *text, char *path, size_t cap)
{
    snprintf(path, cap, "%s/%s", s_dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* Pixels of exactly colour rgb below the legend (rows >= 50: the panels start at 70) in
 * columns [lo, hi]. */
static long s_count_cols(cairo_surface_t *img, unsigned rgb, int lo, int hi)
{
    const int h = cairo_image_surface_get_height(img), stride = cairo_image_surface_get_stride(img);
    const unsigned char *data = cairo_image_surface_get_data(img);
    long n = 0;
    for (int y = 50; y < h; y++)
        for (int x = lo < 0 ? 0 : lo; x <= hi && x < PLOT_WIDTH; x++)
            n += (*(const uint32_t *)(data + (size_t)y * stride + 4 * (size_t)x) & 0xffffff) == rgb;
    return n;
}

/* ... in every column. */
static long s_count(cairo_surface_t *img, unsigned rgb)
{
    return s_count_cols(img, rgb, 0, PLOT_WIDTH - 1);
}

static void test_merge_metrics(void **state)
{
    (void)state;
    char a[512], b[512];
    /* rank 0 and rank 1 of generation 1 for steps 1-3; step 3 again in generation 2 (after a
     * rollback) with another loss; a line of another run is left out */
    s_write("w1.jsonl",
            "{\"run\":\"r1\",\"step\":1,\"loss\":5.0,\"tokens_per_s\":100,\"step_seconds\":1.0,"
            "\"generation\":1,\"rank\":0}\n"
            "{\"run\":\"r1\",\"step\":2,\"loss\":4.0,\"tokens_per_s\":100,\"step_seconds\":1.0,"
            "\"generation\":1,\"rank\":0}\n"
            "{\"run\":\"r1\",\"step\":3,\"loss\":3.0,\"tokens_per_s\":100,\"step_seconds\":1.0,"
            "\"generation\":1,\"rank\":0}\n"
            "{\"run\":\"r2\",\"step\":4,\"loss\":9.0,\"tokens_per_s\":1,\"step_seconds\":1.0,"
            "\"generation\":1,\"rank\":0}\n",
            a, sizeof a);
    s_write("w2.jsonl",
            "{\"run\":\"r1\",\"step\":1,\"loss\":5.0,\"tokens_per_s\":50,\"step_seconds\":2.0,"
            "\"generation\":1,\"rank\":1}\n"
            "{\"run\":\"r1\",\"step\":2,\"loss\":4.0,\"tokens_per_s\":100,\"step_seconds\":1.0,"
            "\"generation\":1,\"rank\":1}\n"
            "\n"
            "{\"run\":\"r1\",\"step\":3,\"loss\":2.5,\"tokens_per_s\":200,\"step_seconds\":0.5,"
            "\"generation\":2,\"rank\":0}\n",
            b, sizeof b);
    runlog_t l = {0};
    const char *files[] = {a, b};
    assert_int_equal(runlog_read_metrics(&l, files, 2, "r1"), SHOAL_OK);
    assert_int_equal(l.n_points, 3);
    assert_int_equal(l.points[0].step, 1);
    assert_int_equal(l.points[0].ranks, 2);
    /* 100 tokens a step; the slowest rank took 2 s */
    assert_true(fabs(l.points[0].tokens_per_s - 50.0) < 1e-9);
    assert_true(fabs(l.points[0].step_seconds - 2.0) < 1e-9);
    assert_int_equal(l.points[2].step, 3);
    assert_int_equal(l.points[2].generation, 2);
    assert_int_equal(l.points[2].ranks, 1);
    assert_true(l.points[2].loss == 2.5);
    runlog_fini(&l);
    /* every run: r2's step 4 too */
    char list[1100];
    snprintf(list, sizeof list, "%s,%s", a, b);
    assert_int_equal(runlog_read_metrics_list(&l, list, NULL), SHOAL_OK);
    assert_int_equal(l.n_points, 4);
    runlog_fini(&l);
    /* a line that is not metrics is named by file:line */
    s_write("bad.jsonl", "{\"step\":1,\"loss\":1}\n{\"loss\":2}\n", a, sizeof a);
    assert_int_equal(runlog_read_metrics(&l, files, 1, NULL), SHOAL_ERR_FORMAT);
    assert_non_null(strstr(shoal_errmsg(), "bad.jsonl:2"));
    runlog_fini(&l);
}

static json_t *s_plan(long long gen, long long start, const char *reason)
{
    return json_pack("{s:s, s:I, s:{s:I, s:I, s:s}}", "kind", "plan", "time_ms",
                     (json_int_t)(1000 * gen), "detail", "generation", (json_int_t)gen,
                     "start_step", (json_int_t)start, "reason", reason);
}

static void test_markers(void **state)
{
    (void)state;
    json_t *events = json_array();
    json_array_append_new(events, json_pack("{s:s}", "kind", "submit"));
    json_array_append_new(events, s_plan(1, 0, "first plan"));
    json_array_append_new(events, s_plan(2, 20, "w2 dead"));
    json_array_append_new(events, s_plan(3, 35, "w4 joins"));
    json_array_append_new(events, s_plan(4, 41, "w1 draining"));
    json_t *plans = runlog_plan_history(events);
    assert_int_equal(json_array_size(plans), 4);
    runlog_t l = {0};
    assert_int_equal(runlog_markers_from_plans(&l, plans), SHOAL_OK);
    assert_int_equal(l.n_markers, 3); /* the first plan is no change */
    assert_int_equal(l.markers[0].kind, RUNLOG_DEATH);
    assert_int_equal(l.markers[0].step, 20);
    assert_int_equal(l.markers[1].kind, RUNLOG_JOIN);
    assert_int_equal(l.markers[2].kind, RUNLOG_DRAIN);
    runlog_fini(&l);
    json_decref(plans);
    json_decref(events);
}

/* A 50-step run: loss falling, throughput varying; markers as given. */
static void s_synthetic(runlog_t *l, int with_markers)
{
    l->n_points = 50;
    l->points = calloc(50, sizeof *l->points);
    assert_non_null(l->points);
    for (int i = 0; i < 50; i++)
        l->points[i] = (runlog_point_t){.step = i + 1, .loss = 5.5 * exp(-i / 20.0) + 0.3,
                                        .tokens_per_s = 1000 + 300 * sin(i / 4.0),
                                        .generation = 1, .ranks = 2};
    l->markers = calloc(2, sizeof *l->markers);
    assert_non_null(l->markers);
    if (with_markers) {
        l->markers[0] = (runlog_marker_t){.step = 20, .generation = 2, .kind = RUNLOG_DEATH};
        l->markers[1] = (runlog_marker_t){.step = 35, .generation = 3, .kind = RUNLOG_JOIN};
        l->n_markers = 2;
    }
}

static void test_png_pixels(void **state)
{
    (void)state;
    char path[512];
    for (int with = 0; with <= 1; with++) {
        runlog_t l = {0};
        s_synthetic(&l, with);
        snprintf(path, sizeof path, "%s/plot%d.png", s_dir, with);
        assert_int_equal(plot_draw(&l, "test run", path), SHOAL_OK);
        runlog_fini(&l);
        cairo_surface_t *img = cairo_image_surface_create_from_png(path);
        assert_int_equal(cairo_surface_status(img), CAIRO_STATUS_SUCCESS);
        assert_int_equal(cairo_image_surface_get_width(img), PLOT_WIDTH);
        assert_int_equal(cairo_image_surface_get_height(img), PLOT_HEIGHT);
        long loss = s_count(img, PLOT_RGB_LOSS), tok = s_count(img, PLOT_RGB_TOKENS);
        long death = s_count(img, PLOT_RGB_DEATH), join = s_count(img, PLOT_RGB_JOIN);
        long drain = s_count(img, PLOT_RGB_DRAIN);
        printf("markers %d: loss %ld, tokens %ld, death %ld, join %ld, drain %ld pixels\n", with,
               loss, tok, death, join, drain);
        /* a 2-pixel curve across ~880 columns; a dashed 2-pixel line over two ~235-row panels */
        assert_true(loss > 1000);
        assert_true(tok > 1000);
        assert_true(with ? death > 300 : death == 0);
        assert_true(with ? join > 300 : join == 0);
        assert_true(drain == 0);
        cairo_surface_destroy(img);
    }
}

static void test_svg_and_refusals(void **state)
{
    (void)state;
    runlog_t l = {0};
    s_synthetic(&l, 1);
    char path[512];
    snprintf(path, sizeof path, "%s/plot.svg", s_dir);
    assert_int_equal(plot_draw(&l, "svg", path), SHOAL_OK);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char head[4096] = "";
    size_t n = fread(head, 1, sizeof head - 1, f);
    fclose(f);
    head[n] = 0;
    assert_non_null(strstr(head, "<svg"));
    snprintf(path, sizeof path, "%s/plot.jpg", s_dir);
    assert_int_equal(plot_draw(&l, "x", path), SHOAL_ERR_INVALID);
    assert_int_equal(access(path, F_OK), -1);
    l.n_points = 0;
    snprintf(path, sizeof path, "%s/empty.png", s_dir);
    assert_int_equal(plot_draw(&l, "x", path), SHOAL_ERR_INVALID);
    runlog_fini(&l);
}

/* The coordinator's history rows become points with their commit times. */
static void test_history_points(void **state)
{
    (void)state;
    json_t *rows = json_pack("[{s:I, s:I, s:f, s:I, s:f, s:f, s:f, s:I, s:i},"
                             " {s:I, s:I, s:f, s:I, s:f, s:f, s:f, s:I, s:i}]",
                             "step", (json_int_t)1, "time_ms", (json_int_t)1700000000000,
                             "loss", 4.5, "tokens", (json_int_t)2048, "step_seconds", 0.5,
                             "tokens_per_s", 4096.0, "grad_norm", 1.25, "generation",
                             (json_int_t)3, "ranks", 2,
                             "step", (json_int_t)4, "time_ms", (json_int_t)1700000002500,
                             "loss", 3.0, "tokens", (json_int_t)2048, "step_seconds", 0.25,
                             "tokens_per_s", 8192.0, "grad_norm", 0.5, "generation",
                             (json_int_t)4, "ranks", 0);
    assert_non_null(rows);
    runlog_t l = {0};
    assert_int_equal(runlog_points_from_history(&l, rows), SHOAL_OK);
    assert_int_equal(l.n_points, 2);
    assert_int_equal(l.points[1].step, 4);
    assert_int_equal(l.points[1].time_ms, 1700000002500LL);
    assert_true(l.points[0].loss == 4.5 && l.points[0].step_seconds == 0.5);
    assert_true(l.points[1].tokens_per_s == 8192.0 && l.points[0].grad_norm == 1.25);
    assert_int_equal(l.points[0].generation, 3);
    assert_int_equal(l.points[0].ranks, 2);
    assert_true(runlog_has_times(&l));
    plot_xaxis_t ax;
    plot_xaxis(&l, &ax);
    assert_true(ax.time && ax.unit_s == 1);
    assert_true(fabs(plot_point_x(&ax, &l.points[1]) - 2.5) < 1e-9);
    /* a release row round-trips its time through metrics.jsonl */
    json_t *j = runlog_point_json(&l.points[1]);
    assert_int_equal(json_integer_value(json_object_get(j, "time_ms")), 1700000002500LL);
    json_decref(j);
    char line[256];
    runlog_point_csv(&l.points[1], line, sizeof line);
    assert_non_null(strstr(line, ",1700000002500\n"));
    /* one point without a time (a workers' file) puts the plot back on the step axis */
    l.points[0].time_ms = 0;
    assert_false(runlog_has_times(&l));
    runlog_fini(&l);
    json_decref(rows);
}

/* On the time axis a point sits at its commit time and a plan change at its ledger time: with
 * steps that slow down (step i at 0.1 i^2 s) the marker of a death at 90 s lands at 90 s, not
 * where its step would be; a run over 10 min is drawn in minutes. */
static void test_time_axis_markers(void **state)
{
    (void)state;
    const long long t0 = 1700000000000LL;
    for (int minutes = 0; minutes <= 1; minutes++) {
        runlog_t l = {0};
        s_synthetic(&l, 0);
        const long long scale = minutes ? 1000 : 100; /* ms per i^2: 240 s or 2401 s in all */
        for (int i = 0; i < 50; i++)
            l.points[i].time_ms = t0 + scale * i * i;
        /* its start step (10) is far from where its time (i = 30) puts it */
        l.markers[0] = (runlog_marker_t){.step = 10, .generation = 2, .kind = RUNLOG_DEATH,
                                         .time_ms = t0 + scale * 900};
        l.n_markers = 1;
        plot_xaxis_t ax;
        plot_xaxis(&l, &ax);
        assert_true(ax.time);
        assert_true(ax.unit_s == (minutes ? 60 : 1));
        const double span = (double)(scale * 49 * 49) / 1000.0 / ax.unit_s;
        const double want = (double)(scale * 900) / 1000.0 / ax.unit_s;
        assert_true(fabs(plot_marker_x(&ax, &l.markers[0]) - want) < 1e-9);
        char path[512];
        snprintf(path, sizeof path, "%s/time%d.png", s_dir, minutes);
        assert_int_equal(plot_draw(&l, "time axis", path), SHOAL_OK);
        runlog_fini(&l);
        cairo_surface_t *img = cairo_image_surface_create_from_png(path);
        assert_int_equal(cairo_surface_status(img), CAIRO_STATUS_SUCCESS);
        const double w = PLOT_WIDTH - PLOT_LEFT - PLOT_RIGHT;
        const int k = (int)floor(PLOT_LEFT + want / span * w);
        const int at_step = (int)floor(PLOT_LEFT + (10.0 - 1) / 49 * w); /* step axis's x */
        long near = s_count_cols(img, PLOT_RGB_DEATH, k - 2, k + 2);
        long left = s_count_cols(img, PLOT_RGB_DEATH, 0, k - 3);
        long at_s = s_count_cols(img, PLOT_RGB_DEATH, at_step - 2, at_step + 2);
        printf("time axis (%s): marker at x %d: %ld pixels there, %ld left of it, %ld at the "
               "step's x %d\n", minutes ? "min" : "s", k, near, left, at_s, at_step);
        assert_true(near > 300); /* a dashed 2-pixel line over both panels */
        assert_int_equal(left, 0);
        assert_int_equal(at_s, 0);
        /* the curves span the axis: loss pixels at both ends */
        assert_true(s_count_cols(img, PLOT_RGB_LOSS, (int)PLOT_LEFT, (int)PLOT_LEFT + 5) > 0);
        assert_true(s_count_cols(img, PLOT_RGB_LOSS, PLOT_WIDTH - (int)PLOT_RIGHT - 5,
                                 PLOT_WIDTH - (int)PLOT_RIGHT) > 0);
        cairo_surface_destroy(img);
    }
}

int main(void)
{
    if (!mkdtemp(s_dir))
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_merge_metrics),
        cmocka_unit_test(test_markers),
        cmocka_unit_test(test_png_pixels),
        cmocka_unit_test(test_svg_and_refusals),
        cmocka_unit_test(test_history_points),
        cmocka_unit_test(test_time_axis_markers),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", s_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", s_dir);
    return rc;
}
