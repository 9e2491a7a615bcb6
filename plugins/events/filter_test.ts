import assert from "node:assert/strict";
import {
  checkFilter,
  compileFilter,
  type Filter,
  FilterError,
  filterFromParam,
  formatFilter,
  parseFilter,
  type Scalar,
} from "./filter.ts";

/** Seeded PRNG (mulberry32), so a failing case replays. */
function prng(seed: number) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const PATHS = ["type", "node", "seq", "data.attempt", "data.name", "data.ok"];
const STRINGS = ["task.", "task.failed", "n1", "n2", 'a"b', "", "é\\x"];

function randomScalar(r: () => number): Scalar {
  const k = Math.floor(r() * 4);
  if (k === 0) return STRINGS[Math.floor(r() * STRINGS.length)];
  if (k === 1) return Math.floor(r() * 7) - 2 + (r() < 0.3 ? 0.5 : 0);
  if (k === 2) return r() < 0.5;
  return null;
}

function randomFilter(r: () => number, depth: number): Filter {
  const k = Math.floor(r() * (depth > 3 ? 2 : 5));
  const path = PATHS[Math.floor(r() * PATHS.length)];
  if (k === 0) {
    const ops = ["eq", "ne", "lt", "le", "gt", "ge", "prefix"] as const;
    const op = ops[Math.floor(r() * ops.length)];
    const value = op === "prefix"
      ? STRINGS[Math.floor(r() * STRINGS.length)]
      : randomScalar(r);
    return { path, op, value };
  }
  if (k === 1) {
    return {
      path,
      op: "in",
      values: Array.from(
        { length: 1 + Math.floor(r() * 3) },
        () => randomScalar(r),
      ),
    };
  }
  if (k === 2) return { not: randomFilter(r, depth + 1) };
  const parts = Array.from(
    { length: 2 + Math.floor(r() * 2) },
    () => randomFilter(r, depth + 1),
  );
  return k === 3 ? { and: parts } : { or: parts };
}

function randomEvent(r: () => number) {
  const pick = <T>(xs: T[]) => xs[Math.floor(r() * xs.length)];
  return {
    type: pick(["task.failed", "task.started", "agent.connected"]),
    node: pick(["n1", "n2", "n3"]),
    seq: Math.floor(r() * 5),
    data: r() < 0.2 ? null : {
      attempt: pick([0, 1, 2, 3, "2"]),
      name: pick(STRINGS),
      ok: pick([true, false, null]),
    },
  };
}

/** The meaning of a filter, written independently of compileFilter. */
function meaning(f: Filter, e: unknown): boolean {
  if ("all" in f) return true;
  if ("and" in f) return f.and.every((x) => meaning(x, e));
  if ("or" in f) return f.or.some((x) => meaning(x, e));
  if ("not" in f) return !meaning(f.not, e);
  let v: unknown = e;
  for (const seg of f.path.split(".")) {
    v = v !== null && typeof v === "object"
      ? (v as Record<string, unknown>)[seg]
      : undefined;
  }
  if (f.op === "in") return f.values.some((x) => x === v);
  const b = f.value;
  if (f.op === "eq") return v === b;
  if (f.op === "ne") return v !== b;
  if (f.op === "prefix") {
    return typeof v === "string" && v.startsWith(b as string);
  }
  const same = (typeof v === "number" && typeof b === "number") ||
    (typeof v === "string" && typeof b === "string");
  if (!same) return false;
  const [x, y] = [v as number, b as number];
  return f.op === "lt"
    ? x < y
    : f.op === "le"
    ? x <= y
    : f.op === "gt"
    ? x > y
    : x >= y;
}

Deno.test("filter: 2,000 random filters print, parse back and match exactly as their meaning says", () => {
  const r = prng(18);
  for (let i = 0; i < 2000; i++) {
    const f = randomFilter(r, 0);
    const text = formatFilter(f);
    const parsed = parseFilter(text);
    const match = compileFilter(parsed);
    assert.deepEqual(checkFilter(parsed), parsed, text);
    for (let j = 0; j < 10; j++) {
      const e = randomEvent(r);
      assert.equal(match(e), meaning(f, e), `${text} on ${JSON.stringify(e)}`);
    }
    // The JSON form is the same filter.
    assert.deepEqual(filterFromParam(JSON.stringify(parsed)), parsed);
  }
});

