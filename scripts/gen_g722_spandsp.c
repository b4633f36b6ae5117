/*
 * Generate G.722 reference vectors for tests/g722_vectors.rs, and time spandsp's
 * G.722 for the comparison with benches/codecs.rs. Two builds of this one file:
 *
 * 1. Against spandsp (Steve Underwood, LGPL-2.1; Debian package libspandsp-dev),
 *    an independent C implementation of ITU-T G.722 that passes the ITU test
 *    sequences; media-core's src/codec/audio/g722.rs shares no code with it. It
 *    is used in its standard configuration: 16 kHz linear audio (no
 *    G722_SAMPLE_RATE_8000), one code octet per sample pair (no G722_PACKED).
 *
 *        cc -O2 -Wall -o gen_g722_spandsp scripts/gen_g722_spandsp.c -lspandsp -lm
 *        ./gen_g722_spandsp vectors SPEECH_16K_WAV OUT_DIR
 *        ./gen_g722_spandsp bench FRAME_WAV [SECONDS]
 *
 * 2. With -DG722_STL against the ITU-T G.191 Software Tool Library's G.722
 *    module (https://github.com/openitu/STL, src/g722 and src/basop), the ITU's
 *    reference implementation, for the overload cases where spandsp 0.0.6 and
 *    the STL differ (see tests/data/g722/README.txt):
 *
 *        cc -O2 -DG722_STL -I$STL/src/basop -I$STL/src/g722 -o gen_g722_stl \
 *           scripts/gen_g722_spandsp.c $STL/src/g722/funcg722.c $STL/src/g722/g722.c \
 *           $STL/src/basop/basop32.c $STL/src/basop/control.c \
 *           $STL/src/basop/count.c $STL/src/basop/enh1632.c -lm
 *        ./gen_g722_stl encode IN.wav|IN.pcm OUT.g722
 *        ./gen_g722_stl decode 64|56|48 IN.g722 OUT.pcm
 *        ./gen_g722_stl diff LABEL REFERENCE.pcm OTHER.pcm
 *
 *    "diff" prints "LABEL INDEX OTHER REFERENCE" for every sample that differs.
 *    scripts/gen_g722_vectors.sh --stl STL_DIR does all of this.
 *
 * "vectors" (spandsp) writes, into OUT_DIR (raw, no header, s16le for audio):
 *   speech.wav              the first 4 s of SPEECH_16K_WAV (16 kHz mono s16)
 *   sweep.pcm               0.5 s linear chirp 50 Hz -> 7950 Hz at -6 dBFS
 *   noise.pcm               0.5 s white noise uniform over the whole i16 range
 *                           (xorshift32, seed 0x2545F491)
 *   square.pcm              0.5 s full-scale (+32767/-32768) 1 kHz square wave
 *   silence.pcm             0.25 s of zeros
 *   random.g722             4000 code octets from xorshift32 (seed 0x12345678):
 *                           garbage a decoder must accept
 * and for every input NAME (speech, sweep, noise, square, silence):
 *   NAME.g722               g722_encode at 64 kbit/s: one octet per sample pair
 *   NAME.dec64.pcm          g722_decode of NAME.g722 at 64 kbit/s
 *   NAME.dec56.pcm          the same octets decoded at 56 kbit/s
 *   NAME.dec48.pcm          the same octets decoded at 48 kbit/s
 * and random.dec64.pcm, random.dec56.pcm, random.dec48.pcm likewise.
 *
 * 56/48 kbit/s: G.722 always transmits the full 8-bit octet (I_H1 I_H2 I_L1..
 * I_L6); in the 56 and 48 kbit/s modes the last one or two bits carry auxiliary
 * data and the decoder ignores them. spandsp's unpacked decoder at those rates
 * takes the 7- or 6-bit code right-aligned in each byte, so it is fed octet >> 1
 * and octet >> 2: the standard's 56/48 kbit/s decoding of the 64 kbit/s octets.
 * (The STL's decoder takes the octet and the mode, as media-core's does.)
 *
 * Encoding and decoding run in 20 ms frames (320 samples, 160 octets); both
 * implementations keep their state across calls, and the spandsp build checks
 * that one whole-buffer call gives the same bytes.
 *
 * "bench" times spandsp's g722_encode and g722_decode (64 kbit/s) on 20 ms
 * frames of FRAME_WAV two ways: the same frame (samples 16000..16319, the frame
 * benches/codecs.rs uses) over and over, and every frame of the file in turn. It
 * prints the median of 15 runs of about SECONDS/60 s each, in µs per frame.
 */
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if !defined(G722_STL)
#include <spandsp.h>
#include <spandsp/version.h>
#else
#include "g722.h"
#endif

