/*
 * ZFP round trip for the bench's codec table (DEFER's codec, compared with ours).
 * Reads an NHWC float32 activation (batch 1) on stdin, compresses it with ZFP as a
 * 3-D field (x = width, y = height, z = channels: the spatial axes, where values are
 * smooth), decompresses it, writes the decoded floats on stdout, the compressed
 * stream to `stream_out`, and {"bytes", "encodeMs", "decodeMs"} (best of `reps`)
 * on stderr.
 *   zfp-roundtrip precision|accuracy|rate <param> <H> <W> <C> <reps> <stream_out>
 * Build: cc -O2 -o zfp-roundtrip zfp-roundtrip.c -lzfp   (Debian: libzfp-dev)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zfp.h>

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

int main(int argc, char **argv) {
  if (argc != 8) {
    fprintf(stderr, "usage: %s precision|accuracy|rate <param> <H> <W> <C> <reps> <stream_out>\n", argv[0]);
    return 2;
  }
  const char *mode = argv[1];
  double param = atof(argv[2]);
  size_t h = strtoul(argv[3], 0, 10), w = strtoul(argv[4], 0, 10), c = strtoul(argv[5], 0, 10);
  int reps = atoi(argv[6]);
  size_t n = h * w * c;
  float *in = malloc(n * sizeof(float)), *out = malloc(n * sizeof(float));
  if (!in || !out || fread(in, sizeof(float), n, stdin) != n) {
    fprintf(stderr, "expected %zu float32 values on stdin\n", n);
    return 2;
  }
  zfp_field *field = zfp_field_3d(in, zfp_type_float, w, h, c);
  zfp_field_set_stride_3d(field, (ptrdiff_t)c, (ptrdiff_t)(w * c), 1);
  zfp_stream *zfp = zfp_stream_open(NULL);
  if (!strcmp(mode, "precision")) zfp_stream_set_precision(zfp, (unsigned)param);
  else if (!strcmp(mode, "accuracy")) zfp_stream_set_accuracy(zfp, param);
  else if (!strcmp(mode, "rate")) zfp_stream_set_rate(zfp, param, zfp_type_float, 3, zfp_false);
  else {
    fprintf(stderr, "unknown mode %s\n", mode);
    return 2;
  }
  size_t cap = zfp_stream_maximum_size(zfp, field);
  void *buf = malloc(cap);
  bitstream *bs = stream_open(buf, cap);
  zfp_stream_set_bit_stream(zfp, bs);
  double enc = 1e30, dec = 1e30;
  size_t bytes = 0;
  zfp_field *back = zfp_field_3d(out, zfp_type_float, w, h, c);
  zfp_field_set_stride_3d(back, (ptrdiff_t)c, (ptrdiff_t)(w * c), 1);
  for (int r = 0; r < reps; r++) {
    zfp_stream_rewind(zfp);
    double t0 = now_ms();
    bytes = zfp_compress(zfp, field);
    double t1 = now_ms();
    zfp_stream_rewind(zfp);
    if (!zfp_decompress(zfp, back)) {
      fprintf(stderr, "zfp_decompress failed\n");
      return 1;
    }
    double t2 = now_ms();
    if (t1 - t0 < enc) enc = t1 - t0;
    if (t2 - t1 < dec) dec = t2 - t1;
  }
  FILE *s = fopen(argv[7], "wb");
  if (!s || fwrite(buf, 1, bytes, s) != bytes) return 1;
  fclose(s);
  fwrite(out, sizeof(float), n, stdout);
  fprintf(stderr, "{\"bytes\":%zu,\"encodeMs\":%.4f,\"decodeMs\":%.4f}\n", bytes, enc, dec);
  return 0;
}
