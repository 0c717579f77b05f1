/* snapstore._cdc: FastCDC cut points, exactly as the fastcdc package computes them, faster.
 *
 * The cut rule is fastcdc's (fastcdc_cy.pyx, cdc_offset): a gear hash
 * `pattern = (pattern >> 1) + GEAR[byte]` starts at 0 at `min_size` bytes into the chunk;
 * the chunk ends after the first byte where `pattern & mask_s == 0` before the centre size
 * (`cs`), or `pattern & mask_l == 0` after it, or at `max_size` (or the end of the data).
 * The gear table is handed in by the caller (snapstore.chunker, from the fastcdc package),
 * so the two cannot drift apart; tests compare both on random data.
 *
 * Two differences, neither visible in the result:
 * - The scan releases the GIL, so other threads run while it works.
 * - Zero runs are skipped. Over zero bytes the pattern follows x -> (x >> 1) + GEAR[0],
 *   which from any state reaches one of its two fixed points within 32 bytes and then
 *   stays there. The caller checks that neither fixed point satisfies either mask (true for
 *   every chunker snapstore accepts), so once the pattern sits on a fixed point the rest of
 *   a zero run cannot hold a cut and is stepped over a word at a time.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint32_t gear[256];
static uint32_t fixed0, fixed1; /* the fixed points of the gear hash over zero bytes */
static int have_gear = 0;

/* First index >= i (and < end) whose byte is not zero, or end. */
static Py_ssize_t skip_zeros(const uint8_t *data, Py_ssize_t i, Py_ssize_t end)
{
    uint64_t word;
    while (i < end && ((uintptr_t)(data + i) & 7) != 0 && data[i] == 0)
        i++;
    while (i + 8 <= end) {
        memcpy(&word, data + i, 8);
        if (word != 0)
            break;
        i += 8;
    }
    while (i < end && data[i] == 0)
        i++;
    return i;
}

/* One scan loop: from i to barrier with mask; returns the cut (i + 1) or -1 with *at = barrier. */
static Py_ssize_t scan(const uint8_t *data, Py_ssize_t i, Py_ssize_t barrier, uint32_t mask,
                       uint32_t *pattern, int skip)
{
    uint32_t p = *pattern;
    while (i < barrier) {
        uint8_t byte = data[i];
        p = (p >> 1) + gear[byte];
        if (!(p & mask)) {
            *pattern = p;
            return i + 1;
        }
        i++;
        if (byte == 0 && skip && (p == fixed0 || p == fixed1))
            i = skip_zeros(data, i, barrier);
    }
    *pattern = p;
    return -1;
}

static PyObject *set_gear(PyObject *self, PyObject *table)
{
    PyObject *seq = PySequence_Fast(table, "the gear table must be a sequence");
    if (seq == NULL)
        return NULL;
    if (PySequence_Fast_GET_SIZE(seq) != 256) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "the gear table must have 256 entries");
        return NULL;
    }
    for (int k = 0; k < 256; k++) {
        unsigned long v = PyLong_AsUnsignedLong(PySequence_Fast_GET_ITEM(seq, k));
        if (v == (unsigned long)-1 && PyErr_Occurred()) {
            Py_DECREF(seq);
            return NULL;
        }
        gear[k] = (uint32_t)v;
    }
    Py_DECREF(seq);
    /* Iterating from the lowest and the highest state finds both fixed points. */
    uint32_t lo = 0, hi = 0xFFFFFFFFu;
    for (int k = 0; k < 64; k++) {
        lo = (lo >> 1) + gear[0];
        hi = (hi >> 1) + gear[0];
    }
    fixed0 = lo;
    fixed1 = hi;
    have_gear = ((fixed0 >> 1) + gear[0] == fixed0) && ((fixed1 >> 1) + gear[0] == fixed1);
    return PyBool_FromLong(have_gear);
}

/* next_cut(buffer, start, end, min_size, max_size, cs, mask_s, mask_l) -> length
 * The length of the chunk starting at `start` in buffer[start:end], as fastcdc computes it
 * (it looks at no more than max(64 KiB, max_size) bytes). */
static PyObject *next_cut(PyObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t start, end, min_size, max_size, cs;
    unsigned long mask_s, mask_l;
    if (!have_gear) {
        PyErr_SetString(PyExc_RuntimeError, "set_gear() first");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "y*nnnnnkk", &view, &start, &end, &min_size, &max_size, &cs,
                          &mask_s, &mask_l))
        return NULL;
    if (start < 0 || end < start || end > view.len || min_size < 0 || max_size < 1 || cs < 0) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "bad range or sizes");
        return NULL;
    }
    const uint8_t *data = (const uint8_t *)view.buf + start;
    Py_ssize_t read_size = max_size > 65536 ? max_size : 65536;
    Py_ssize_t size = end - start < read_size ? end - start : read_size;
    int skip = (fixed0 & mask_s) && (fixed1 & mask_s) && (fixed0 & mask_l) && (fixed1 & mask_l);
    Py_ssize_t cut;
    Py_BEGIN_ALLOW_THREADS
    uint32_t pattern = 0;
    Py_ssize_t i = min_size < size ? min_size : size;
    Py_ssize_t centre = cs < size ? cs : size;
    Py_ssize_t barrier = max_size < size ? max_size : size;
    cut = scan(data, i, centre, (uint32_t)mask_s, &pattern, skip);
    if (cut < 0) {
        if (i < centre)
            i = centre;
        cut = scan(data, i, barrier, (uint32_t)mask_l, &pattern, skip);
        if (cut < 0)
            cut = i > barrier ? i : barrier;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t(cut);
}

