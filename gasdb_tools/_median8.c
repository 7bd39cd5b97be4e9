/* Exact square median filter of 8-bit images: the Perreault-Hebert constant-time median with the
 * median tracked from one window to the next instead of searched for.
 *
 * S. Perreault, P. Hebert, "Median filtering in constant time", IEEE Transactions on Image
 * Processing 16(9), 2007, pp. 2389-2394. doi:10.1109/TIP.2007.902329
 *
 * As in the paper, every column keeps a histogram of its sv pixels in the window's rows, at two
 * levels (16 coarse bins of 16 values, 256 fine bins); the kernel's coarse histogram moves right by
 * adding the entering column's and subtracting the leaving one's, and the fine bins of a coarse bin
 * are brought up to date only when the median is in it. Where OpenCV's medianBlur searches every
 * window's median from the bottom of both levels (a cost that grows with the median's value, and a
 * mispredicted branch at the end of each scan), this code keeps the median m and the number of
 * values below it from the previous window and moves m by the few steps the new window needs (on a
 * 640x512 thermal frame with sv = 51 the median changes by 0.5 grey level per pixel on average).
 *
 * The input is the image already padded by sv / 2 on every side (the caller chooses the border);
 * one call computes a band of output rows, so that threads can share an image without a halo of
 * recomputed outputs. The GIL is released during the computation.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef int16_t v16 __attribute__((vector_size(32)));
typedef int16_t v8 __attribute__((vector_size(16)));

/* Sum of the 16 lanes (shuffles: extracting the lanes one by one costs twice the whole kernel). */
static inline int hsum(v16 v)
{
#if defined(__clang__) || __GNUC__ >= 12
    v8 a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7)
         + __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
    a += __builtin_shufflevector(a, a, 4, 5, 6, 7, 0, 1, 2, 3);
    a += __builtin_shufflevector(a, a, 2, 3, 0, 1, 4, 5, 6, 7);
    a += __builtin_shufflevector(a, a, 1, 0, 2, 3, 4, 5, 6, 7);
    return a[0];
#else
    int s = 0;
    for (int j = 0; j < 16; j++)
        s += v[j];
    return s;
#endif
}

/* Fine bins of coarse bin g for the window whose leftmost column is x: from the last window they
 * were valid for (at most sv - 1 columns back), else summed afresh. */
static inline void sync_fine(v16 *kf, long *last, const v16 *colf, int g, long x, int sv)
{
    long lx = last[g];
    v16 s;
    if (lx < 0 || x - lx >= sv) {
        s = (v16){0};
        for (long c = x; c < x + sv; c++)
            s += colf[c * 16 + g];
    } else {
        s = kf[g];
        for (long xx = lx + 1; xx <= x; xx++)
            s += colf[(xx + sv - 1) * 16 + g] - colf[(xx - 1) * 16 + g];
    }
    kf[g] = s;
    last[g] = x;
}

/* AVX2 where the CPU has it, chosen when the module loads (GCC on x86-64 ELF systems). */
#if defined(__x86_64__) && defined(__ELF__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx2", "default")))
#endif
static void median_band(const uint8_t *pad, Py_ssize_t pstride, long width, int sv, long y0, long y1,
                        uint8_t *out, Py_ssize_t ostride, v16 *colc, v16 *colf)
{
    const int r = sv / 2;
    const long w = width - 2 * r;
    const int t = (sv * sv) / 2; /* 0-based rank of the median */
    int16_t *cc = (int16_t *)colc, *cf = (int16_t *)colf;
    v16 mask[17], kf[16];
    long last[16];
    int m = 0;

    for (int g = 0; g <= 16; g++)
        for (int j = 0; j < 16; j++)
            mask[g][j] = j < g ? -1 : 0;
    memset(colc, 0, sizeof(v16) * width);
    memset(colf, 0, sizeof(v16) * 16 * width);
    for (long yy = y0; yy < y0 + sv; yy++) {
        const uint8_t *row = pad + yy * pstride;
        for (long c = 0; c < width; c++) {
            cc[c * 16 + (row[c] >> 4)]++;
            cf[c * 256 + row[c]]++;
        }
    }
    for (long y = y0; y < y1; y++) {
        if (y > y0) {
            const uint8_t *leaving = pad + (y - 1) * pstride, *entering = pad + (y + sv - 1) * pstride;
            for (long c = 0; c < width; c++) {
                cc[c * 16 + (leaving[c] >> 4)]--;
                cf[c * 256 + leaving[c]]--;
                cc[c * 16 + (entering[c] >> 4)]++;
                cf[c * 256 + entering[c]]++;
            }
        }
        uint8_t *o = out + (y - y0) * ostride;
        v16 kc = {0};
        for (int c = 0; c < sv; c++)
            kc += colc[c];
        for (int g = 0; g < 16; g++)
            last[g] = -1;
        /* the first window of the row: searched from the bottom */
        int below = 0, g = 0;
        while (below + kc[g] <= t) {
            below += kc[g];
            g++;
        }
        sync_fine(kf, last, colf, g, 0, sv);
        m = g * 16;
        while (below + kf[g][m & 15] <= t) {
            below += kf[g][m & 15];
            m++;
        }
        o[0] = (uint8_t)m;
        for (long x = 1; x < w; x++) {
            const long in = x + sv - 1, gone = x - 1;
            g = m >> 4;
            v16 dc = colc[in] - colc[gone];
            v16 df = colf[in * 16 + g] - colf[gone * 16 + g];
            kc += dc;
            kf[g] += df;
            last[g] = x;
            /* values below m that entered minus those that left */
            below += hsum((dc & mask[g]) + (df & mask[m & 15]));
            while (below > t) {
                m--;
                if ((m & 15) == 15)
                    sync_fine(kf, last, colf, m >> 4, x, sv);
                below -= kf[m >> 4][m & 15];
            }
            while (below + kf[m >> 4][m & 15] <= t) {
                below += kf[m >> 4][m & 15];
                m++;
                if ((m & 15) == 0)
                    sync_fine(kf, last, colf, m >> 4, x, sv);
            }
            o[x] = (uint8_t)m;
        }
    }
}

