/*
 * Generate G.711 reference tables from spandsp for tests/g711_bitexact.rs.
 *
 * spandsp (Steve Underwood, LGPL-2.1; Debian package libspandsp-dev) implements
 * G.711 as static inline functions in <spandsp/g711.h>: linear_to_ulaw,
 * linear_to_alaw, ulaw_to_linear, alaw_to_linear. It shares no code with
 * media-core (src/codec/audio/g711.rs) nor with Sun's g711.c / Python audioop.
 * Build and run with scripts/gen_g711_spandsp.sh, or by hand:
 *
 *     cc -O2 -Wall -o gen_g711_spandsp scripts/gen_g711_spandsp.c -lspandsp
 *     ./gen_g711_spandsp tests/data/g711
 *
 * Outputs (raw, no header, little-endian):
 *   spandsp_ulaw_encode.bin  65536 bytes: linear_to_ulaw(x), x = -32768..=32767 in order
 *   spandsp_alaw_encode.bin  65536 bytes: linear_to_alaw(x), same order
 *   spandsp_ulaw_decode.bin    512 bytes: ulaw_to_linear(c), c = 0x00..=0xFF, s16le
 *   spandsp_alaw_decode.bin    512 bytes: alaw_to_linear(c), same order, s16le
 *
 * The tables come from the per-sample functions, which are static inline in
 * <spandsp/g711.h>: exactly what an application including <spandsp.h> compiles
 * in. As a cross-check the program also runs the library's frame API
 * (g711_init/g711_encode/g711_decode in libspandsp) over the same inputs and
 * fails if it disagrees with the inline functions anywhere. (The umbrella
 * header pulls in <tiffio.h>, which libspandsp-dev depends on.)
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <spandsp.h>

static int write_file(const char *dir, const char *name, const uint8_t *data, size_t len)
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

/* Runs libspandsp's frame API (g711_encode/g711_decode) over the same inputs
   and compares with the tables built from the inline functions. */
static int check_frame_api(int mode, const char *law, const uint8_t enc[65536], const uint8_t dec[512])
{
    static int16_t pcm[65536];
    static uint8_t codes[256];
    static uint8_t frame_enc[65536];
    static int16_t frame_dec[256];
    g711_state_t *s;
    int i;
    int bad;

    for (i = 0; i < 65536; i++)
        pcm[i] = (int16_t) (i - 32768);
    for (i = 0; i < 256; i++)
        codes[i] = (uint8_t) i;
    if ((s = g711_init(NULL, mode)) == NULL)
    {
        fprintf(stderr, "g711_init(%s) failed\n", law);
        return -1;
    }
    bad = (g711_encode(s, frame_enc, pcm, 65536) != 65536)
          ||
          (g711_decode(s, frame_dec, codes, 256) != 256);
    g711_free(s);
    if (bad)
    {
        fprintf(stderr, "g711_encode/g711_decode(%s): wrong count\n", law);
        return -1;
    }
    for (i = 0; i < 65536; i++)
    {
        if (frame_enc[i] != enc[i])
        {
            fprintf(stderr, "%s: g711_encode(%d) = 0x%02X, inline 0x%02X\n", law, i - 32768, frame_enc[i], enc[i]);
            return -1;
        }
    }
    for (i = 0; i < 256; i++)
    {
        if ((uint16_t) frame_dec[i] != (uint16_t) (dec[2*i] | (dec[2*i + 1] << 8)))
        {
            fprintf(stderr, "%s: g711_decode(0x%02X) = %d differs from inline\n", law, i, frame_dec[i]);
            return -1;
        }
    }
    printf("%s: libspandsp g711_encode/g711_decode agree with the inline functions\n", law);
    return 0;
}

/* s16 as little-endian bytes, independent of host byte order. */
static void put_s16le(uint8_t *out, int16_t v)
{
    uint16_t u = (uint16_t) v;

    out[0] = (uint8_t) (u & 0xFF);
    out[1] = (uint8_t) (u >> 8);
}

int main(int argc, char *argv[])
{
    static uint8_t ulaw_enc[65536];
    static uint8_t alaw_enc[65536];
    static uint8_t ulaw_dec[512];
    static uint8_t alaw_dec[512];
    const char *dir = (argc > 1)  ?  argv[1]  :  "tests/data/g711";
    int32_t x;
    int c;

    for (x = -32768; x <= 32767; x++)
    {
        /* The API takes int; pass the value as an int16_t would arrive. */
        int16_t s = (int16_t) x;

        ulaw_enc[x + 32768] = linear_to_ulaw(s);
        alaw_enc[x + 32768] = linear_to_alaw(s);
    }
    for (c = 0; c < 256; c++)
    {
        put_s16le(&ulaw_dec[2*c], ulaw_to_linear((uint8_t) c));
        put_s16le(&alaw_dec[2*c], alaw_to_linear((uint8_t) c));
    }
    if (check_frame_api(G711_ULAW, "u-law", ulaw_enc, ulaw_dec)
        ||
        check_frame_api(G711_ALAW, "A-law", alaw_enc, alaw_dec))
    {
        return EXIT_FAILURE;
    }
    if (write_file(dir, "spandsp_ulaw_encode.bin", ulaw_enc, sizeof(ulaw_enc))
        ||
        write_file(dir, "spandsp_alaw_encode.bin", alaw_enc, sizeof(alaw_enc))
        ||
        write_file(dir, "spandsp_ulaw_decode.bin", ulaw_dec, sizeof(ulaw_dec))
        ||
        write_file(dir, "spandsp_alaw_decode.bin", alaw_dec, sizeof(alaw_dec)))
    {
        return EXIT_FAILURE;
    }
    return EXIT_SUCCESS;
}