#define RATE 16000
#define FRAME 320
#define SPEECH_SAMPLES (4 * RATE)
#define BENCH_FRAME_START 16000

static void put_le16(uint8_t *p, int v)
{
    p[0] = (uint8_t) (v & 0xFF);
    p[1] = (uint8_t) ((v >> 8) & 0xFF);
}

/* Reads a 16-bit mono PCM WAV (any chunk layout) into a malloc'd buffer. */
static int16_t *read_wav(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    uint8_t hdr[12];
    uint8_t ck[8];
    uint8_t fmt[16];
    int have_fmt = 0;

    if (f == NULL)
    {
        perror(path);
        return NULL;
    }
    if (fread(hdr, 1, 12, f) != 12 || memcmp(hdr, "RIFF", 4) != 0 || memcmp(hdr + 8, "WAVE", 4) != 0)
    {
        fprintf(stderr, "%s: not a RIFF/WAVE file\n", path);
        fclose(f);
        return NULL;
    }
    while (fread(ck, 1, 8, f) == 8)
    {
        uint32_t len = ck[4] | (ck[5] << 8) | (ck[6] << 16) | ((uint32_t) ck[7] << 24);

        if (memcmp(ck, "fmt ", 4) == 0 && len >= 16)
        {
            if (fread(fmt, 1, 16, f) != 16)
                break;
            fseek(f, (long) (len - 16 + (len & 1)), SEEK_CUR);
            /* PCM, mono, 16 kHz, 16 bits */
            if ((fmt[0] | (fmt[1] << 8)) != 1 || (fmt[2] | (fmt[3] << 8)) != 1
                || (fmt[4] | (fmt[5] << 8) | (fmt[6] << 16)) != RATE || (fmt[14] | (fmt[15] << 8)) != 16)
            {
                fprintf(stderr, "%s: need 16-bit mono PCM at 16 kHz\n", path);
                fclose(f);
                return NULL;
            }
            have_fmt = 1;
        }
        else if (memcmp(ck, "data", 4) == 0 && have_fmt)
        {
            uint8_t *raw = malloc(len + 1);
            int16_t *x;
            size_t i;

            *n = len / 2;
            x = malloc(*n * sizeof(int16_t) + 1);
            if (raw == NULL || x == NULL || fread(raw, 1, len, f) != len)
            {
                fprintf(stderr, "%s: short data chunk\n", path);
                free(raw);
                free(x);
                fclose(f);
                return NULL;
            }
            for (i = 0; i < *n; i++)
                x[i] = (int16_t) (raw[2 * i] | (raw[2 * i + 1] << 8));
            free(raw);
            fclose(f);
            return x;
        }
        else
        {
            fseek(f, (long) (len + (len & 1)), SEEK_CUR);
        }
    }
    fprintf(stderr, "%s: no data chunk\n", path);
    fclose(f);
    return NULL;
}

#if !defined(G722_STL)

static uint32_t xorshift32(uint32_t *state)
{
    uint32_t x = *state;

    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *state = x;
    return x;
}

static int write_file(const char *dir, const char *name, const void *data, size_t len)
{
    char path[4096];
    FILE *f;

    if (snprintf(path, sizeof(path), "%s/%s", dir, name) >= (int) sizeof(path))
    {
        fprintf(stderr, "path too long: %s/%s\n", dir, name);
        return -1;
    }
    if ((f = fopen(path, "wb")) == NULL)
    {
        perror(path);
        return -1;
    }
    if (fwrite(data, 1, len, f) != len || fclose(f) != 0)
    {
        perror(path);
        return -1;
    }
    printf("wrote %s %zu bytes\n", path, len);
    return 0;
}

static void put_le32(uint8_t *p, uint32_t v)
{
    put_le16(p, (int) (v & 0xFFFF));
    put_le16(p + 2, (int) (v >> 16));
}

/* Serialises samples as s16le (the host may be either endian). */
static uint8_t *to_le(const int16_t *x, size_t n)
{
    uint8_t *b = malloc(2 * n + 1);
    size_t i;

    if (b == NULL)
        return NULL;
    for (i = 0; i < n; i++)
        put_le16(b + 2 * i, x[i]);
    return b;
}