PyDoc_STRVAR(median_rows_doc,
"median_rows(padded, sv, y0, y1, out)\n--\n\n"
"Medians of the sv x sv windows of the padded uint8 image for output rows [y0, y1) into out.\n\n"
"padded: 2-D uint8 buffer, rows contiguous, padded by sv // 2 on every side (H + sv - 1 rows).\n"
"out: writable 2-D uint8 buffer of y1 - y0 rows and W - sv + 1 columns (a band of the output).\n"
"sv: odd window size, 1 <= sv <= 181 (counts are 16-bit).");

static PyObject *median_rows(PyObject *self, PyObject *args)
{
    PyObject *src_obj, *out_obj;
    int sv;
    Py_ssize_t y0, y1;
    if (!PyArg_ParseTuple(args, "OinnO", &src_obj, &sv, &y0, &y1, &out_obj))
        return NULL;
    Py_buffer src, out;
    if (PyObject_GetBuffer(src_obj, &src, PyBUF_STRIDED_RO | PyBUF_FORMAT) < 0)
        return NULL;
    if (PyObject_GetBuffer(out_obj, &out, PyBUF_STRIDED | PyBUF_FORMAT) < 0) {
        PyBuffer_Release(&src);
        return NULL;
    }
    PyObject *result = NULL;
    const char *why = NULL;
    if (src.ndim != 2 || out.ndim != 2 || src.itemsize != 1 || out.itemsize != 1
        || (src.format && strcmp(src.format, "B")) || (out.format && strcmp(out.format, "B")))
        why = "padded and out must be 2-D uint8 arrays";
    else if (src.strides[1] != 1 || out.strides[1] != 1 || src.strides[0] < src.shape[1] || out.strides[0] < out.shape[1])
        why = "the rows of padded and out must be contiguous and stored top to bottom";
    else if (sv < 1 || sv % 2 == 0 || sv > 181)
        why = "sv must be odd, between 1 and 181";
    else if (src.shape[0] < sv || src.shape[1] < sv)
        why = "padded is smaller than one window";
    else if (y0 < 0 || y1 < y0 || y1 > src.shape[0] - sv + 1)
        why = "rows [y0, y1) are outside the output";
    else if (out.shape[0] != y1 - y0 || out.shape[1] != src.shape[1] - sv + 1)
        why = "out must have y1 - y0 rows and padded's width - sv + 1 columns";
    if (why) {
        PyErr_SetString(PyExc_ValueError, why);
        goto done;
    }
    if (y1 > y0) {
        /* the column histograms, coarse then fine: 544 bytes a column. Allocated per call (glibc
         * then serves calls of the same size from its heap); a per-thread cache would leak
         * with every thread that ends, and stages start pools of threads per recording. */
        const long width = (long)src.shape[1];
        v16 *hist = aligned_alloc(32, (size_t)width * 17 * sizeof(v16));
        if (!hist) {
            PyErr_NoMemory();
            goto done;
        }
        Py_BEGIN_ALLOW_THREADS
        median_band((const uint8_t *)src.buf, src.strides[0], width, sv, (long)y0, (long)y1,
                    (uint8_t *)out.buf, out.strides[0], hist, hist + width);
        Py_END_ALLOW_THREADS
        free(hist);
    }
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&src);
    PyBuffer_Release(&out);
    return result;
}

static PyMethodDef methods[] = {
    {"median_rows", median_rows, METH_VARARGS, median_rows_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_median8",
    "Exact 8-bit square median filter (Perreault-Hebert with a tracked median); see restoration.py.",
    -1, methods,
};

PyMODINIT_FUNC PyInit__median8(void)
{
    return PyModule_Create(&module);
}
