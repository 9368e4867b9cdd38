/* Native core of facelink.shared.rans: the rANS encoder and decoder loops in C, byte-identical to the pure Python
 * coder in shared/rans.py (and so to CompressAI's ryg_rans 64-bit coder).
 *
 * Plain C on the Python C-API and the buffer protocol: no numpy, no other dependency. The Python layer
 * (shared/rans.py) owns the public API, the capacity check and the end-of-stream check; this module does the
 * per-symbol work with the GIL released, so server threads decode frames in parallel.
 *
 * Every input is validated here, whatever the caller did: buffer formats (signed 32- or 64-bit integers,
 * C-contiguous), lengths, CDF indexes, CDF lengths, the table values a symbol touches, and every read of the
 * stream. Errors of the stream (the bytes) are raised as the exception class the caller passes in (RansError),
 * errors of the arguments as ValueError, with the messages of the pure Python coder.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define PRECISION 16
#define PROB_ONE (1LL << PRECISION)
#define BYPASS_BITS 4
#define MAX_BYPASS ((1 << BYPASS_BITS) - 1)
#define RANS_L (1ULL << 31)
#define MAX_RAW_CHUNKS 7
#define MAX_ESCAPE ((1LL << (BYPASS_BITS * MAX_RAW_CHUNKS)) - 1)

static const char MSG_TABLES[] =
    "cdfs are not 16-bit CDFs (each row rising from 0 to 65536 within its cdf_length, 2 <= cdf_length <= row width)";
static const char MSG_INDEX[] = "CDF index out of range";
static const char MSG_SHAPES[] = "symbols and indexes must have the same number of elements";
static const char MSG_ENDS[] = "rANS stream ends before all symbols were decoded";
static const char MSG_ENDS_ESCAPE[] = "rANS stream ends inside an escape";
static const char MSG_WIDE_ESCAPE[] = "escaped value wider than 28 bits";
static const char MSG_OVERFLOW[] = "decoded symbol outside the int64 range (offsets too large)";

/* A flat integer buffer: signed 32- or 64-bit, C-contiguous, read-only unless asked for. */
typedef struct {
    Py_buffer view;
    int held;
    const char *data;
    Py_ssize_t n;    /* elements */
    int itemsize;    /* 4 or 8 */
    Py_ssize_t rows; /* 2-D only */
    Py_ssize_t cols;
} IntBuf;

static void release(IntBuf *b) {
    if (b->held) {
        PyBuffer_Release(&b->view);
        b->held = 0;
    }
}

/* Fills b from obj; ndim 1 takes any shape as flat, ndim 2 requires exactly 2 dimensions. */
static int get_ints(PyObject *obj, const char *name, int ndim, int writable, IntBuf *b) {
    memset(b, 0, sizeof(*b));
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, &b->view, flags) < 0) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "%s must be a C-contiguous%s buffer of int32 or int64", name,
                     writable ? " writable" : "");
        return -1;
    }
    b->held = 1;
    const char *f = b->view.format ? b->view.format : "B";
    if (*f == '@' || *f == '=' || *f == '<') {
        f++;
    }
    int ok = f[0] != '\0' && f[1] == '\0' && strchr("ilq", f[0]) != NULL
             && (b->view.itemsize == 4 || b->view.itemsize == 8);
    if (!ok) {
        PyErr_Format(PyExc_ValueError, "%s must hold int32 or int64, not format '%s'", name,
                     b->view.format ? b->view.format : "B");
        release(b);
        return -1;
    }
    b->itemsize = (int)b->view.itemsize;
    b->data = (const char *)b->view.buf;
    b->n = b->view.len / b->itemsize;
    if (ndim == 2) {
        if (b->view.ndim != 2 || b->view.shape == NULL) {
            PyErr_Format(PyExc_ValueError, "%s must be 2-D", name);
            release(b);
            return -1;
        }
        b->rows = b->view.shape[0];
        b->cols = b->view.shape[1];
    }
    return 0;
}

static inline int64_t rd(const IntBuf *b, Py_ssize_t i) {
    return b->itemsize == 4 ? (int64_t)((const int32_t *)b->data)[i] : ((const int64_t *)b->data)[i];
}

