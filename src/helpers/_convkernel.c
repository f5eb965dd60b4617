/* helpers._convkernel: the Conv1D stack of the GIRAFFE network for CPU inference.
 *
 * One function, conv_stack(x, feat, layers[, baseline]): for every spectrum (row of x), the chain of
 * Conv1D (valid, stride 1) + bias + LeakyReLU + max-pooling layers, written to
 * the rows of feat in channel-major order. Each spectrum's activations stay in the CPU
 * caches (the convolutions are computed in tiles of positions, all output channels of a
 * chunk at once, with the accumulators in vector registers). The GIL is released while it
 * runs, so Python threads can share the rows between cores.
 *
 * Shapes and types are checked here; helpers.inference prepares the arguments and documents
 * them.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdlib.h>
#include <string.h>

typedef float vf __attribute__((vector_size(32)));  /* 8 floats: one AVX register */
typedef float vfu __attribute__((vector_size(32), aligned(4)));  /* the same, at any float address */
typedef int vi __attribute__((vector_size(32)));                 /* 8 lanes of comparison results */

/* even and odd lanes of two vectors (GCC before 12 has only __builtin_shuffle) */
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)
#define EVENS(a, b) __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14)
#define ODDS(a, b) __builtin_shufflevector(a, b, 1, 3, 5, 7, 9, 11, 13, 15)
#else
#define EVENS(a, b) __builtin_shuffle(a, b, (vi){0, 2, 4, 6, 8, 10, 12, 14})
#define ODDS(a, b) __builtin_shuffle(a, b, (vi){1, 3, 5, 7, 9, 11, 13, 15})
#endif

struct layer {
    const float *w; /* Keras layout (K, Cin, Cout) */
    const float *b; /* (Cout,) */
    int cout, cin, k, pool;
    float slope; /* LeakyReLU slope, >= 0 */
};

#if defined(__clang__)
#define UNROLL _Pragma("unroll 4")
#elif defined(__GNUC__)
#define UNROLL _Pragma("GCC unroll 4")
#else
#define UNROLL
#endif

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_AVX2_COPY 1
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
#define SUFFIX _avx2
#include "_conv_body.h"
#undef SUFFIX
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif

#define SUFFIX _base
#include "_conv_body.h"
#undef SUFFIX

static int use_avx2(void)
{
#ifdef HAVE_AVX2_COPY
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    return cached;
#else
    return 0;
#endif
}

