/**
 * Counts picks not yet reported, per endpoint id.
 *
 * @module
 */

/** In-flight calls per endpoint, and their total. */
export class Inflight {
  // Boxed counts: one map lookup per change instead of a get and a set.
  #counts = new Map<string, { n: number }>();
  total = 0;

  get(id: string): number {
    return this.#counts.get(id)?.n ?? 0;
  }

  start(id: string): void {
    const slot = this.#counts.get(id);
    if (slot) slot.n++;
    else this.#counts.set(id, { n: 1 });
    this.total++;
  }

  /** Ends one call; a report without a pick (a health probe) changes nothing. */
  end(id: string): void {
    const slot = this.#counts.get(id);
    if (!slot || slot.n === 0) return;
    slot.n--;
    this.total--;
    // Endpoints that left are forgotten once idle, so churn stays bounded.
    if (slot.n === 0 && this.#counts.size > 1024) this.#counts.delete(id);
  }
}