static int write_pcm(const char *dir, const char *name, const int16_t *x, size_t n)
{
    uint8_t *b = to_le(x, n);
    int rc;

    if (b == NULL)
        return -1;
    rc = write_file(dir, name, b, 2 * n);
    free(b);
    return rc;
}

static int write_wav(const char *dir, const char *name, const int16_t *x, size_t n)
{
    uint8_t *b = malloc(44 + 2 * n);
    size_t i;
    int rc;

    if (b == NULL)
        return -1;
    memcpy(b, "RIFF", 4);
    put_le32(b + 4, (uint32_t) (36 + 2 * n));
    memcpy(b + 8, "WAVEfmt ", 8);
    put_le32(b + 16, 16);
    put_le16(b + 20, 1);               /* PCM */
    put_le16(b + 22, 1);               /* mono */
    put_le32(b + 24, RATE);
    put_le32(b + 28, 2 * RATE);        /* byte rate */
    put_le16(b + 32, 2);               /* block align */
    put_le16(b + 34, 16);
    memcpy(b + 36, "data", 4);
    put_le32(b + 40, (uint32_t) (2 * n));
    for (i = 0; i < n; i++)
        put_le16(b + 44 + 2 * i, x[i]);
    rc = write_file(dir, name, b, 44 + 2 * n);
    free(b);
    return rc;
}

/* Encodes at 64 kbit/s in 20 ms frames; checks one whole-buffer call agrees. */
static int encode64(const int16_t *x, size_t n, uint8_t *codes)
{
    g722_encode_state_t *enc = g722_encode_init(NULL, 64000, 0);
    g722_encode_state_t *whole = g722_encode_init(NULL, 64000, 0);
    uint8_t *check = malloc(n / 2 + 1);
    size_t done = 0;
    size_t i;
    int bad;

    if (enc == NULL || whole == NULL || check == NULL)
        return -1;
    for (i = 0; i < n; i += FRAME)
    {
        int len = (int) (n - i < FRAME ? n - i : FRAME);

        done += (size_t) g722_encode(enc, codes + done, x + i, len);
    }
    bad = done != n / 2
          || (size_t) g722_encode(whole, check, x, (int) n) != n / 2
          || memcmp(check, codes, n / 2) != 0;
    g722_encode_free(enc);
    g722_encode_free(whole);
    free(check);
    if (bad)
        fprintf(stderr, "encode: frame-by-frame and whole-buffer results differ\n");
    return bad ? -1 : 0;
}

/* Decodes 64 kbit/s octets at RATE_BPS; at 56/48 kbit/s the octet's one or two
   least significant (auxiliary data) bits are dropped, see the header. */
static int decode(int rate_bps, const uint8_t *octets, size_t n_octets, int16_t *out)
{
    g722_decode_state_t *dec = g722_decode_init(NULL, rate_bps, 0);
    g722_decode_state_t *whole = g722_decode_init(NULL, rate_bps, 0);
    int shift = rate_bps == 64000 ? 0 : rate_bps == 56000 ? 1 : 2;
    uint8_t *codes = malloc(n_octets + 1);
    int16_t *check = malloc(2 * n_octets * sizeof(int16_t) + 1);
    size_t done = 0;
    size_t i;
    int bad;

    if (dec == NULL || whole == NULL || codes == NULL || check == NULL)
        return -1;
    for (i = 0; i < n_octets; i++)
        codes[i] = (uint8_t) (octets[i] >> shift);
    for (i = 0; i < n_octets; i += FRAME / 2)
    {
        int len = (int) (n_octets - i < FRAME / 2 ? n_octets - i : FRAME / 2);

        done += (size_t) g722_decode(dec, out + done, codes + i, len);
    }
    bad = done != 2 * n_octets
          || (size_t) g722_decode(whole, check, codes, (int) n_octets) != 2 * n_octets
          || memcmp(check, out, 2 * n_octets * sizeof(int16_t)) != 0;
    g722_decode_free(dec);
    g722_decode_free(whole);
    free(codes);
    free(check);
    if (bad)
        fprintf(stderr, "decode %d: frame-by-frame and whole-buffer results differ\n", rate_bps);
    return bad ? -1 : 0;
}

