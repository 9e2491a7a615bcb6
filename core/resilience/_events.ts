/**
 * A tiny synchronous event emitter shared by the resilience policies.
 *
 * @module
 */

/** Removes the listener it was returned for. */
export type Unsubscribe = () => void;

/** Listeners by event name; `emit` calls them in order, synchronously. */
export class Emitter<E extends Record<string, unknown>> {
  #listeners = new Map<keyof E, Set<(event: never) => void>>();

  on<K extends keyof E>(name: K, listener: (event: E[K]) => void): Unsubscribe {
    let set = this.#listeners.get(name);
    if (!set) this.#listeners.set(name, set = new Set());
    set.add(listener as (event: never) => void);
    return () => set.delete(listener as (event: never) => void);
  }

  emit<K extends keyof E>(name: K, event: E[K]): void {
    const set = this.#listeners.get(name);
    if (!set) return;
    for (const listener of set) {
      // A throwing listener must not break the state machine that emits.
      try {
        (listener as (event: E[K]) => void)(event);
      } catch (err) {
        reportError(err);
      }
    }
  }
}
