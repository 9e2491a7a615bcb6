/**
 * Content filters over events: a small expression language, parsed and
 * checked (never `eval`), compiled to a predicate.
 *
 * ```
 * expr  := and ("or" and)*
 * and   := unary ("and" unary)*
 * unary := "not" unary | "(" expr ")" | cmp
 * cmp   := path op value | path "in" "[" value ("," value)* "]"
 * op    := "==" | "!=" | "<" | "<=" | ">" | ">=" | "^="   (^= is "starts with")
 * value := "json string" | number | true | false | null
 * path  := name ("." name)*            e.g. type, node, data.attempt
 * ```
 *
 * Example: `type ^= "task." and data.attempt >= 2 and not node in ["n3"]`.
 * The same tree is accepted as JSON ({@linkcode Filter}). Limits: 4096
 * characters, nesting 16 deep, 256 nodes, 256 values in an `in`. A bad
 * filter is a {@linkcode FilterError} (HTTP 400) naming the position.
 *
 * @module
 */
import { PlexusError } from "../../core/plugin.ts";

/** A value a comparison can hold. */
export type Scalar = string | number | boolean | null;

/** A comparison operator. */
export type CompareOp = "eq" | "ne" | "lt" | "le" | "gt" | "ge" | "prefix";

/** A parsed filter. `{all: true}` matches everything. */
export type Filter =
  | { all: true }
  | { and: Filter[] }
  | { or: Filter[] }
  | { not: Filter }
  | { path: string; op: CompareOp; value: Scalar }
  | { path: string; op: "in"; values: Scalar[] };

/** Limits on a filter's size. */
export const FILTER_LIMITS = {
  maxLength: 4096,
  maxDepth: 16,
  maxNodes: 256,
  maxValues: 256,
} as const;

/**
 * A filter that cannot be parsed or breaks a limit (HTTP 400).
 *
 * @example Usage
 * ```ts
 * import { FilterError, parseFilter } from "./filter.ts";
 * try {
 *   parseFilter("type ~ 1");
 * } catch (err) {
 *   if (err instanceof FilterError) err.position; // 5
 * }
 * ```
 */
export class FilterError extends PlexusError {
  override name = "FilterError";
  /** Character offset of the error in the text (0 for a JSON tree). */
  readonly position: number;
  /** `message` says what was wrong and where. */
  constructor(message: string, position: number) {
    super("bad_filter", message, { status: 400, data: { position } });
    this.position = position;
  }
}

const OPS: Record<string, CompareOp> = {
  "==": "eq",
  "!=": "ne",
  "<": "lt",
  "<=": "le",
  ">": "gt",
  ">=": "ge",
  "^=": "prefix",
};
const OP_TEXT = Object.fromEntries(
  Object.entries(OPS).map(([k, v]) => [v, k]),
) as Record<CompareOp, string>;
const PATH_RE = /^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)*$/;
const KEYWORDS = new Set(["and", "or", "not", "in", "true", "false", "null"]);

type Token =
  | { kind: "word"; text: string; pos: number }
  | { kind: "op"; text: string; pos: number }
  | { kind: "value"; value: Scalar; pos: number }
  | { kind: "punct"; text: "(" | ")" | "[" | "]" | ","; pos: number }
  | { kind: "end"; pos: number };

function tokenize(src: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  while (i < src.length) {
    const c = src[i];
    if (c === " " || c === "\t" || c === "\n" || c === "\r") {
      i++;
      continue;
    }
    if ("()[],".includes(c)) {
      out.push({ kind: "punct", text: c as "(", pos: i });
      i++;
      continue;
    }
    const two = src.slice(i, i + 2);
    if (two in OPS) {
      out.push({ kind: "op", text: two, pos: i });
      i += 2;
      continue;
    }
    if (c === "<" || c === ">") {
      out.push({ kind: "op", text: c, pos: i });
      i++;
      continue;
    }
    if (c === '"') {
      let j = i + 1;
      while (j < src.length && src[j] !== '"') j += src[j] === "\\" ? 2 : 1;
      if (j >= src.length) {
        throw new FilterError(
          `unterminated string at position ${i}`,
          i,
        );
      }
      let value: string;
      try {
        value = JSON.parse(src.slice(i, j + 1));
      } catch {
        throw new FilterError(`bad string escape at position ${i}`, i);
      }
      out.push({ kind: "value", value, pos: i });
      i = j + 1;
      continue;
    }
    const num = /^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/.exec(
      src.slice(i, i + 64),
    );
    if (num && (c === "-" || (c >= "0" && c <= "9"))) {
      const value = Number(num[0]);
      if (!Number.isFinite(value)) {
        throw new FilterError(`number out of range at position ${i}`, i);
      }
      out.push({ kind: "value", value, pos: i });
      i += num[0].length;
      continue;
    }
    const word = /^[A-Za-z_][A-Za-z0-9_.-]*/.exec(src.slice(i, i + 512));
    if (word) {
      const w = word[0];
      if (w === "true" || w === "false") {
        out.push({ kind: "value", value: w === "true", pos: i });
      } else if (w === "null") out.push({ kind: "value", value: null, pos: i });
      else out.push({ kind: "word", text: w, pos: i });
      i += w.length;
      continue;
    }
    throw new FilterError(
      `unexpected character ${JSON.stringify(c)} at position ${i}`,
      i,
    );
  }
  out.push({ kind: "end", pos: src.length });
  return out;
}

