/* Body of the Conv1D stack kernel, included twice by _convkernel.c: once compiled for
 * AVX2 + FMA (x86-64), once for the baseline instruction set. SUFFIX names the copy.
 *
 * Layout: one spectrum at a time; activations are channel-major, act[c * length + t].
 * Keras weights are (K, Cin, Cout); they are repacked per output-channel chunk as
 * wc[(c * K + j) * CO + o] so the innermost loop reads CO consecutive scalars.
 */

#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)
#define FN(name) CAT(name, SUFFIX)

/* LeakyReLU (slope >= 0) on a vector, without branches. */
static inline __attribute__((always_inline)) vf FN(leaky)(vf a, float slope)
{
    const vi pos = a > 0;
    return (vf)((pos & (vi)a) | (~pos & (vi)(slope * a)));
}

static inline __attribute__((always_inline)) vf FN(vmax)(vf a, vf b)
{
    const vi gt = a > b;
    return (vf)((gt & (vi)a) | (~gt & (vi)b));
}

/* CO output channels x NB vectors of 8 consecutive positions, starting at position t. The
 * accumulators stay in registers (CO * NB <= 12, plus NB inputs and one weight: <= 16 vector
 * registers). The sum over input channels and taps is one flat loop over q = c * k + j, with
 * the input offsets c * lin + j from a table, unrolled by 4: about twice as fast on this
 * network's layers as two nested loops (bench/bench_cnn.py). MODE 1: no
 * pooling, LeakyReLU and store to dst; MODE 2: max-pool pairs, LeakyReLU, store to dst
 * (NB even); MODE 0: store the raw sums to the tile (pooled later). */
static inline __attribute__((always_inline)) void FN(micro)(
    const float *in, const int *off, int cin, int k, const float *wc, const float *bias,
    float *dst, int dstride, int pos, float slope, int t, const int CO, const int NB, const int MODE)
{
    vf acc[6][4];
    for (int o = 0; o < CO; o++)
        for (int v = 0; v < NB; v++)
            acc[o][v] = (vf){0} + bias[o];
    const float *base = in + t;
    const int n = cin * k;
    UNROLL
    for (int q = 0; q < n; q++) {
        const float *row = base + off[q];
        const float *w = wc + q * CO;
        const vf x0 = *(const vfu *)(row);
        const vf x1 = NB > 1 ? *(const vfu *)(row + 8) : x0;
        const vf x2 = NB > 2 ? *(const vfu *)(row + 16) : x0;
        const vf x3 = NB > 3 ? *(const vfu *)(row + 24) : x0;
        for (int o = 0; o < CO; o++) {
            const float s = w[o];
            acc[o][0] += s * x0;
            if (NB > 1) acc[o][1] += s * x1;
            if (NB > 2) acc[o][2] += s * x2;
            if (NB > 3) acc[o][3] += s * x3;
        }
    }
    for (int o = 0; o < CO; o++) {
        float *d = dst + (size_t)o * dstride + pos;
        if (MODE == 2) {
            for (int v = 0; v + 1 < NB; v += 2) {
                const vf ev = EVENS(acc[o][v], acc[o][v + 1]);
                const vf od = ODDS(acc[o][v], acc[o][v + 1]);
                *(vfu *)(d + 4 * v) = FN(leaky)(FN(vmax)(ev, od), slope);
            }
        } else {
            for (int v = 0; v < NB; v++)
                *(vfu *)(d + 8 * v) = MODE == 1 ? FN(leaky)(acc[o][v], slope) : acc[o][v];
        }
    }
}

/* one output of the layer before pooling, in plain C (the positions left over) */
static inline float FN(point)(const float *in, int lin, int cin, int k, const float *wc, int co, int o,
                              float bias, int t)
{
    float s = bias;
    for (int c = 0; c < cin; c++)
        for (int j = 0; j < k; j++)
            s += wc[(c * k + j) * co + o] * in[(size_t)c * lin + t + j];
    return s;
}

#define MICRO_CASE(co, nb, mode, step, dst, dstride, pos)                                     \
    case co:                                                                                  \
        for (; t + step <= tend; t += step)                                                   \
            FN(micro)(in, off, cin, k, wc, bias, dst, dstride, pos, slope, t, co, nb, mode);  \
        break;

/* One Conv1D layer (valid padding, stride 1) + bias + LeakyReLU + max-pooling (pool >= 1)
 * for one spectrum. out: cout x (lout / pool), channel-major. */
