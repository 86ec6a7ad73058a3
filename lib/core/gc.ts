/**
 * A full garbage collection on request, for the moments a process knows it has just dropped a lot (a node
 * that assembled a stage's weights from hundreds of broker messages): V8 otherwise collects external memory
 * lazily, and the resident set peaks with garbage that is no longer used. Node's `gc` is exposed at run time.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

let gc: ((opts?: { type: 'minor' | 'major' }) => void) | null | undefined;

/** A full collection, or a minor one (the young generation only: a fraction of a millisecond, and it frees the buffers of the last few frames). */
export function collectGarbage(kind: 'full' | 'minor' = 'full'): void {
  if (gc === undefined) {
    try {
      setFlagsFromString('--expose_gc');
      gc = runInNewContext('gc') as typeof gc;
    } catch {
      gc = null;
    }
  }
  if (kind === 'minor') gc?.({ type: 'minor' });
  else gc?.();
}
