/*
 * ZFP (DEFER's activation codec) for Node.js, through Node-API: an optional
 * native addon that the tensor codec loads when it was built (npm run build
 * builds it where libzfp-dev and a C compiler are present; see
 * scripts/build-zfp.mjs). Fixed-precision mode on a 3-D field per frame:
 * x = width, y = height, z = channels of an NHWC activation (the spatial axes,
 * where values are smooth), or a 1-D field for other shapes.
 *
 *   compress(data: Float32Array, nx, ny, nz, bits) -> Uint8Array   (the ZFP stream)
 *   decompress(stream: Uint8Array, nx, ny, nz, bits, out: Float32Array) -> bytes read
 *
 * nx, ny, nz: the field's extents with x fastest in memory order reversed as
 * described above; ny = nz = 0 for a 1-D field of nx values.
 */
#include <node_api.h>
#include <stdlib.h>
#include <string.h>
#include <zfp.h>

#define CHECK(call)                                                     \
  do {                                                                  \
    if ((call) != napi_ok) {                                            \
      napi_throw_error(env, NULL, "zfp addon: Node-API call failed");  \
      return NULL;                                                      \
    }                                                                   \
  } while (0)

static zfp_field *make_field(float *data, uint32_t nx, uint32_t ny, uint32_t nz) {
  if (ny == 0 || nz == 0) return zfp_field_1d(data, zfp_type_float, nx);
  /* memory is [h][w][c]: x = w (stride c), y = h (stride w*c), z = c (stride 1) */
  zfp_field *f = zfp_field_3d(data, zfp_type_float, nx, ny, nz);
  zfp_field_set_stride_3d(f, (ptrdiff_t)nz, (ptrdiff_t)nx * nz, 1);
  return f;
}

/* The arguments both calls share: a typed array of `want` type at argv[a], then nx, ny, nz and bits. Its data
   and length, and the field's size, go to the out parameters; a JavaScript exception is thrown (and 0 returned)
   when they are not as described. */
static int field_args(napi_env env, napi_value *argv, size_t a, napi_typedarray_type want, const char *what, void **data, size_t *length,
                      uint32_t *dims, size_t *n) {
  napi_typedarray_type type;
  if (napi_get_typedarray_info(env, argv[a], &type, length, data, NULL, NULL) != napi_ok || type != want) {
    napi_throw_type_error(env, NULL, what);
    return 0;
  }
  for (int i = 0; i < 4; i++) {
    if (napi_get_value_uint32(env, argv[1 + i], &dims[i]) != napi_ok) {
      napi_throw_type_error(env, NULL, what);
      return 0;
    }
  }
  if (dims[3] < 1 || dims[3] > 32) {
    napi_throw_range_error(env, NULL, "bits must be 1..32");
    return 0;
  }
  *n = (dims[1] == 0 || dims[2] == 0) ? dims[0] : (size_t)dims[0] * dims[1] * dims[2];
  return 1;
}

static napi_value compress(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  void *data;
  size_t length, n;
  uint32_t d[4];
  if (argc != 5) {
    napi_throw_type_error(env, NULL, "compress(data, nx, ny, nz, bits)");
    return NULL;
  }
  if (!field_args(env, argv, 0, napi_float32_array, "compress: data must be a Float32Array, extents and bits integers", &data, &length, d, &n)) return NULL;
  if (n != length) {
    napi_throw_range_error(env, NULL, "compress: extents do not match the data's length");
    return NULL;
  }
  zfp_field *field = make_field((float *)data, d[0], d[1], d[2]);
  zfp_stream *zfp = zfp_stream_open(NULL);
  zfp_stream_set_precision(zfp, d[3]);
  size_t cap = zfp_stream_maximum_size(zfp, field);
  void *buf = malloc(cap);
  bitstream *bs = stream_open(buf, cap);
  zfp_stream_set_bit_stream(zfp, bs);
  zfp_stream_rewind(zfp);
  size_t size = zfp_compress(zfp, field);
  napi_value out = NULL;
  void *dst;
  if (size > 0 && napi_create_buffer_copy(env, size, buf, &dst, &out) != napi_ok) out = NULL;
  stream_close(bs);
  zfp_stream_close(zfp);
  zfp_field_free(field);
  free(buf);
  if (size == 0) napi_throw_error(env, NULL, "compress: zfp_compress failed");
  return out;
}

static napi_value decompress(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  void *sdata, *odata;
  size_t slen, olen, n;
  uint32_t d[4];
  if (argc != 6) {
    napi_throw_type_error(env, NULL, "decompress(stream, nx, ny, nz, bits, out)");
    return NULL;
  }
  if (!field_args(env, argv, 0, napi_uint8_array, "decompress: stream must be a Uint8Array, extents and bits integers", &sdata, &slen, d, &n)) return NULL;
  napi_typedarray_type otype;
  if (napi_get_typedarray_info(env, argv[5], &otype, &olen, &odata, NULL, NULL) != napi_ok || otype != napi_float32_array || n != olen) {
    napi_throw_range_error(env, NULL, "decompress: out must be a Float32Array of the extents' length");
    return NULL;
  }
  zfp_field *field = make_field((float *)odata, d[0], d[1], d[2]);
  zfp_stream *zfp = zfp_stream_open(NULL);
  zfp_stream_set_precision(zfp, d[3]);
  /* zfp does not bound its reads: a truncated or corrupt stream is copied into a buffer as large as the
     largest stream this field can have, so no read leaves it */
  size_t max = zfp_stream_maximum_size(zfp, field);
  size_t padded = (slen > max ? slen : max) + 64;
  void *copy = calloc(1, padded);
  memcpy(copy, sdata, slen);
  bitstream *bs = stream_open(copy, padded);
  zfp_stream_set_bit_stream(zfp, bs);
  zfp_stream_rewind(zfp);
  size_t used = zfp_decompress(zfp, field);
  stream_close(bs);
  zfp_stream_close(zfp);
  zfp_field_free(field);
  free(copy);
  if (used == 0 || used > slen + 8) {
    napi_throw_error(env, NULL, "decompress: the ZFP stream is corrupt or truncated");
    return NULL;
  }
  napi_value result;
  CHECK(napi_create_uint32(env, (uint32_t)used, &result));
  return result;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"compress", NULL, compress, NULL, NULL, NULL, napi_default, NULL},
      {"decompress", NULL, decompress, NULL, NULL, NULL, napi_default, NULL},
  };
  if (napi_define_properties(env, exports, 2, props) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
