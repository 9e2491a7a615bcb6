/**
 * Test helper: a Deno KV handle whose atomic commits are counted.
 *
 * @module
 */

/**
 * `kv` with its commits counted: every `atomic().commit()` through the
 * returned handle adds one to `commits()`. `before`, when given, is called
 * with each commit's number (1, 2, …) before it is made; what it throws
 * fails that commit (a disk that fails on the third commit, say).
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
  before?: (n: number) => void,
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
            before?.(n);
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
