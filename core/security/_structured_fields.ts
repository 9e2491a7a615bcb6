/**
 * The subset of Structured Field Values (RFC 8941, RFC 9651) that HTTP
 * message signatures and `Content-Digest` need: Items, Inner Lists, Lists
 * and Dictionaries whose bare items are Integers, Decimals, Strings, Tokens,
 * Byte Sequences or Booleans. RFC 9651 Dates and Display Strings are refused.
 *
 * Parsing is strict: any deviation from the grammar throws a `SyntaxError`
 * naming the position and the input. Serialization always produces the
 * canonical form, which is what RFC 9421's `;sf` and `@signature-params`
 * compare.
 *
 * @module
 */

/** A bare item, tagged with its Structured Field type. */
export type BareItem =
  | { type: "integer"; value: number }
  | { type: "decimal"; value: number }
  | { type: "string"; value: string }
  | { type: "token"; value: string }
  | { type: "bytes"; value: Uint8Array }
  | { type: "boolean"; value: boolean };

/** Parameters in order; keys are unique. */
export type Parameters = Map<string, BareItem>;

/** An Item: a bare item with parameters. */
export interface Item {
  kind: "item";
  value: BareItem;
  params: Parameters;
}

/** An Inner List: parenthesised Items with parameters of its own. */
export interface InnerList {
  kind: "inner-list";
  items: Item[];
  params: Parameters;
}

/** A member of a List or a Dictionary. */
export type Member = Item | InnerList;
/** A Dictionary, in order; keys are unique. */
export type Dictionary = Map<string, Member>;
/** The top-level field types. */
export type FieldType = "item" | "list" | "dictionary";

/** Options for the parsers. */
export interface ParseOptions {
  /**
   * Throw on a repeated Dictionary key or parameter key instead of letting
   * the last value win (RFC 8941's rule). Signature headers use this so a
   * duplicated label cannot hide behind another.
   * @default {false}
   */
  rejectDuplicates?: boolean;
}

