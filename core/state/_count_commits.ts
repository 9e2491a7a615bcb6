/**
 * Test helper: a Deno KV handle whose atomic commits are counted.
 *
 * @module
 */

/**
 * `kv` with its commits counted: every `atomic().commit()` through the
 * returned handle adds one to `commits()`.
 *
 * @example Usage
 * ```ts ignore
 * const { kv: counted, commits } = countCommits(await Deno.openKv(":memory:"));
 * await counted.atomic().set(["a"], 1).commit();
 * commits(); // 1
 * ```
 */
export function countCommits(
  kv: Deno.Kv,
): { kv: Deno.Kv; commits: () => number } {
  let n = 0;
  const counted = new Proxy(kv, {
    get(target, prop) {
      if (prop === "atomic") {
        return () => {
          const op = target.atomic();
          const commit = op.commit.bind(op);
          op.commit = () => {
            n++;
            return commit();
          };
          return op;
        };
      }
      const v = Reflect.get(target, prop, target);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
  return { kv: counted, commits: () => n };
}
