/**
 * Free loopback ports for the gossip tests.
 *
 * @module
 */
import { freePortRange } from "../integration/_process.ts";

/** A port P with P (HTTP) and P + 1000 (gossip, UDP and TCP) free right now. */
export function freePort(): number {
  return freePortRange(1, { alsoAbove: 1000 });
}
