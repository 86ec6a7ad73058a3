;; FusedBatchNorm for the wasm engine, the engine's own arithmetic in SIMD (lib/model/batch-norm-kernel.ts).
;; tfjs-backend-wasm 4.22 computes, per element (its FusedBatchNorm.cc, as compiled):
;;   out = f32( f64(offset[c]) + f64( f32( f32(x - mean[c]) * scale[c] ) ) / nf[c] ),  nf[c] = f64( f32.sqrt(f32(variance[c] + eps)) )
;; one element at a time, with a double division. This does the same operations, in the same order and the same
;; precision, four channels at a time (two double lanes for the division and the addition), so its output is the
;; engine's bit for bit. The caller gives nf and the offsets as f64 arrays, and takes C % 4 == 0 only.
;; Build: wat2wasm --enable-all native/batch-norm.wat (scripts/build-batch-norm.mjs writes lib/model/batch-norm-wasm.ts).
(module
  (import "env" "memory" (memory 1))
  (func (export "batchNorm")
    (param $x i32) (param $mean i32) (param $scale i32) (param $nf i32) (param $offset i32) (param $out i32)
    (param $pixels i32) (param $C i32)
    (local $p i32) (local $c i32) (local $c4 i32) (local $c8 i32) (local $t v128) (local $lo v128) (local $hi v128)
    (block $done
      (loop $pixel
        (br_if $done (i32.ge_u (local.get $p) (local.get $pixels)))
        (local.set $c (i32.const 0))
        (block $row
          (loop $channel
            (br_if $row (i32.ge_u (local.get $c) (local.get $C)))
            (local.set $c4 (i32.shl (local.get $c) (i32.const 2)))
            (local.set $c8 (i32.shl (local.get $c) (i32.const 3)))
            ;; f32: (x - mean) * scale
            (local.set $t
              (f32x4.mul
                (f32x4.sub (v128.load (local.get $x)) (v128.load (i32.add (local.get $mean) (local.get $c4))))
                (v128.load (i32.add (local.get $scale) (local.get $c4)))))
            ;; f64: t / nf + offset, lanes 0-1 and 2-3
            (local.set $lo
              (f64x2.add
                (f64x2.div (f64x2.promote_low_f32x4 (local.get $t)) (v128.load (i32.add (local.get $nf) (local.get $c8))))
                (v128.load (i32.add (local.get $offset) (local.get $c8)))))
            (local.set $hi
              (f64x2.add
                (f64x2.div
                  (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $t) (local.get $t)))
                  (v128.load offset=16 (i32.add (local.get $nf) (local.get $c8))))
                (v128.load offset=16 (i32.add (local.get $offset) (local.get $c8)))))
            ;; back to f32, four lanes
            (v128.store (local.get $out)
              (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23
                (f32x4.demote_f64x2_zero (local.get $lo))
                (f32x4.demote_f64x2_zero (local.get $hi))))
            (local.set $x (i32.add (local.get $x) (i32.const 16)))
            (local.set $out (i32.add (local.get $out) (i32.const 16)))
            (local.set $c (i32.add (local.get $c) (i32.const 4)))
            (br $channel)))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $pixel)))))
