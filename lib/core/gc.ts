/**
 * A full garbage collection on request, for the moments a process knows it has just dropped a lot (a node
 * that assembled a stage's weights from hundreds of broker messages): V8 otherwise collects external memory
 * lazily, and the resident set peaks with garbage that is no longer used. Node's `gc` is exposed at run time.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

let gc: (() => void) | null | undefined;

export function collectGarbage(): void {
  if (gc === undefined) {
    try {
      setFlagsFromString('--expose_gc');
      gc = runInNewContext('gc') as () => void;
    } catch {
      gc = null;
    }
  }
  gc?.();
}