const MAX_INTEGER = 999_999_999_999_999;
const KEY_RE = /^[a-z*][a-z0-9_\-.*]*$/;
const TOKEN_RE = /^[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*$/;
const TOKEN_CHAR_RE = /[!#$%&'*+\-.^_`|~0-9A-Za-z:/]/;
const BASE64_RE = /^[A-Za-z0-9+/]*={0,2}$/;

/** Builds an Item (parameters default to none). */
export function item(value: BareItem, params: Parameters = new Map()): Item {
  return { kind: "item", value, params };
}

class Parser {
  #input: string;
  #pos = 0;
  #rejectDuplicates: boolean;

  constructor(input: string, options: ParseOptions) {
    for (let i = 0; i < input.length; i++) {
      const c = input.charCodeAt(i);
      if (c > 0x7e || (c < 0x20 && c !== 0x09)) {
        throw new SyntaxError(
          `Cannot parse structured field: character ${i} is not visible ASCII (0x${
            c.toString(16)
          }) in ${show(input)}`,
        );
      }
    }
    this.#input = input;
    this.#rejectDuplicates = options.rejectDuplicates ?? false;
  }

  fail(what: string): never {
    throw new SyntaxError(
      `Cannot parse structured field: ${what} at character ${this.#pos} of ${
        show(this.#input)
      }`,
    );
  }

  get done(): boolean {
    return this.#pos >= this.#input.length;
  }

  peek(): string {
    return this.#input[this.#pos] ?? "";
  }

  next(): string {
    return this.#input[this.#pos++] ?? "";
  }

  skipSP(): void {
    while (this.peek() === " ") this.#pos++;
  }

  skipOWS(): void {
    while (this.peek() === " " || this.peek() === "\t") this.#pos++;
  }

  top<T>(parse: () => T): T {
    this.skipSP();
    const value = parse();
    this.skipSP();
    if (!this.done) this.fail("unexpected trailing characters");
    return value;
  }

  list(): Member[] {
    const members: Member[] = [];
    while (!this.done) {
      members.push(this.member());
      if (!this.#endOfMember()) break;
    }
    return members;
  }

  dictionary(): Dictionary {
    const dict: Dictionary = new Map();
    while (!this.done) {
      const key = this.key();
      let member: Member;
      if (this.peek() === "=") {
        this.#pos++;
        member = this.member();
      } else {
        member = item({ type: "boolean", value: true }, this.parameters());
      }
      if (dict.has(key) && this.#rejectDuplicates) {
        this.fail(`duplicated dictionary key '${key}'`);
      }
      dict.set(key, member);
      if (!this.#endOfMember()) break;
    }
    return dict;
  }

  /** After a member: true when another one follows. */
  #endOfMember(): boolean {
    this.skipOWS();
    if (this.done) return false;
    if (this.next() !== ",") this.fail("expected ',' between members");
    this.skipOWS();
    if (this.done) this.fail("trailing ','");
    return true;
  }

  member(): Member {
    return this.peek() === "(" ? this.innerList() : this.item();
  }

  innerList(): InnerList {
    this.#pos++;
    const items: Item[] = [];
    for (;;) {
      this.skipSP();
      if (this.done) this.fail("unterminated inner list");
      if (this.peek() === ")") {
        this.#pos++;
        return { kind: "inner-list", items, params: this.parameters() };
      }
      items.push(this.item());
      const c = this.peek();
      if (c !== " " && c !== ")") {
        this.fail("expected ' ' or ')' in inner list");
      }
    }
  }

  item(): Item {
    return item(this.bareItem(), this.parameters());
  }

  parameters(): Parameters {
    const params: Parameters = new Map();
    while (this.peek() === ";") {
      this.#pos++;
      this.skipSP();
      const key = this.key();
      let value: BareItem = { type: "boolean", value: true };
      if (this.peek() === "=") {
        this.#pos++;
        value = this.bareItem();
      }
      if (params.has(key) && this.#rejectDuplicates) {
        this.fail(`duplicated parameter '${key}'`);
      }
      params.set(key, value);
    }
    return params;
  }

  key(): string {
    const start = this.#pos;
    if (!/[a-z*]/.test(this.peek())) this.fail("expected a key");
    while (/[a-z0-9_\-.*]/.test(this.peek())) this.#pos++;
    return this.#input.slice(start, this.#pos);
  }

  bareItem(): BareItem {
    const c = this.peek();
    if (c === "-" || (c >= "0" && c <= "9")) return this.number();
    if (c === '"') return this.string();
    if (c === ":") return this.bytes();
    if (c === "?") return this.boolean();
    if (c === "*" || /[A-Za-z]/.test(c)) return this.token();
    return this.fail(c === "" ? "expected an item" : `unexpected '${c}'`);
  }

  number(): BareItem {
    let sign = 1;
    if (this.peek() === "-") {
      this.#pos++;
      sign = -1;
    }
    if (!/[0-9]/.test(this.peek())) this.fail("expected a digit");
    const start = this.#pos;
    let decimal = false;
    while (!this.done) {
      const c = this.peek();
      if (c >= "0" && c <= "9") {
        this.#pos++;
      } else if (c === "." && !decimal) {
        if (this.#pos - start > 12) {
          this.fail("decimal has over 12 integer digits");
        }
        decimal = true;
        this.#pos++;
      } else break;
      if (!decimal && this.#pos - start > 15) {
        this.fail("integer has over 15 digits");
      }
      if (decimal && this.#pos - start > 16) this.fail("decimal is too long");
    }
    const text = this.#input.slice(start, this.#pos);
    if (!decimal) return { type: "integer", value: sign * Number(text) };
    if (text.endsWith(".")) this.fail("decimal ends with '.'");
    if (text.length - text.indexOf(".") - 1 > 3) {
      this.fail("decimal has over 3 fractional digits");
    }
    return { type: "decimal", value: sign * Number(text) };
  }

  string(): BareItem {
    this.#pos++;
    let out = "";
    for (;;) {
      if (this.done) this.fail("unterminated string");
      const c = this.next();
      if (c === "\\") {
        const escaped = this.next();
        if (escaped !== '"' && escaped !== "\\") {
          this.fail("bad escape in string");
        }
        out += escaped;
      } else if (c === '"') {
        return { type: "string", value: out };
      } else if (c < " " || c > "~") {
        this.fail("control character in string");
      } else out += c;
    }
  }

  token(): BareItem {
    const start = this.#pos;
    this.#pos++;
    while (TOKEN_CHAR_RE.test(this.peek())) this.#pos++;
    return { type: "token", value: this.#input.slice(start, this.#pos) };
  }

  bytes(): BareItem {
    this.#pos++;
    const end = this.#input.indexOf(":", this.#pos);
    if (end < 0) this.fail("unterminated byte sequence");
    const text = this.#input.slice(this.#pos, end);
    const value = decodeBase64(text);
    if (value === null) this.fail("invalid base64 in byte sequence");
    this.#pos = end + 1;
    return { type: "bytes", value };
  }

  boolean(): BareItem {
    this.#pos++;
    const c = this.next();
    if (c === "1") return { type: "boolean", value: true };
    if (c === "0") return { type: "boolean", value: false };
    return this.fail("expected ?0 or ?1");
  }
}

function show(input: string): string {
  return JSON.stringify(
    input.length > 120 ? input.slice(0, 117) + "..." : input,
  );
}

/** Decodes canonical base64 (padding optional); null when not canonical. */
function decodeBase64(text: string): Uint8Array | null {
  if (!BASE64_RE.test(text) || text.length % 4 === 1) return null;
  let bin: string;
  try {
    bin = atob(text);
  } catch {
    return null;
  }
  const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
  // Only one spelling per value: no stray trailing bits, padding whole or absent.
  const canonical = encodeBase64(bytes);
  return text === canonical || text === canonical.replace(/=+$/, "")
    ? bytes
    : null;
}

function encodeBase64(bytes: Uint8Array): string {
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin);
}

/**
 * Parses a field value as an Item.
 *
 * @example Usage
 * ```ts
 * import { parseItem } from "./_structured_fields.ts";
 * const parsed = parseItem('"@query-param";name="id"');
 * parsed.value; // { type: "string", value: "@query-param" }
 * ```
 */
export function parseItem(input: string, options: ParseOptions = {}): Item {
  const p = new Parser(input, options);
  return p.top(() => p.item());
}

/**
 * Parses a field value as a List.
 *
 * @example Usage
 * ```ts
 * import { parseList } from "./_structured_fields.ts";
 * parseList("a, (b c);x=1").length; // 2
 * ```
 */
export function parseList(input: string, options: ParseOptions = {}): Member[] {
  const p = new Parser(input, options);
  return p.top(() => p.list());
}

/**
 * Parses a field value as a Dictionary.
 *
 * @example Usage
 * ```ts
 * import { parseDictionary } from "./_structured_fields.ts";
 * const dict = parseDictionary("a=1, b=?0, c");
 * [...dict.keys()]; // ["a", "b", "c"]
 * ```
 */
export function parseDictionary(
  input: string,
  options: ParseOptions = {},
): Dictionary {
  const p = new Parser(input, options);
  return p.top(() => p.dictionary());
}

/** Parses `input` as the given top-level type. */
export function parseField(
  input: string,
  type: FieldType,
  options: ParseOptions = {},
): Item | Member[] | Dictionary {
  if (type === "item") return parseItem(input, options);
  if (type === "list") return parseList(input, options);
  return parseDictionary(input, options);
}

/**
 * Parses an Inner List on its own, e.g. a `Signature-Input` member value.
 *
 * @example Usage
 * ```ts
 * import { parseInnerList } from "./_structured_fields.ts";
 * parseInnerList('("@method" "@path");created=1').items.length; // 2
 * ```
 */
export function parseInnerList(
  input: string,
  options: ParseOptions = {},
): InnerList {
  const p = new Parser(input, options);
  return p.top(() => {
    if (p.peek() !== "(") p.fail("expected '('");
    return p.innerList();
  });
}

function fail(what: string): never {
  throw new TypeError(`Cannot serialize structured field: ${what}`);
}

function serializeKey(key: string): string {
  if (!KEY_RE.test(key)) fail(`invalid key ${JSON.stringify(key)}`);
  return key;
}

function serializeDecimal(value: number): string {
  if (!Number.isFinite(value)) fail(`decimal is not finite: ${value}`);
  const scaled = Math.abs(value) * 1000;
  let thousandths = Math.round(scaled);
  // Round half to even, as RFC 8941 §4.1.5 requires.
  if (scaled % 1 === 0.5 && thousandths % 2 === 1) thousandths -= 1;
  const int = Math.floor(thousandths / 1000);
  if (int > 999_999_999_999) fail(`decimal is too large: ${value}`);
  const frac = String(thousandths % 1000).padStart(3, "0").replace(
    /0+$/,
    "",
  );
  const sign = value < 0 && thousandths !== 0 ? "-" : "";
  return `${sign}${int}.${frac || "0"}`;
}

/**
 * Serializes a bare item.
 *
 * @example Usage
 * ```ts
 * import { serializeBareItem } from "./_structured_fields.ts";
 * serializeBareItem({ type: "string", value: 'say "hi"' }); // '"say \\"hi\\""'
 * ```
 */
export function serializeBareItem(value: BareItem): string {
  switch (value.type) {
    case "integer":
      if (
        !Number.isSafeInteger(value.value) ||
        Math.abs(value.value) > MAX_INTEGER
      ) {
        fail(`integer out of range: ${value.value}`);
      }
      return String(value.value);
    case "decimal":
      return serializeDecimal(value.value);
    case "string":
      if (!/^[\x20-\x7e]*$/.test(value.value)) {
        fail(
          `string has characters outside visible ASCII: ${show(value.value)}`,
        );
      }
      return `"${value.value.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
    case "token":
      if (!TOKEN_RE.test(value.value)) {
        fail(`invalid token ${show(value.value)}`);
      }
      return value.value;
    case "bytes":
      return `:${encodeBase64(value.value)}:`;
    case "boolean":
      return value.value ? "?1" : "?0";
  }
}

/** Serializes parameters (`;key=value`, `;flag` for true). */
export function serializeParameters(params: Parameters): string {
  let out = "";
  for (const [key, value] of params) {
    out += `;${serializeKey(key)}`;
    if (!(value.type === "boolean" && value.value)) {
      out += `=${serializeBareItem(value)}`;
    }
  }
  return out;
}

/**
 * Serializes an Item with its parameters.
 *
 * @example Usage
 * ```ts
 * import { parseItem, serializeItem } from "./_structured_fields.ts";
 * serializeItem(parseItem('"example-dict";key="a"')); // '"example-dict";key="a"'
 * ```
 */
export function serializeItem(value: Item): string {
  return serializeBareItem(value.value) + serializeParameters(value.params);
}

/** Serializes an Inner List with its parameters. */
export function serializeInnerList(value: InnerList): string {
  return `(${value.items.map(serializeItem).join(" ")})` +
    serializeParameters(value.params);
}

/** Serializes a List or Dictionary member. */
export function serializeMember(value: Member): string {
  return value.kind === "item"
    ? serializeItem(value)
    : serializeInnerList(value);
}

/** Serializes a List. */
export function serializeList(members: readonly Member[]): string {
  return members.map(serializeMember).join(", ");
}

/**
 * Serializes a Dictionary (a member that is `true` shows as its bare key).
 *
 * @example Usage
 * ```ts
 * import { parseDictionary, serializeDictionary } from "./_structured_fields.ts";
 * serializeDictionary(parseDictionary("a=1,   b=?1;x")); // "a=1, b;x"
 * ```
 */
export function serializeDictionary(dict: Dictionary): string {
  const out: string[] = [];
  for (const [key, member] of dict) {
    const bareTrue = member.kind === "item" &&
      member.value.type === "boolean" && member.value.value;
    out.push(
      bareTrue
        ? serializeKey(key) + serializeParameters(member.params)
        : `${serializeKey(key)}=${serializeMember(member)}`,
    );
  }
  return out.join(", ");
}

/** Serializes a value of the given top-level type. */
export function serializeField(
  value: Item | Member[] | Dictionary,
  type: FieldType,
): string {
  if (type === "item") return serializeItem(value as Item);
  if (type === "list") return serializeList(value as Member[]);
  return serializeDictionary(value as Dictionary);
}