/* is_zero(buffer) -> bool: whether every byte is zero (a word at a time, without the GIL). */
static PyObject *is_zero(PyObject *self, PyObject *arg)
{
    Py_buffer view;
    Py_ssize_t end;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (view.len < 65536) {
        end = skip_zeros((const uint8_t *)view.buf, 0, view.len);
    } else {
        Py_BEGIN_ALLOW_THREADS
        end = skip_zeros((const uint8_t *)view.buf, 0, view.len);
        Py_END_ALLOW_THREADS
    }
    Py_ssize_t len = view.len;
    PyBuffer_Release(&view);
    return PyBool_FromLong(end == len);
}

/* Appends the pair (a, b) to a growing array of run bounds; -1 when out of memory. */
static int add_run(Py_ssize_t **runs, Py_ssize_t *count, Py_ssize_t *cap, Py_ssize_t a, Py_ssize_t b)
{
    if (*count + 2 > *cap) {
        Py_ssize_t n = *cap ? 2 * *cap : 64;
        Py_ssize_t *bigger = realloc(*runs, n * sizeof(Py_ssize_t));
        if (bigger == NULL)
            return -1;
        *runs = bigger;
        *cap = n;
    }
    (*runs)[(*count)++] = a;
    (*runs)[(*count)++] = b;
    return 0;
}

/* The list of (start, end) pairs of runs[0..count); frees runs. */
static PyObject *pair_list(Py_ssize_t *runs, Py_ssize_t count, int failed)
{
    if (failed) {
        free(runs);
        return PyErr_NoMemory();
    }
    PyObject *out = PyList_New(count / 2);
    for (Py_ssize_t k = 0; out != NULL && k < count / 2; k++) {
        PyObject *pair = Py_BuildValue("(nn)", runs[2 * k], runs[2 * k + 1]);
        if (pair == NULL) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, k, pair);
    }
    free(runs);
    return out;
}

/* First index j >= lo such that data[j..i) are all zero (i itself when data[i-1] is not). */
static Py_ssize_t back_zeros(const uint8_t *data, Py_ssize_t i, Py_ssize_t lo)
{
    uint64_t word;
    while (i > lo && ((uintptr_t)(data + i) & 7) != 0 && data[i - 1] == 0)
        i--;
    while (i - 8 >= lo) {
        memcpy(&word, data + i - 8, 8);
        if (word != 0)
            break;
        i -= 8;
    }
    while (i > lo && data[i - 1] == 0)
        i--;
    return i;
}

/* zero_runs(buffer, min_zeros) -> list of (start, end): the maximal runs of zero bytes at
 * least min_zeros long, and those touching either end of the buffer whatever their length,
 * in order. A run of min_zeros bytes holds a whole 8-byte word at every stride of
 * min_zeros - 15 bytes (rounded down to whole words), so only those words are looked at
 * until one is zero: a few hundred loads for a block of data without long runs. */
static PyObject *zero_runs(PyObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t min_zeros;
    if (!PyArg_ParseTuple(args, "y*n", &view, &min_zeros))
        return NULL;
    if (min_zeros < 1)
        min_zeros = 1;
    const uint8_t *data = (const uint8_t *)view.buf;
    Py_ssize_t len = view.len;
    Py_ssize_t *runs = NULL, count = 0, cap = 0;
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS
    Py_ssize_t stride = ((min_zeros - 15) / 8) * 8;
    Py_ssize_t pos = 0; /* everything before pos is done */
    if (len > 0 && data[0] == 0) {
        pos = skip_zeros(data, 0, len);
        failed = add_run(&runs, &count, &cap, 0, pos);
    }
    while (!failed && pos < len) {
        Py_ssize_t a = -1, b;
        if (stride < 8) { /* short runs wanted: look at every byte */
            Py_ssize_t i = pos;
            while (i < len && data[i] != 0)
                i++;
            if (i >= len)
                break;
            a = i;
            b = skip_zeros(data, i, len);
        } else {
            Py_ssize_t i = pos + ((8 - ((uintptr_t)(data + pos) & 7)) & 7); /* word-aligned */
            for (; i + 8 <= len; i += stride) {
                uint64_t word;
                memcpy(&word, data + i, 8);
                if (word == 0) {
                    a = back_zeros(data, i, pos);
                    b = skip_zeros(data, i, len);
                    break;
                }
            }
            if (a < 0)
                break;
        }
        if (b - a >= min_zeros || b == len)
            failed = add_run(&runs, &count, &cap, a, b);
        pos = b;
    }
    if (!failed && len > 0 && data[len - 1] == 0 && (count == 0 || runs[count - 1] != len)) {
        Py_ssize_t a = back_zeros(data, len, pos);
        failed = add_run(&runs, &count, &cap, a, len);
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    return pair_list(runs, count, failed);
}

static PyMethodDef methods[] = {
    {"zero_runs", zero_runs, METH_VARARGS, "(start, end) of the zero runs of min_zeros+ and at either end."},
    {"is_zero", is_zero, METH_O, "Whether every byte of the buffer is zero."},
    {"set_gear", set_gear, METH_O, "Install the gear table (256 ints); True if zero runs can be skipped."},
    {"next_cut", next_cut, METH_VARARGS, "Length of the chunk at start (fastcdc's rule)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cdc", NULL, -1, methods};

PyMODINIT_FUNC PyInit__cdc(void) { return PyModule_Create(&module); }
