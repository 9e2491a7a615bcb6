/**
 * Counts picks not yet reported, per endpoint id.
 *
 * @module
 */

/** In-flight calls per endpoint, and their total. */
export class Inflight {
  #counts = new Map<string, number>();
  total = 0;

  get(id: string): number {
    return this.#counts.get(id) ?? 0;
  }

  start(id: string): void {
    this.#counts.set(id, (this.#counts.get(id) ?? 0) + 1);
    this.total++;
  }

  /** Ends one call; a report without a pick (a health probe) changes nothing. */
  end(id: string): void {
    const n = this.#counts.get(id);
    if (!n) return;
    if (n === 1) this.#counts.delete(id);
    else this.#counts.set(id, n - 1);
    this.total--;
  }
}