/* The tables of one part: one row of cdfs per cdf_lengths/offsets entry, every row's ends 0 and 2^16. */
typedef struct {
    IntBuf cdfs, lengths, offsets;
} Tables;

static void release_tables(Tables *t) {
    release(&t->cdfs);
    release(&t->lengths);
    release(&t->offsets);
}

static int get_tables(PyObject *cdfs, PyObject *lengths, PyObject *offsets, Tables *t) {
    memset(t, 0, sizeof(*t));
    if (get_ints(cdfs, "cdfs", 2, 0, &t->cdfs) < 0 || get_ints(lengths, "cdf_lengths", 1, 0, &t->lengths) < 0
        || get_ints(offsets, "offsets", 1, 0, &t->offsets) < 0) {
        release_tables(t);
        return -1;
    }
    if (t->cdfs.rows != t->lengths.n || t->cdfs.rows != t->offsets.n) {
        PyErr_SetString(PyExc_ValueError, "cdfs must be 2-D with one row per cdf_lengths/offsets entry");
        release_tables(t);
        return -1;
    }
    for (Py_ssize_t k = 0; k < t->cdfs.rows; k++) {
        int64_t n = rd(&t->lengths, k);
        if (n < 2 || n > t->cdfs.cols || rd(&t->cdfs, k * t->cdfs.cols) != 0
            || rd(&t->cdfs, k * t->cdfs.cols + n - 1) != PROB_ONE) {
            PyErr_SetString(PyExc_ValueError, MSG_TABLES);
            release_tables(t);
            return -1;
        }
    }
    return 0;
}