Deno.test("filter: 5,000 mutated texts either parse or fail with a FilterError naming a position inside the text", () => {
  const r = prng(7);
  const alphabet = ' ()[],"\\=!<>^.-0123456789aeinortdsx_ \u00e9';
  for (let i = 0; i < 5000; i++) {
    let text = formatFilter(randomFilter(r, 0));
    for (let m = 0; m < 1 + Math.floor(r() * 4); m++) {
      const at = Math.floor(r() * (text.length + 1));
      const c = alphabet[Math.floor(r() * alphabet.length)];
      text = r() < 0.5
        ? text.slice(0, at) + c + text.slice(at)
        : text.slice(0, at) + text.slice(at + 1);
    }
    try {
      compileFilter(parseFilter(text))(randomEvent(r));
    } catch (err) {
      assert.ok(err instanceof FilterError, `${text}: ${err}`);
      assert.ok(
        err.position >= 0 && err.position <= text.length,
        `${text}: position ${err.position}`,
      );
      assert.equal(err.status, 400);
      assert.match(err.message, /position \d+|limit|nodes|deeper/);
    }
  }
});

Deno.test("filter: examples of each operator", () => {
  const e = {
    type: "task.failed",
    node: "n2",
    data: { attempt: 2, name: "resize", ok: false },
  };
  const yes = [
    'type == "task.failed"',
    'type ^= "task."',
    "data.attempt >= 2 and data.attempt < 3",
    'node in ["n1", "n2"]',
    "not data.ok == true",
    'data.name > "r" and data.name <= "s"',
    'type == "x" or (node != "n1" and data.ok == false)',
    "",
  ];
  const no = [
    'type ^= "agent."',
    "data.attempt > 2",
    'data.attempt == "2"',
    'node in ["n3"]',
    "data.missing == 1",
    'data.attempt > "1"',
  ];
  for (const t of yes) assert.equal(compileFilter(parseFilter(t))(e), true, t);
  for (const t of no) assert.equal(compileFilter(parseFilter(t))(e), false, t);
});

Deno.test("filter: bad filters are refused with what and where", () => {
  const cases: [string, RegExp][] = [
    ['type ~= "x"', /unexpected character "~" at position 5/],
    ['type regex "x"', /expected an operator .* at position 5, found 'regex'/],
    ['type == "x" and', /expected a field path, 'not' or '\(' at position 15/],
    ["type == ", /expected a value at position 8, found the end/],
    ['(type == "x"', /expected '\)' at position 12/],
    ["type ^= 3", /'\^=' needs a string at position 8/],
    [
      'type == "x" node == "y"',
      /expected 'and', 'or' or the end at position 12/,
    ],
    ['type == "unterminated', /unterminated string at position 8/],
    ["and == 1", /expected a field path/],
    ["x".repeat(5000), /5000 characters; the limit is 4096/],
    ["(".repeat(40) + "a == 1" + ")".repeat(40), /nests deeper than 16/],
    ["not ".repeat(40) + "a == 1", /nests deeper than 16/],
    [
      Array.from({ length: 300 }, (_, i) => `a == ${i}`).join(" or "),
      /more than 256 nodes/,
    ],
  ];
  for (const [text, re] of cases) {
    assert.throws(() => parseFilter(text), (err: unknown) => {
      assert.ok(err instanceof FilterError, text);
      assert.match(err.message, re, text.slice(0, 80));
      return true;
    });
  }
  // The JSON form: an unknown operator, deep nesting.
  assert.throws(
    () => filterFromParam('{"path":"type","op":"regex","value":"x"}'),
    /unknown operator 'regex'/,
  );
  let deep: unknown = { path: "a", op: "eq", value: 1 };
  for (let i = 0; i < 40; i++) deep = { not: deep };
  assert.throws(() => checkFilter(deep), /nests deeper than 16/);
  assert.throws(() => filterFromParam("{nope"), /not valid JSON/);
  // A megabyte is refused before anything is parsed.
  const t0 = performance.now();
  assert.throws(() => filterFromParam("(".repeat(1 << 20)), /limit is 4096/);
  assert.ok(performance.now() - t0 < 50);
});
