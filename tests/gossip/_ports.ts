/**
 * Free loopback ports for the gossip tests.
 *
 * @module
 */

/** A port free for both UDP and TCP on 127.0.0.1 right now. */
export function freePort(): number {
  for (;;) {
    const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (l.addr as Deno.NetAddr).port;
    l.close();
    // HTTP port P and gossip port P + 1000 must both be free.
    if (port + 1000 > 65535) continue;
    try {
      Deno.listen({ hostname: "127.0.0.1", port: port + 1000 }).close();
      return port;
    } catch {
      // taken: try another
    }
  }
}