static int check_indexes(const IntBuf *idx, Py_ssize_t rows) {
    int bad = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < idx->n; i++) {
        int64_t k = rd(idx, i);
        if (k < 0 || k >= rows) {
            bad = 1;
            break;
        }
    }
    Py_END_ALLOW_THREADS
    if (bad) {
        PyErr_SetString(PyExc_ValueError, MSG_INDEX);
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------------------------
 * Encoder
 */

typedef struct {
    IntBuf symbols, indexes;
    Tables t;
} Part;

/* How a symbol is coded: its slot in the CDF (max_value for an escape) and the escape's raw value (-1: none).
 * Arithmetic wraps as numpy's int64 does. Returns 0, or 1 for an escape outside [0, MAX_ESCAPE]. */
static inline int symbol_terms(const Part *pt, Py_ssize_t i, int64_t *k_out, int64_t *slot, int64_t *raw) {
    int64_t k = rd(&pt->indexes, i);
    int64_t value = (int64_t)((uint64_t)rd(&pt->symbols, i) - (uint64_t)rd(&pt->t.offsets, k));
    int64_t max_value = rd(&pt->t.lengths, k) - 2;
    *k_out = k;
    if (value < 0) {
        *raw = (int64_t)((uint64_t)0 - 2 * (uint64_t)value - 1);
    } else if (value >= max_value) {
        *raw = (int64_t)(2 * ((uint64_t)value - (uint64_t)max_value));
    } else {
        *slot = value;
        *raw = -1;
        return 0;
    }
    *slot = max_value;
    return (*raw < 0 || *raw > MAX_ESCAPE) ? 1 : 0;
}

static inline int n_chunks_of(int64_t raw) {
    int n = 0;
    while (n < 16 && (raw >> (n * BYPASS_BITS)) != 0) {
        n++;
    }
    return n;
}

/* Validates one part (after its indexes) and counts its coded slots: 0, 1 escape too wide, 2 bad table slot. */
static int scan_part(const Part *pt, Py_ssize_t *n_slots) {
    int escape_bad = 0, table_bad = 0;
    Py_ssize_t slots = 0;
    const Py_ssize_t cols = pt->t.cdfs.cols;
    for (Py_ssize_t i = 0; i < pt->symbols.n; i++) {
        int64_t k, slot, raw;
        if (symbol_terms(pt, i, &k, &slot, &raw)) {
            escape_bad = 1;
            continue;
        }
        int64_t start = rd(&pt->t.cdfs, k * cols + slot);
        int64_t next = rd(&pt->t.cdfs, k * cols + slot + 1);
        if (start < 0 || next > PROB_ONE || next <= start) {
            table_bad = 1;
        }
        slots += 1;
        if (raw >= 0) {
            int nb = n_chunks_of(raw);
            slots += nb / MAX_BYPASS + 1 + nb;
        }
    }
    *n_slots = slots;
    return escape_bad ? 1 : (table_bad ? 2 : 0);
}

static inline void enc_put(uint64_t *x, uint32_t **w, uint64_t start, uint64_t freq, int shift) {
    uint64_t xx = *x;
    if (xx >= (freq << (63 - shift))) {
        *--(*w) = (uint32_t)xx;
        xx >>= 32;
    }
    *x = ((xx / freq) << shift) + (xx % freq) + start;
}

/* Codes one part's symbols in reverse (rANS is last in, first out), writing words downwards from *w. */
static void encode_part(const Part *pt, uint64_t *x, uint32_t **w) {
    const Py_ssize_t cols = pt->t.cdfs.cols;
    for (Py_ssize_t i = pt->symbols.n - 1; i >= 0; i--) {
        int64_t k, slot, raw;
        symbol_terms(pt, i, &k, &slot, &raw);
        if (raw >= 0) {
            /* forward order: the chunk count (groups of at most MAX_BYPASS), then raw's chunks, low first */
            int nb = n_chunks_of(raw);
            for (int j = nb - 1; j >= 0; j--) {
                enc_put(x, w, (uint64_t)((raw >> (j * BYPASS_BITS)) & MAX_BYPASS), 1, BYPASS_BITS);
            }
            enc_put(x, w, (uint64_t)(nb % MAX_BYPASS), 1, BYPASS_BITS);
            for (int j = 0; j < nb / MAX_BYPASS; j++) {
                enc_put(x, w, MAX_BYPASS, 1, BYPASS_BITS);
            }
        }
        int64_t start = rd(&pt->t.cdfs, k * cols + slot);
        int64_t next = rd(&pt->t.cdfs, k * cols + slot + 1);
        enc_put(x, w, (uint64_t)start, (uint64_t)(next - start), PRECISION);
    }
}

static void release_parts(Part *parts, Py_ssize_t n) {
    for (Py_ssize_t j = 0; j < n; j++) {
        release(&parts[j].symbols);
        release(&parts[j].indexes);
        release_tables(&parts[j].t);
    }
}

PyDoc_STRVAR(encode_doc,
"encode(parts) -> bytes\n\n"
"One rANS stream for a sequence of parts, each (symbols, indexes, cdfs, cdf_lengths, offsets) of int32/int64\n"
"buffers (cdfs 2-D); the bytes of rans.encode_parts. Raises ValueError on bad arguments.");

static PyObject *rans_encode(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *seq;
    if (!PyArg_ParseTuple(args, "O:encode", &seq)) {
        return NULL;
    }
    PyObject *fast = PySequence_Fast(seq, "parts must be a sequence of (symbols, indexes, cdfs, cdf_lengths, "
                                          "offsets)");
    if (fast == NULL) {
        return NULL;
    }
    Py_ssize_t n_parts = PySequence_Fast_GET_SIZE(fast);
    Part *parts = PyMem_Calloc(n_parts ? (size_t)n_parts : 1, sizeof(Part));
    if (parts == NULL) {
        Py_DECREF(fast);
        return PyErr_NoMemory();
    }
    PyObject *result = NULL;
    uint32_t *words = NULL;
    Py_ssize_t loaded = 0, total_slots = 0;
    for (; loaded < n_parts; loaded++) {
        PyObject *item = PySequence_Fast_GET_ITEM(fast, loaded);
        PyObject *s, *i, *c, *l, *o;
        if (!PyTuple_Check(item) || !PyArg_ParseTuple(item, "OOOOO", &s, &i, &c, &l, &o)) {
            PyErr_Clear();
            PyErr_SetString(PyExc_ValueError, "each part must be a tuple (symbols, indexes, cdfs, cdf_lengths, "
                                              "offsets)");
            goto done;
        }
        Part *pt = &parts[loaded];
        if (get_ints(s, "symbols", 1, 0, &pt->symbols) < 0) {
            goto done;
        }
        if (get_ints(i, "indexes", 1, 0, &pt->indexes) < 0) {
            release(&pt->symbols);
            goto done;
        }
        if (get_tables(c, l, o, &pt->t) < 0) {
            release(&pt->symbols);
            release(&pt->indexes);
            goto done;
        }
        if (pt->symbols.n != pt->indexes.n) {
            PyErr_SetString(PyExc_ValueError, MSG_SHAPES);
            loaded++;
            goto done;
        }
        if (check_indexes(&pt->indexes, pt->t.cdfs.rows) < 0) {
            loaded++;
            goto done;
        }
        int status;
        Py_ssize_t slots = 0;
        Py_BEGIN_ALLOW_THREADS
        status = scan_part(pt, &slots);
        Py_END_ALLOW_THREADS
        if (status == 1) {
            PyErr_Format(PyExc_ValueError, "symbol too far outside its CDF's support to code (escape > %lld)",
                         (long long)MAX_ESCAPE);
            loaded++;
            goto done;
        }
        if (status == 2) {
            PyErr_SetString(PyExc_ValueError, MSG_TABLES);
            loaded++;
            goto done;
        }
        total_slots += slots;
    }
    /* at most one word per coded slot (the 64-bit state renormalises at most once per put) */
    if ((size_t)total_slots > (PY_SSIZE_T_MAX - 8) / 4) {
        PyErr_NoMemory();
        goto done;
    }
    words = PyMem_Malloc(((size_t)total_slots + 1) * sizeof(uint32_t));
    if (words == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    uint32_t *end = words + total_slots + 1;
    uint32_t *w = end;
    uint64_t x = RANS_L;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t j = n_parts - 1; j >= 0; j--) {
        encode_part(&parts[j], &x, &w);
    }
    Py_END_ALLOW_THREADS
    Py_ssize_t n_words = end - w;
    result = PyBytes_FromStringAndSize(NULL, 8 + 4 * n_words);
    if (result == NULL) {
        goto done;
    }
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    for (int b = 0; b < 8; b++) {
        out[b] = (unsigned char)(x >> (8 * b));
    }
    for (Py_ssize_t j = 0; j < n_words; j++) {
        uint32_t v = w[j];
        unsigned char *o = out + 8 + 4 * j;
        o[0] = (unsigned char)v;
        o[1] = (unsigned char)(v >> 8);
        o[2] = (unsigned char)(v >> 16);
        o[3] = (unsigned char)(v >> 24);
    }
done:
    PyMem_Free(words);
    release_parts(parts, loaded);
    PyMem_Free(parts);
    Py_DECREF(fast);
    return result;
}

/* ---------------------------------------------------------------------------------------------------------------
 * Decoder
 */

enum { DEC_OK = 0, DEC_ENDS, DEC_ENDS_ESCAPE, DEC_WIDE_ESCAPE, DEC_TABLES, DEC_OVERFLOW };

static inline uint32_t word_at(const unsigned char *data, Py_ssize_t p) {
    const unsigned char *b = data + 4 * p;
    return (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24);
}

/* Rans64DecGetBits with 4 bits; 0, or DEC_ENDS_ESCAPE when the stream ends. */
static inline int get_bits(uint64_t *x, Py_ssize_t *p, const unsigned char *data, Py_ssize_t n_words, int *v) {
    *v = (int)(*x & MAX_BYPASS);
    *x >>= BYPASS_BITS;
    if (*x < RANS_L) {
        if (*p >= n_words) {
            return DEC_ENDS_ESCAPE;
        }
        *x = (*x << 32) | word_at(data, *p);
        *p += 1;
    }
    return DEC_OK;
}

static int decode_loop(const unsigned char *data, Py_ssize_t n_words, uint64_t *px, Py_ssize_t *pp,
                       const IntBuf *idx, const Tables *t, int64_t *out) {
    uint64_t x = *px;
    Py_ssize_t p = *pp;
    const Py_ssize_t cols = t->cdfs.cols;
    const int wide = t->cdfs.itemsize == 8;
    const int32_t *c32 = (const int32_t *)t->cdfs.data;
    const int64_t *c64 = (const int64_t *)t->cdfs.data;
    int status = DEC_OK;
    for (Py_ssize_t i = 0; i < idx->n; i++) {
        int64_t k = rd(idx, i);
        int64_t n = rd(&t->lengths, k);
        Py_ssize_t base = (Py_ssize_t)k * cols;
        int64_t cum = (int64_t)(x & (PROB_ONE - 1));
        /* bisect_right over the row's first n entries, as the Python decoder does */
        Py_ssize_t lo = 0, hi = (Py_ssize_t)n;
        while (lo < hi) {
            Py_ssize_t mid = (Py_ssize_t)(((size_t)lo + (size_t)hi) / 2);
            int64_t v = wide ? c64[base + mid] : (int64_t)c32[base + mid];
            if (cum < v) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        Py_ssize_t s = lo - 1;
        if (s < 0 || s + 1 >= n) {  /* impossible with the row ends checked; never read outside the row */
            status = DEC_TABLES;
            break;
        }
        int64_t start = wide ? c64[base + s] : (int64_t)c32[base + s];
        int64_t next = wide ? c64[base + s + 1] : (int64_t)c32[base + s + 1];
        if (start < 0 || next > PROB_ONE) {
            status = DEC_TABLES;
            break;
        }
        x = (uint64_t)(next - start) * (x >> PRECISION) + (uint64_t)(cum - start);
        if (x < RANS_L) {
            if (p >= n_words) {
                status = DEC_ENDS;
                break;
            }
            x = (x << 32) | word_at(data, p);
            p++;
        }
        int64_t sym = (int64_t)s;
        if (sym == n - 2) {
            int n_bypass, v;
            if ((status = get_bits(&x, &p, data, n_words, &n_bypass)) != DEC_OK) {
                break;
            }
            if (n_bypass > MAX_RAW_CHUNKS) {
                status = DEC_WIDE_ESCAPE;
                break;
            }
            int64_t raw = 0;
            for (int j = 0; j < n_bypass; j++) {
                if ((status = get_bits(&x, &p, data, n_words, &v)) != DEC_OK) {
                    break;
                }
                raw |= (int64_t)v << (j * BYPASS_BITS);
            }
            if (status != DEC_OK) {
                break;
            }
            sym = (raw & 1) ? -(raw >> 1) - 1 : (raw >> 1) + sym;
        }
        int64_t value;
        if (__builtin_add_overflow(sym, rd(&t->offsets, k), &value)) {
            status = DEC_OVERFLOW;
            break;
        }
        out[i] = value;
    }
    *px = x;
    *pp = p;
    return status;
}

PyDoc_STRVAR(decode_doc,
"decode(data, x, p, indexes, cdfs, cdf_lengths, offsets, out, error) -> (x, p)\n\n"
"Decodes len(indexes) symbols into out (a writable int64 buffer of that length) from the stream data (bytes-like,\n"
"32-bit little-endian words) at state x and word position p; returns the new state and position. Stream errors\n"
"are raised as the exception class error, bad arguments as ValueError.");

static PyObject *rans_decode(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *data_obj, *x_obj, *idx_obj, *cdfs_obj, *len_obj, *off_obj, *out_obj, *error;
    Py_ssize_t p;
    if (!PyArg_ParseTuple(args, "OOnOOOOOO:decode", &data_obj, &x_obj, &p, &idx_obj, &cdfs_obj, &len_obj, &off_obj,
                          &out_obj, &error)) {
        return NULL;
    }
    if (!PyExceptionClass_Check(error)) {
        PyErr_SetString(PyExc_TypeError, "error must be an exception class");
        return NULL;
    }
    uint64_t x = PyLong_AsUnsignedLongLong(x_obj);
    if (x == (uint64_t)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        PyErr_SetString(PyExc_ValueError, "x must be a 64-bit rANS state");
        return NULL;
    }
    Py_buffer data;
    if (PyObject_GetBuffer(data_obj, &data, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    IntBuf idx, out;
    Tables t;
    PyObject *result = NULL;
    int have_idx = 0, have_t = 0, have_out = 0;
    Py_ssize_t n_words = data.len / 4;
    if (p < 0 || p > n_words) {
        PyErr_SetString(PyExc_ValueError, "word position outside the stream");
        goto done;
    }
    if (get_ints(idx_obj, "indexes", 1, 0, &idx) < 0) {
        goto done;
    }
    have_idx = 1;
    if (get_tables(cdfs_obj, len_obj, off_obj, &t) < 0) {
        goto done;
    }
    have_t = 1;
    if (get_ints(out_obj, "out", 1, 1, &out) < 0) {
        goto done;
    }
    have_out = 1;
    if (out.itemsize != 8 || out.n != idx.n) {
        PyErr_SetString(PyExc_ValueError, "out must be an int64 buffer with one element per index");
        goto done;
    }
    if (check_indexes(&idx, t.cdfs.rows) < 0) {
        goto done;
    }
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = decode_loop((const unsigned char *)data.buf, n_words, &x, &p, &idx, &t, (int64_t *)out.view.buf);
    Py_END_ALLOW_THREADS
    switch (status) {
    case DEC_OK:
        result = Py_BuildValue("(Kn)", (unsigned long long)x, p);
        break;
    case DEC_ENDS:
        PyErr_SetString(error, MSG_ENDS);
        break;
    case DEC_ENDS_ESCAPE:
        PyErr_SetString(error, MSG_ENDS_ESCAPE);
        break;
    case DEC_WIDE_ESCAPE:
        PyErr_SetString(error, MSG_WIDE_ESCAPE);
        break;
    case DEC_TABLES:
        PyErr_SetString(PyExc_ValueError, MSG_TABLES);
        break;
    default:
        PyErr_SetString(PyExc_ValueError, MSG_OVERFLOW);
        break;
    }
done:
    if (have_out) {
        release(&out);
    }
    if (have_t) {
        release_tables(&t);
    }
    if (have_idx) {
        release(&idx);
    }
    PyBuffer_Release(&data);
    return result;
}

PyDoc_STRVAR(widest_doc,
"widest_slot(cdfs, cdf_lengths) -> int\n\n"
"The widest slot (difference of neighbouring entries) within the rows' cdf_lengths, 0 when there is none;\n"
"what rans.max_symbols bounds a stream's symbol count with.");

static PyObject *rans_widest_slot(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *cdfs_obj, *len_obj;
    if (!PyArg_ParseTuple(args, "OO:widest_slot", &cdfs_obj, &len_obj)) {
        return NULL;
    }
    IntBuf cdfs, lengths;
    if (get_ints(cdfs_obj, "cdfs", 2, 0, &cdfs) < 0) {
        return NULL;
    }
    if (get_ints(len_obj, "cdf_lengths", 1, 0, &lengths) < 0) {
        release(&cdfs);
        return NULL;
    }
    if (lengths.n != cdfs.rows) {
        release(&cdfs);
        release(&lengths);
        PyErr_SetString(PyExc_ValueError, "cdfs must be 2-D with one row per cdf_lengths entry");
        return NULL;
    }
    int64_t widest = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t k = 0; k < cdfs.rows; k++) {
        int64_t n = rd(&lengths, k);
        if (n > cdfs.cols) {
            n = cdfs.cols;
        }
        for (Py_ssize_t j = 0; j + 1 < n; j++) {
            int64_t a = rd(&cdfs, k * cdfs.cols + j), b = rd(&cdfs, k * cdfs.cols + j + 1);
            int64_t d = (int64_t)((uint64_t)b - (uint64_t)a);
            if (d > widest) {
                widest = d;
            }
        }
    }
    Py_END_ALLOW_THREADS
    release(&cdfs);
    release(&lengths);
    return PyLong_FromLongLong(widest);
}

static PyMethodDef methods[] = {
    {"encode", rans_encode, METH_VARARGS, encode_doc},
    {"decode", rans_decode, METH_VARARGS, decode_doc},
    {"widest_slot", rans_widest_slot, METH_VARARGS, widest_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_rans",
    "Native rANS encoder and decoder loops of facelink.shared.rans (byte-identical to its pure Python coder).",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__rans(void) {
    return PyModule_Create(&module);
}