/**
 * Parses the text form of a filter; an empty (or blank) text matches all.
 *
 * @example Usage
 * ```ts
 * import { parseFilter } from "./filter.ts";
 * import assert from "node:assert/strict";
 * assert.deepEqual(parseFilter('type ^= "task." and data.attempt > 1'), {
 *   and: [
 *     { path: "type", op: "prefix", value: "task." },
 *     { path: "data.attempt", op: "gt", value: 1 },
 *   ],
 * });
 * ```
 */
export function parseFilter(src: string): Filter {
  if (typeof src !== "string") {
    throw new FilterError(`a filter is a string, got ${typeof src}`, 0);
  }
  if (src.length > FILTER_LIMITS.maxLength) {
    throw new FilterError(
      `filter is ${src.length} characters; the limit is ${FILTER_LIMITS.maxLength}`,
      FILTER_LIMITS.maxLength,
    );
  }
  const tokens = tokenize(src);
  if (tokens.length === 1) return { all: true };
  let k = 0;
  let nodes = 0;
  const peek = () => tokens[k];
  const next = () => tokens[k++];
  const count = (pos: number) => {
    if (++nodes > FILTER_LIMITS.maxNodes) {
      throw new FilterError(
        `filter has more than ${FILTER_LIMITS.maxNodes} nodes (at position ${pos})`,
        pos,
      );
    }
  };
  const isWord = (t: Token, w: string) => t.kind === "word" && t.text === w;
  const describe = (t: Token) =>
    t.kind === "end"
      ? "the end"
      : t.kind === "value"
      ? JSON.stringify(t.value)
      : `'${t.text}'`;
  const fail = (t: Token, wanted: string): never => {
    throw new FilterError(
      `expected ${wanted} at position ${t.pos}, found ${describe(t)}`,
      t.pos,
    );
  };
  const value = (): Scalar => {
    const t = next();
    return t.kind === "value" ? t.value : fail(t, "a value");
  };
  const expr = (depth: number): Filter => {
    if (depth > FILTER_LIMITS.maxDepth) {
      throw new FilterError(
        `filter nests deeper than ${FILTER_LIMITS.maxDepth} (at position ${peek().pos})`,
        peek().pos,
      );
    }
    const parts = [and(depth)];
    while (isWord(peek(), "or")) {
      next();
      parts.push(and(depth));
    }
    if (parts.length === 1) return parts[0];
    count(peek().pos);
    return { or: parts };
  };
  const and = (depth: number): Filter => {
    const parts = [unary(depth)];
    while (isWord(peek(), "and")) {
      next();
      parts.push(unary(depth));
    }
    if (parts.length === 1) return parts[0];
    count(peek().pos);
    return { and: parts };
  };
  const unary = (depth: number): Filter => {
    const t = peek();
    count(t.pos);
    if (isWord(t, "not")) {
      next();
      if (depth + 1 > FILTER_LIMITS.maxDepth) {
        throw new FilterError(
          `filter nests deeper than ${FILTER_LIMITS.maxDepth} (at position ${t.pos})`,
          t.pos,
        );
      }
      return { not: unary(depth + 1) };
    }
    if (t.kind === "punct" && t.text === "(") {
      next();
      const inner = expr(depth + 1);
      const close = next();
      if (close.kind !== "punct" || close.text !== ")") fail(close, "')'");
      return inner;
    }
    if (t.kind !== "word" || KEYWORDS.has(t.text)) {
      return fail(t, "a field path, 'not' or '('");
    }
    next();
    if (!PATH_RE.test(t.text) || t.text.length > 256) {
      fail(t, "a field path like data.attempt");
    }
    const o = next();
    if (isWord(o, "in")) {
      const open = next();
      if (open.kind !== "punct" || open.text !== "[") fail(open, "'['");
      const values: Scalar[] = [value()];
      for (;;) {
        const sep = next();
        if (sep.kind === "punct" && sep.text === "]") break;
        if (sep.kind !== "punct" || sep.text !== ",") fail(sep, "',' or ']'");
        values.push(value());
        if (values.length > FILTER_LIMITS.maxValues) {
          throw new FilterError(
            `'in' list has more than ${FILTER_LIMITS.maxValues} values (at position ${sep.pos})`,
            sep.pos,
          );
        }
      }
      return { path: t.text, op: "in", values };
    }
    if (o.kind !== "op") {
      return fail(o, "an operator (==, !=, <, <=, >, >=, ^=, in)");
    }
    const op = OPS[o.text];
    const vpos = peek().pos;
    const v = value();
    if (op === "prefix" && typeof v !== "string") {
      throw new FilterError(
        `'^=' needs a string at position ${vpos}, found ${JSON.stringify(v)}`,
        vpos,
      );
    }
    return { path: t.text, op, value: v };
  };
  const out = expr(0);
  const rest = peek();
  if (rest.kind !== "end") fail(rest, "'and', 'or' or the end");
  return out;
}