static int write_decodes(const char *dir, const char *name, const uint8_t *octets, size_t n_octets)
{
    static const int rates[3] = {64000, 56000, 48000};
    int16_t *out = malloc(2 * n_octets * sizeof(int16_t) + 1);
    char file[256];
    int k;

    if (out == NULL)
        return -1;
    for (k = 0; k < 3; k++)
    {
        snprintf(file, sizeof(file), "%s.dec%d.pcm", name, rates[k] / 1000);
        if (decode(rates[k], octets, n_octets, out) != 0 || write_pcm(dir, file, out, 2 * n_octets) != 0)
        {
            free(out);
            return -1;
        }
    }
    free(out);
    return 0;
}

static int do_signal(const char *dir, const char *name, const int16_t *x, size_t n, int as_wav)
{
    uint8_t *codes = malloc(n / 2 + 1);
    char file[256];
    int rc;

    if (codes == NULL)
        return -1;
    snprintf(file, sizeof(file), "%s.%s", name, as_wav ? "wav" : "pcm");
    rc = (as_wav ? write_wav(dir, file, x, n) : write_pcm(dir, file, x, n));
    snprintf(file, sizeof(file), "%s.g722", name);
    rc = rc || encode64(x, n, codes) || write_file(dir, file, codes, n / 2)
         || write_decodes(dir, name, codes, n / 2);
    free(codes);
    return rc ? -1 : 0;
}

static int vectors(const char *speech_path, const char *dir)
{
    enum { SHORT = RATE / 2, SILENCE = RATE / 4, RANDOM_OCTETS = 4000 };
    static int16_t sweep[SHORT], noise[SHORT], square[SHORT], silence[SILENCE];
    static uint8_t random_codes[RANDOM_OCTETS];
    size_t n_speech = 0;
    int16_t *speech = read_wav(speech_path, &n_speech);
    uint32_t seed;
    int i;
    int rc;

    if (speech == NULL)
        return -1;
    if (n_speech < SPEECH_SAMPLES)
    {
        fprintf(stderr, "%s: need at least %d samples\n", speech_path, SPEECH_SAMPLES);
        free(speech);
        return -1;
    }
    /* Linear chirp: phase = 2 pi (f0 t + (f1 - f0) t^2 / (2 T)). */
    for (i = 0; i < SHORT; i++)
    {
        double t = (double) i / RATE;
        double T = (double) SHORT / RATE;
        double phase = 2.0 * M_PI * (50.0 * t + (7950.0 - 50.0) * t * t / (2.0 * T));

        sweep[i] = (int16_t) lrint(16384.0 * sin(phase));
    }
    seed = 0x2545F491;
    for (i = 0; i < SHORT; i++)
        noise[i] = (int16_t) (xorshift32(&seed) >> 16);
    for (i = 0; i < SHORT; i++)
        square[i] = ((i / 8) & 1) ? -32768 : 32767;
    seed = 0x12345678;
    for (i = 0; i < RANDOM_OCTETS; i++)
        random_codes[i] = (uint8_t) (xorshift32(&seed) >> 24);

    rc = do_signal(dir, "speech", speech, SPEECH_SAMPLES, 1)
         || do_signal(dir, "sweep", sweep, SHORT, 0)
         || do_signal(dir, "noise", noise, SHORT, 0)
         || do_signal(dir, "square", square, SHORT, 0)
         || do_signal(dir, "silence", silence, SILENCE, 0)
         || write_file(dir, "random.g722", random_codes, RANDOM_OCTETS)
         || write_decodes(dir, "random", random_codes, RANDOM_OCTETS);
    free(speech);
    return rc ? -1 : 0;
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *) a;
    double y = *(const double *) b;

    return (x > y) - (x < y);
}

static volatile uint32_t sink;

/* Median over RUNS of the mean µs per frame; each run does ITERS frames.
   WHICH: 0 encode, 1 decode. STRIDE 0 repeats frame 0, else walks the file. */
static double time_codec(int which, const int16_t *pcm, const uint8_t *codes, size_t n_frames,
                         int stride, long iters)
{
    enum { RUNS = 15 };
    double per_frame[RUNS];
    g722_encode_state_t *enc = g722_encode_init(NULL, 64000, 0);
    g722_decode_state_t *dec = g722_decode_init(NULL, 64000, 0);
    uint8_t out_codes[FRAME / 2];
    int16_t out_pcm[FRAME];
    int r;

    for (r = 0; r < RUNS; r++)
    {
        size_t f = 0;
        double t0 = now_s();
        long k;

        for (k = 0; k < iters; k++)
        {
            if (which == 0)
                sink += (uint32_t) g722_encode(enc, out_codes, pcm + f * FRAME, FRAME) + out_codes[k % (FRAME / 2)];
            else
                sink += (uint32_t) g722_decode(dec, out_pcm, codes + f * (FRAME / 2), FRAME / 2) + (uint16_t) out_pcm[k % FRAME];
            if (stride && ++f == n_frames)
                f = 0;
        }
        per_frame[r] = (now_s() - t0) / (double) iters * 1e6;
    }
    g722_encode_free(enc);
    g722_decode_free(dec);
    qsort(per_frame, RUNS, sizeof(double), cmp_double);
    return per_frame[RUNS / 2];
}