static int get_f32(PyObject *obj, Py_buffer *view, int writable, int ndim, const char *what)
{
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0)
        return -1;
    if (view->itemsize != 4 || view->format == NULL || strcmp(view->format, "f") != 0 || view->ndim != ndim) {
        PyErr_Format(PyExc_ValueError, "%s must be a C-contiguous float32 array with %d dimensions", what, ndim);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static PyObject *conv_stack(PyObject *self, PyObject *args)
{
    PyObject *xo, *fo, *layers_o;
    int baseline = 0;  /* 1: the portable copy even where AVX2 is present (for the tests) */
    if (!PyArg_ParseTuple(args, "OOO!|p", &xo, &fo, &PyTuple_Type, &layers_o, &baseline))
        return NULL;
    const Py_ssize_t nl = PyTuple_GET_SIZE(layers_o);
    if (nl < 1 || nl > 16) {
        PyErr_SetString(PyExc_ValueError, "between 1 and 16 convolution layers are supported");
        return NULL;
    }
    Py_buffer xv, fv, wv[16], bv[16];
    struct layer layers[16];
    int got = 0;
    PyObject *result = NULL;
    float *mem = NULL;
    if (get_f32(xo, &xv, 0, 2, "x") < 0)
        return NULL;
    if (get_f32(fo, &fv, 1, 2, "feat") < 0) {
        PyBuffer_Release(&xv);
        return NULL;
    }
    const Py_ssize_t n = xv.shape[0];
    const Py_ssize_t l0 = xv.shape[1];
    Py_ssize_t len = l0, cin = 1, maxact = 0, maxwc = 0;
    for (; got < nl; got++) {
        PyObject *item = PyTuple_GET_ITEM(layers_o, got);
        PyObject *wo, *bo;
        int pool;
        float slope;
        if (!PyTuple_Check(item) || !PyArg_ParseTuple(item, "OOif", &wo, &bo, &pool, &slope)) {
            PyErr_Format(PyExc_ValueError, "layer %d must be a tuple (kernel, bias, pool, slope)", got);
            goto done;
        }
        if (!(slope >= 0.0f)) {
            PyErr_Format(PyExc_ValueError, "layer %d: the LeakyReLU slope must be >= 0 (pooling is applied first)", got);
            goto done;
        }
        if (get_f32(wo, &wv[got], 0, 3, "a kernel") < 0)
            goto done;
        if (get_f32(bo, &bv[got], 0, 1, "a bias") < 0) {
            PyBuffer_Release(&wv[got]);
            goto done;
        }
        const Py_ssize_t k = wv[got].shape[0], ci = wv[got].shape[1], co = wv[got].shape[2];
        if (ci != cin || bv[got].shape[0] != co || k < 1 || co < 1 || pool < 1 || len - k + 1 < pool) {
            PyErr_Format(PyExc_ValueError,
                         "layer %d: kernel (%zd, %zd, %zd) and bias (%zd,) do not fit %zd input channels of "
                         "length %zd with pool %d", got, k, ci, co, bv[got].shape[0], cin, len, pool);
            PyBuffer_Release(&wv[got]);
            PyBuffer_Release(&bv[got]);
            goto done;
        }
        layers[got] = (struct layer){(const float *)wv[got].buf, (const float *)bv[got].buf,
                                     (int)co, (int)ci, (int)k, pool, slope};
        len = (len - k + 1) / pool;
        cin = co;
        if (co * len > maxact)
            maxact = co * len;
        if (ci * k * 6 > maxwc)
            maxwc = ci * k * 6;
    }
    if (fv.shape[0] != n || fv.shape[1] != len * cin) {
        PyErr_Format(PyExc_ValueError, "feat must have shape (%zd, %zd), got (%zd, %zd)", n, len * cin,
                     fv.shape[0], fv.shape[1]);
        goto done;
    }
    /* tile_len: a multiple of every pool size and of 24 positions (the widest micro-kernel) */
    int tile_len = 480;
    for (int i = 0; i < nl; i++)
        while (tile_len % layers[i].pool)
            tile_len += 480;
    if (tile_len > 480 * 64) {
        PyErr_SetString(PyExc_ValueError, "pool sizes too large for the kernel's tiles");
        goto done;
    }
    mem = (float *)malloc(sizeof(float) * (size_t)(2 * maxact + 6 * (size_t)tile_len + 2 * maxwc + 64));
    if (mem == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    {
        float *buf0 = mem, *buf1 = mem + maxact, *tile = mem + 2 * maxact, *wc = tile + 6 * (size_t)tile_len;
        int *off = (int *)(wc + maxwc);  /* input offsets of the taps, cin * k of them */
        const int avx2 = use_avx2() && !baseline;
        Py_BEGIN_ALLOW_THREADS
#ifdef HAVE_AVX2_COPY
        if (avx2)
            conv_stack_avx2((const float *)xv.buf, n, (int)l0, layers, (int)nl, (float *)fv.buf,
                            fv.shape[1], buf0, buf1, tile, tile_len, wc, off);
        else
#endif
            conv_stack_base((const float *)xv.buf, n, (int)l0, layers, (int)nl, (float *)fv.buf,
                            fv.shape[1], buf0, buf1, tile, tile_len, wc, off);
        Py_END_ALLOW_THREADS
        (void)avx2;
    }
    Py_INCREF(Py_None);
    result = Py_None;
done:
    free(mem);
    for (int i = 0; i < got; i++) {
        PyBuffer_Release(&wv[i]);
        PyBuffer_Release(&bv[i]);
    }
    PyBuffer_Release(&xv);
    PyBuffer_Release(&fv);
    return result;
}

static PyObject *simd(PyObject *self, PyObject *noargs)
{
    return PyUnicode_FromString(use_avx2() ? "avx2+fma" : "baseline");
}

static PyMethodDef methods[] = {
    {"conv_stack", conv_stack, METH_VARARGS,
     "conv_stack(x, feat, layers, baseline=False): Conv1D + bias + LeakyReLU + max-pool stack; see helpers.inference."},
    {"simd", simd, METH_NOARGS, "The instruction set the kernel runs with on this CPU."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_convkernel",
                                    "Conv1D stack kernel for CPU inference (see helpers.inference).", -1, methods};

PyMODINIT_FUNC PyInit__convkernel(void) { return PyModule_Create(&module); }