/**
 * Checks a filter given as a JSON tree (as {@linkcode Filter} describes),
 * with the same limits as the text form; returns it typed.
 *
 * @example Usage
 * ```ts
 * import { checkFilter } from "./filter.ts";
 * import assert from "node:assert/strict";
 * assert.throws(() => checkFilter({ path: "type", op: "regex", value: ".*" }), /unknown operator 'regex'/);
 * ```
 */
export function checkFilter(tree: unknown): Filter {
  let nodes = 0;
  const scalar = (v: unknown, where: string): Scalar => {
    if (
      v === null || typeof v === "string" || typeof v === "boolean" ||
      (typeof v === "number" && Number.isFinite(v))
    ) return v as Scalar;
    throw new FilterError(
      `${where}: expected a string, number, boolean or null`,
      0,
    );
  };
  const walk = (f: unknown, depth: number, where: string): Filter => {
    if (depth > FILTER_LIMITS.maxDepth) {
      throw new FilterError(
        `filter nests deeper than ${FILTER_LIMITS.maxDepth} (at ${where})`,
        0,
      );
    }
    if (++nodes > FILTER_LIMITS.maxNodes) {
      throw new FilterError(
        `filter has more than ${FILTER_LIMITS.maxNodes} nodes`,
        0,
      );
    }
    if (f === null || typeof f !== "object" || Array.isArray(f)) {
      throw new FilterError(`${where}: expected an object`, 0);
    }
    const o = f as Record<string, unknown>;
    const keys = Object.keys(o).sort().join(",");
    if (keys === "all" && o.all === true) return { all: true };
    if (keys === "and" || keys === "or") {
      const list = o[keys];
      if (!Array.isArray(list) || list.length === 0) {
        throw new FilterError(`${where}.${keys}: expected a non-empty list`, 0);
      }
      const parts = list.map((x, i) =>
        walk(x, depth + 1, `${where}.${keys}[${i}]`)
      );
      return keys === "and" ? { and: parts } : { or: parts };
    }
    if (keys === "not") return { not: walk(o.not, depth + 1, `${where}.not`) };
    if (
      typeof o.path !== "string" || !PATH_RE.test(o.path) || o.path.length > 256
    ) {
      throw new FilterError(
        `${where}.path: expected a field path like data.attempt, got ${
          JSON.stringify(o.path)?.slice(0, 60)
        }`,
        0,
      );
    }
    if (o.op === "in") {
      if (
        keys !== "op,path,values" || !Array.isArray(o.values) ||
        o.values.length === 0
      ) {
        throw new FilterError(
          `${where}: 'in' takes {path, op, values: [...]}`,
          0,
        );
      }
      if (o.values.length > FILTER_LIMITS.maxValues) {
        throw new FilterError(
          `${where}.values: more than ${FILTER_LIMITS.maxValues} values`,
          0,
        );
      }
      return {
        path: o.path,
        op: "in",
        values: o.values.map((v, i) => scalar(v, `${where}.values[${i}]`)),
      };
    }
    if (
      typeof o.op !== "string" ||
      !Object.values(OPS).includes(o.op as CompareOp)
    ) {
      throw new FilterError(
        `${where}.op: unknown operator '${String(o.op).slice(0, 40)}' (known: ${
          [...Object.values(OPS), "in"].join(", ")
        })`,
        0,
      );
    }
    if (keys !== "op,path,value") {
      throw new FilterError(`${where}: a comparison is {path, op, value}`, 0);
    }
    const value = scalar(o.value, `${where}.value`);
    if (o.op === "prefix" && typeof value !== "string") {
      throw new FilterError(`${where}.value: 'prefix' needs a string`, 0);
    }
    return { path: o.path, op: o.op as CompareOp, value };
  };
  return walk(tree, 0, "filter");
}

