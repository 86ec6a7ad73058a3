/**
 * A small typed event emitter for discriminated unions: each event is an
 * object with a `type`; listeners subscribe to one type (and get that type's
 * fields, typed) or to all. `on` returns the function that unsubscribes.
 * A listener that throws is reported and does not stop the others.
 */
import { errorMessage } from './errors.js';
import { log } from './log.js';

type Listener<E> = (event: E) => void;

export class TypedEmitter<E extends { type: string }> {
  private readonly byType = new Map<string, Set<Listener<never>>>();
  private readonly any = new Set<Listener<E>>();

  on<T extends E['type']>(type: T, listener: Listener<Extract<E, { type: T }>>): () => void {
    const set = this.byType.get(type) ?? new Set<Listener<never>>();
    this.byType.set(type, set);
    set.add(listener as Listener<never>);
    return () => void set.delete(listener as Listener<never>);
  }

  onAny(listener: Listener<E>): () => void {
    this.any.add(listener);
    return () => void this.any.delete(listener);
  }

  emit(event: E): void {
    for (const l of [...(this.byType.get(event.type) ?? []), ...this.any] as Listener<E>[]) {
      try {
        l(event);
      } catch (err) {
        log.error(`a listener of '${event.type}' failed: ${errorMessage(err)}`);
      }
    }
  }
}