static int bench(const char *wav_path, double seconds)
{
    size_t n = 0;
    int16_t *pcm = read_wav(wav_path, &n);
    uint8_t *codes;
    size_t n_frames;
    long iters;
    double probe;

    if (pcm == NULL)
        return -1;
    if (n < BENCH_FRAME_START + FRAME)
    {
        fprintf(stderr, "%s: too short\n", wav_path);
        free(pcm);
        return -1;
    }
    n_frames = n / FRAME;
    codes = malloc(n_frames * (FRAME / 2) + 1);
    if (codes == NULL || encode64(pcm, n_frames * FRAME, codes) != 0)
    {
        free(pcm);
        free(codes);
        return -1;
    }
    /* Calibrate: about SECONDS / 60 per run (15 runs, 4 cases). */
    probe = time_codec(0, pcm + BENCH_FRAME_START, codes + BENCH_FRAME_START / 2, 1, 0, 2000);
    iters = (long) (seconds / 15.0 / 4.0 / (probe * 1e-6));
    if (iters < 1000)
        iters = 1000;
    printf("spandsp %s G.722 64 kbit/s, %ld frames of 320 samples per run, median of 15 runs\n",
           SPANDSP_RELEASE_DATETIME_STRING, iters);
    printf("encode_20ms (same frame)   %.3f us\n",
           time_codec(0, pcm + BENCH_FRAME_START, NULL, 1, 0, iters));
    printf("decode_20ms (same frame)   %.3f us\n",
           time_codec(1, NULL, codes + BENCH_FRAME_START / 2, 1, 0, iters));
    printf("encode_20ms (all %zu frames) %.3f us\n", n_frames, time_codec(0, pcm, NULL, n_frames, 1, iters));
    printf("decode_20ms (all %zu frames) %.3f us\n", n_frames, time_codec(1, NULL, codes, n_frames, 1, iters));
    free(pcm);
    free(codes);
    return 0;
}

int main(int argc, char *argv[])
{
    if (argc == 4 && strcmp(argv[1], "vectors") == 0)
        return vectors(argv[2], argv[3]) == 0 ? 0 : 1;
    if ((argc == 3 || argc == 4) && strcmp(argv[1], "bench") == 0)
        return bench(argv[2], argc == 4 ? atof(argv[3]) : 10.0) == 0 ? 0 : 1;
    fprintf(stderr, "usage: %s vectors SPEECH_16K_WAV OUT_DIR\n       %s bench FRAME_WAV [SECONDS]\n",
            argv[0], argv[0]);
    return 2;
}

#else /* G722_STL: the ITU-T G.191 STL build */

/* Reads raw s16le samples, or a WAV file's samples if the name ends in .wav. */
static int16_t *read_samples(const char *path, size_t *n)
{
    size_t len = strlen(path);
    FILE *f;
    long size;
    uint8_t *raw;
    int16_t *x;
    size_t i;

    if (len > 4 && strcmp(path + len - 4, ".wav") == 0)
        return read_wav(path, n);
    if ((f = fopen(path, "rb")) == NULL || fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0)
    {
        perror(path);
        return NULL;
    }
    rewind(f);
    *n = (size_t) size / 2;
    raw = malloc(2 * *n + 1);
    x = malloc(*n * sizeof(int16_t) + 1);
    if (raw == NULL || x == NULL || fread(raw, 1, 2 * *n, f) != 2 * *n)
    {
        perror(path);
        fclose(f);
        free(raw);
        free(x);
        return NULL;
    }
    fclose(f);
    for (i = 0; i < *n; i++)
        x[i] = (int16_t) (raw[2 * i] | (raw[2 * i + 1] << 8));
    free(raw);
    return x;
}