/**
 * Reads a filter from an HTTP parameter: JSON when it starts with `{`,
 * else the text form; none matches everything.
 *
 * @example Usage
 * ```ts
 * import { filterFromParam } from "./filter.ts";
 * import assert from "node:assert/strict";
 * assert.deepEqual(filterFromParam('{"path":"node","op":"eq","value":"n1"}'), filterFromParam('node == "n1"'));
 * ```
 */
export function filterFromParam(param: string | undefined | null): Filter {
  if (param === undefined || param === null) return { all: true };
  if (param.length > FILTER_LIMITS.maxLength) {
    throw new FilterError(
      `filter is ${param.length} characters; the limit is ${FILTER_LIMITS.maxLength}`,
      FILTER_LIMITS.maxLength,
    );
  }
  if (param.trimStart().startsWith("{")) {
    let tree: unknown;
    try {
      tree = JSON.parse(param);
    } catch (err) {
      throw new FilterError(
        `filter is not valid JSON: ${(err as Error).message}`,
        0,
      );
    }
    return checkFilter(tree);
  }
  return parseFilter(param);
}

/**
 * Prints a filter in the text form {@linkcode parseFilter} reads back.
 *
 * @example Usage
 * ```ts
 * import { formatFilter } from "./filter.ts";
 * import assert from "node:assert/strict";
 * assert.equal(formatFilter({ not: { path: "node", op: "eq", value: "n1" } }), 'not (node == "n1")');
 * ```
 */
export function formatFilter(f: Filter): string {
  if ("all" in f) return "";
  if ("and" in f) return f.and.map((x) => `(${formatFilter(x)})`).join(" and ");
  if ("or" in f) return f.or.map((x) => `(${formatFilter(x)})`).join(" or ");
  if ("not" in f) return `not (${formatFilter(f.not)})`;
  if (f.op === "in") {
    return `${f.path} in [${
      f.values.map((v) => JSON.stringify(v)).join(", ")
    }]`;
  }
  return `${f.path} ${OP_TEXT[f.op]} ${JSON.stringify(f.value)}`;
}

function lookup(event: unknown, path: string): unknown {
  let v = event;
  for (const seg of path.split(".")) {
    if (v === null || typeof v !== "object" || !Object.hasOwn(v, seg)) {
      return undefined;
    }
    v = (v as Record<string, unknown>)[seg];
  }
  return v;
}

function compare(a: unknown, op: CompareOp, b: Scalar): boolean {
  switch (op) {
    case "eq":
      return a === b;
    case "ne":
      return a !== b;
    case "prefix":
      return typeof a === "string" && a.startsWith(b as string);
  }
  // Ranges only between two numbers or two strings.
  if (
    !(typeof a === "number" && typeof b === "number") &&
    !(typeof a === "string" && typeof b === "string")
  ) return false;
  switch (op) {
    case "lt":
      return a < b;
    case "le":
      return a <= b;
    case "gt":
      return a > b;
    default:
      return a >= b;
  }
}

/**
 * Compiles a checked filter into a predicate over an event.
 *
 * @example Usage
 * ```ts
 * import { compileFilter, parseFilter } from "./filter.ts";
 * import assert from "node:assert/strict";
 * const match = compileFilter(parseFilter('node in ["n1", "n2"] and not type == "task.started"'));
 * assert.equal(match({ node: "n1", type: "task.failed" }), true);
 * assert.equal(match({ node: "n1", type: "task.started" }), false);
 * ```
 */
export function compileFilter(f: Filter): (event: unknown) => boolean {
  if ("all" in f) return () => true;
  if ("and" in f) {
    const parts = f.and.map(compileFilter);
    return (e) => parts.every((p) => p(e));
  }
  if ("or" in f) {
    const parts = f.or.map(compileFilter);
    return (e) => parts.some((p) => p(e));
  }
  if ("not" in f) {
    const inner = compileFilter(f.not);
    return (e) => !inner(e);
  }
  const { path } = f;
  if (f.op === "in") {
    const set = new Set<Scalar>(f.values);
    return (e) => set.has(lookup(e, path) as Scalar);
  }
  const { op, value } = f;
  return (e) => compare(lookup(e, path), op, value);
}