static void FN(conv_layer)(const float *in, int cin, int lin, const float *w, const float *b,
                           int cout, int k, int pool, float slope, float *out,
                           float *tile, int tile_len, float *wc, int *off)
{
    const int lout = lin - k + 1;
    const int lp = lout / pool;
    const int nchunk = (cout + 5) / 6;
    int o0 = 0;
    for (int ch = 0; ch < nchunk; ch++) {
        const int co = (cout - o0 + (nchunk - ch) - 1) / (nchunk - ch);  /* even split, <= 6 */
        for (int c = 0; c < cin; c++)
            for (int j = 0; j < k; j++)
                for (int o = 0; o < co; o++)
                    wc[(c * k + j) * co + o] = w[((size_t)j * cin + c) * cout + o0 + o];
        for (int c = 0; c < cin; c++)
            for (int j = 0; j < k; j++)
                off[c * k + j] = c * lin + j;
        const float *bias = b + o0;
        float *dst = out + (size_t)o0 * lp;
        int t = 0;
        const int tend = lp * pool;
        if (pool == 1) {
            switch (co) {
                MICRO_CASE(1, 3, 1, 24, dst, lp, t) MICRO_CASE(2, 3, 1, 24, dst, lp, t)
                MICRO_CASE(3, 3, 1, 24, dst, lp, t) MICRO_CASE(4, 3, 1, 24, dst, lp, t)
                MICRO_CASE(5, 2, 1, 16, dst, lp, t) MICRO_CASE(6, 2, 1, 16, dst, lp, t)
            }
        } else if (pool == 2) {
            switch (co) {
                MICRO_CASE(1, 4, 2, 32, dst, lp, t / 2) MICRO_CASE(2, 4, 2, 32, dst, lp, t / 2)
                MICRO_CASE(3, 2, 2, 16, dst, lp, t / 2) MICRO_CASE(4, 2, 2, 16, dst, lp, t / 2)
                MICRO_CASE(5, 2, 2, 16, dst, lp, t / 2) MICRO_CASE(6, 2, 2, 16, dst, lp, t / 2)
            }
        } else {
            /* other pool sizes: raw sums of a tile of positions, then pooled in plain C */
            for (int t0 = 0; t0 + tile_len <= tend; t0 += tile_len) {
                const int tstop = t0 + tile_len;
                for (t = t0; t < tstop;) {
                    const int tend = tstop;
                    switch (co) {
                        MICRO_CASE(1, 3, 0, 24, tile, tile_len, t - t0) MICRO_CASE(2, 3, 0, 24, tile, tile_len, t - t0)
                        MICRO_CASE(3, 3, 0, 24, tile, tile_len, t - t0) MICRO_CASE(4, 3, 0, 24, tile, tile_len, t - t0)
                        MICRO_CASE(5, 2, 0, 16, tile, tile_len, t - t0) MICRO_CASE(6, 2, 0, 16, tile, tile_len, t - t0)
                    }
                }
                for (int o = 0; o < co; o++) {
                    const float *src = tile + (size_t)o * tile_len;
                    float *d = dst + (size_t)o * lp + t0 / pool;
                    for (int u = 0; u < tile_len / pool; u++) {
                        float m = src[u * pool];
                        for (int q = 1; q < pool; q++)
                            m = src[u * pool + q] > m ? src[u * pool + q] : m;
                        d[u] = m > 0 ? m : slope * m;  /* LeakyReLU is monotonic: it commutes with the max */
                    }
                }
                t = tstop;
            }
        }
        /* the pooled outputs left over (t is a multiple of pool here), in plain C */
        for (int u = t / pool; u < lp; u++)
            for (int o = 0; o < co; o++) {
                float m = FN(point)(in, lin, cin, k, wc, co, o, bias[o], u * pool);
                for (int q = 1; q < pool; q++) {
                    const float v = FN(point)(in, lin, cin, k, wc, co, o, bias[o], u * pool + q);
                    m = v > m ? v : m;
                }
                dst[(size_t)o * lp + u] = m > 0 ? m : slope * m;
            }
        o0 += co;
    }
}

/* The whole convolution stack for n spectra; features in channel-major order. */
static void FN(conv_stack)(const float *x, Py_ssize_t n, int l0, const struct layer *layers,
                           int nlayers, float *feat, Py_ssize_t nfeat,
                           float *buf0, float *buf1, float *tile, int tile_len, float *wc, int *off)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        const float *in = x + (size_t)i * l0;
        int len = l0, cin = 1;
        for (int li = 0; li < nlayers; li++) {
            const struct layer *L = &layers[li];
            float *dst = (li == nlayers - 1) ? feat + (size_t)i * nfeat : ((li % 2) ? buf1 : buf0);
            FN(conv_layer)(in, cin, len, L->w, L->b, L->cout, L->k, L->pool, L->slope, dst,
                           tile, tile_len, wc, off);
            len = (len - L->k + 1) / L->pool;
            cin = L->cout;
            in = dst;
        }
    }
}

#undef MICRO_CASE
#undef FN
#undef CAT
#undef CAT2