static uint8_t *read_octets(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    long size;
    uint8_t *b;

    if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0)
    {
        perror(path);
        return NULL;
    }
    rewind(f);
    *n = (size_t) size;
    b = malloc(*n + 1);
    if (b == NULL || fread(b, 1, *n, f) != *n)
    {
        perror(path);
        fclose(f);
        free(b);
        return NULL;
    }
    fclose(f);
    return b;
}

static int write_path(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");

    if (f == NULL || fwrite(data, 1, len, f) != len || fclose(f) != 0)
    {
        perror(path);
        return -1;
    }
    return 0;
}

/* The STL state must start zeroed: its reset functions leave a few fields as
   they find them (g722demo uses static, hence zeroed, states). */
static g722_state stl_state;

static int stl_encode(const char *in, const char *out)
{
    size_t n = 0;
    int16_t *x = read_samples(in, &n);
    short frame[FRAME];
    short codes[FRAME / 2];
    uint8_t *octets;
    size_t i;
    size_t k;
    int rc;

    if (x == NULL || (octets = malloc(n / 2 + 1)) == NULL)
        return -1;
    memset(&stl_state, 0, sizeof(stl_state));
    g722_reset_encoder(&stl_state);
    for (i = 0; i + 1 < n; i += FRAME)
    {
        size_t len = n - i < FRAME ? (n - i) & ~(size_t) 1 : FRAME;

        for (k = 0; k < len; k++)
            frame[k] = x[i + k];
        g722_encode(frame, codes, (Word32) len, &stl_state);
        for (k = 0; k < len / 2; k++)
            octets[i / 2 + k] = (uint8_t) codes[k];
    }
    rc = write_path(out, octets, n / 2);
    free(x);
    free(octets);
    return rc;
}

static int stl_decode(int rate_kbps, const char *in, const char *out)
{
    size_t n = 0;
    uint8_t *octets = read_octets(in, &n);
    short codes[FRAME / 2];
    short frame[FRAME];
    uint8_t *pcm;
    short mode = rate_kbps == 64 ? 1 : rate_kbps == 56 ? 2 : rate_kbps == 48 ? 3 : 0;
    size_t i;
    size_t k;
    int rc;

    if (octets == NULL || mode == 0 || (pcm = malloc(4 * n + 1)) == NULL)
        return -1;
    memset(&stl_state, 0, sizeof(stl_state));
    g722_reset_decoder(&stl_state);
    for (i = 0; i < n; i += FRAME / 2)
    {
        size_t len = n - i < FRAME / 2 ? n - i : FRAME / 2;

        for (k = 0; k < len; k++)
            codes[k] = octets[i + k];
        g722_decode(codes, frame, mode, (short) len, &stl_state);
        for (k = 0; k < 2 * len; k++)
            put_le16(pcm + 4 * i + 2 * k, frame[k]);
    }
    rc = write_path(out, pcm, 4 * n);
    free(octets);
    free(pcm);
    return rc;
}

static int diff(const char *label, const char *reference, const char *other)
{
    size_t n_ref = 0;
    size_t n_other = 0;
    int16_t *ref = read_samples(reference, &n_ref);
    int16_t *oth = read_samples(other, &n_other);
    size_t i;

    if (ref == NULL || oth == NULL || n_ref != n_other)
    {
        fprintf(stderr, "diff %s: unreadable or different lengths\n", label);
        return -1;
    }
    for (i = 0; i < n_ref; i++)
    {
        if (ref[i] != oth[i])
            printf("%s %zu %d %d\n", label, i, oth[i], ref[i]);
    }
    free(ref);
    free(oth);
    return 0;
}

int main(int argc, char *argv[])
{
    if (argc == 4 && strcmp(argv[1], "encode") == 0)
        return stl_encode(argv[2], argv[3]) == 0 ? 0 : 1;
    if (argc == 5 && strcmp(argv[1], "decode") == 0)
        return stl_decode(atoi(argv[2]), argv[3], argv[4]) == 0 ? 0 : 1;
    if (argc == 5 && strcmp(argv[1], "diff") == 0)
        return diff(argv[2], argv[3], argv[4]) == 0 ? 0 : 1;
    fprintf(stderr, "usage: %s encode IN.wav|IN.pcm OUT.g722\n"
                    "       %s decode 64|56|48 IN.g722 OUT.pcm\n"
                    "       %s diff LABEL REFERENCE.pcm OTHER.pcm\n",
            argv[0], argv[0], argv[0]);
    return 2;
}
#endif
