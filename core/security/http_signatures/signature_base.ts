/**
 * The RFC 9421 signature base: a message reduced to the parts a signature
 * reads, component identifiers checked and derived, and the base string.
 *
 * @module
 */
import {
  type BareItem,
  type FieldType,
  type InnerList,
  type Item,
  item,
  type Parameters,
  parseDictionary,
  parseField,
  parseInnerList,
  parseItem,
  serializeField,
  serializeInnerList,
  serializeItem,
  serializeMember,
} from "../_structured_fields.ts";

/** Field lines by name: one string per field line (instance). */
export type FieldLines =
  | Headers
  | Record<string, string | readonly string[]>
  | Iterable<readonly [string, string]>;

/**
 * A message reduced to what a signature base reads. A request has
 * `method` and `targetUri`; a response has `status` and, for `;req`
 * components, the `request` it answers.
 */
export interface SignatureMessage {
  method?: string;
  /** Absolute target URI, e.g. `https://example.com/foo?x=1`. */
  targetUri?: string;
  status?: number;
  fields: FieldLines;
  /** Trailer fields; `;tr` components fail without them. */
  trailers?: FieldLines;
  /** The request a response answers (for `;req`). */
  request?: SignatureMessage;
}

/** What a request signature must cover unless the policy says otherwise. */
export const DEFAULT_REQUEST_COMPONENTS: readonly string[] = [
  "@method",
  "@authority",
  "@path",
  "@query",
];

/** What a response signature must cover unless the policy says otherwise. */
export const DEFAULT_RESPONSE_COMPONENTS: readonly string[] = ["@status"];

/** Fields with a known Structured Field type, for `;sf`. */
export const STRUCTURED_FIELD_TYPES: Readonly<Record<string, FieldType>> = {
  "accept-signature": "dictionary",
  "cache-status": "list",
  "content-digest": "dictionary",
  "priority": "dictionary",
  "proxy-status": "list",
  "repr-digest": "dictionary",
  "signature": "dictionary",
  "signature-input": "dictionary",
  "want-content-digest": "dictionary",
  "want-repr-digest": "dictionary",
};

const MAX_COMPONENTS = 64;
const DERIVED = new Set([
  "@method",
  "@target-uri",
  "@authority",
  "@scheme",
  "@path",
  "@query",
  "@query-param",
  "@status",
]);
const FIELD_PARAMS = new Set(["sf", "key", "bs", "req", "tr"]);
const FIELD_NAME_RE = /^[!#$%&'*+\-.^_`|~0-9a-z]+$/;

/** A base could not be built: the message lacks or garbles a covered component. */
export class SignatureBaseError extends Error {
  override name = "SignatureBaseError";
}

// ---------------------------------------------------------------- messages

/** Field lines by lower-cased name (internal). */
export type FieldMap = Map<string, string[]>;

/** Groups field lines by lower-cased name (internal). */
export function fieldMap(lines: FieldLines): FieldMap {
  const map: FieldMap = new Map();
  const add = (name: string, value: string) => {
    const key = name.toLowerCase();
    const list = map.get(key);
    if (list) list.push(value);
    else map.set(key, [value]);
  };
  if (lines instanceof Headers) {
    // Iterating Headers yields Set-Cookie lines one by one, the rest joined.
    for (const [name, value] of lines) add(name, value);
  } else if (Symbol.iterator in lines) {
    for (const [name, value] of lines as Iterable<readonly [string, string]>) {
      add(name, value);
    }
  } else {
    for (const [name, value] of Object.entries(lines)) {
      for (const v of typeof value === "string" ? [value] : value) add(name, v);
    }
  }
  return map;
}

/**
 * The parts of a request a signature base reads.
 *
 * @example Usage
 * ```ts
 * import { messageFromRequest } from "./mod.ts";
 * const message = messageFromRequest(new Request("https://example.com/a?b=1"));
 * message.method; // "GET"
 * ```
 */
export function messageFromRequest(request: Request): SignatureMessage {
  return {
    method: request.method,
    targetUri: request.url,
    fields: request.headers,
  };
}

/** The parts of a response (and of the request it answers) a base reads. */
export function messageFromResponse(
  response: Response,
  request?: Request,
): SignatureMessage {
  return {
    status: response.status,
    fields: response.headers,
    request: request ? messageFromRequest(request) : undefined,
  };
}

/** The body as bytes, read from a clone; null when there is none (internal). */
export async function bodyBytes(
  message: Request | Response,
): Promise<Uint8Array<ArrayBuffer> | null> {
  if (message.body === null) return null;
  return new Uint8Array(await message.clone().arrayBuffer());
}

// -------------------------------------------------------------- components

/**
 * Parses a component identifier: a bare name (`"@method"`,
 * `"content-type"`), a name with parameters (`'@query-param;name="id"'`), or
 * its serialized form (`'"@query-param";name="id"'`).
 */
export function parseComponent(spec: string): Item {
  let source = spec;
  if (!spec.startsWith('"')) {
    const semi = spec.indexOf(";");
    const name = semi < 0 ? spec : spec.slice(0, semi);
    source = JSON.stringify(name) + (semi < 0 ? "" : spec.slice(semi));
  }
  const parsed = parseItem(source, { rejectDuplicates: true });
  checkComponent(parsed);
  return parsed;
}

/** The identity of a component: its name and its parameters in sorted order. */
export function componentKey(component: Item): string {
  const params: Parameters = new Map(
    [...component.params].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
  );
  return serializeItem(item(component.value, params));
}

function isFlag(value: BareItem | undefined): boolean {
  return value?.type === "boolean" && value.value;
}

/** Throws unless `component` is a well-formed identifier with allowed parameters. */
function checkComponent(component: Item): void {
  const bad = (why: string): never => {
    throw new SignatureBaseError(
      `Invalid component ${safeSerialize(component)}: ${why}`,
    );
  };
  if (component.value.type !== "string") bad("the name must be a string");
  const name = component.value.value as string;
  const params = component.params;
  if (name.startsWith("@")) {
    if (name === "@signature-params") bad("it cannot be covered");
    if (name === "@request-target") {
      bad(
        "@request-target depends on the HTTP/1.1 request form; cover @path and @query",
      );
    }
    if (!DERIVED.has(name)) bad("unknown derived component");
    for (const [key, value] of params) {
      if (key === "req") {
        if (!isFlag(value)) bad("'req' must be a flag");
      } else if (key === "name" && name === "@query-param") {
        if (value.type !== "string") bad("'name' must be a string");
      } else bad(`unknown parameter '${key}'`);
    }
    if (name === "@query-param" && !params.has("name")) {
      bad("@query-param needs a 'name' parameter");
    }
    return;
  }
  if (!FIELD_NAME_RE.test(name)) {
    bad("a field name must be a lowercase token");
  }
  for (const [key, value] of params) {
    if (!FIELD_PARAMS.has(key)) bad(`unknown parameter '${key}'`);
    if (key === "key") {
      if (value.type !== "string") bad("'key' must be a string");
    } else if (!isFlag(value)) bad(`'${key}' must be a flag`);
  }
  if (params.has("bs") && (params.has("sf") || params.has("key"))) {
    bad("'bs' cannot be combined with 'sf' or 'key'");
  }
}

function safeSerialize(component: Item): string {
  try {
    return serializeItem(component);
  } catch {
    return "(unserializable)";
  }
}

/** application/x-www-form-urlencoded percent-encoding, a space as %20 (RFC 9421 §2.2.8). */
function formEncode(text: string): string {
  return encodeURIComponent(text).replace(
    /[!'()~]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
}

function targetUrl(message: SignatureMessage, name: string): URL {
  if (message.status !== undefined || message.targetUri === undefined) {
    throw new SignatureBaseError(
      `${name} needs a request; on a response use ${name};req`,
    );
  }
  try {
    return new URL(message.targetUri);
  } catch {
    throw new SignatureBaseError(
      `Target URI is not absolute: '${message.targetUri}'`,
    );
  }
}

function derivedValue(
  message: SignatureMessage,
  name: string,
  params: Parameters,
): string {
  switch (name) {
    case "@method":
      if (message.status !== undefined || message.method === undefined) {
        throw new SignatureBaseError(
          "@method needs a request; on a response use @method;req",
        );
      }
      return message.method;
    case "@target-uri":
      return targetUrl(message, name).href;
    case "@authority":
      return targetUrl(message, name).host;
    case "@scheme":
      return targetUrl(message, name).protocol.slice(0, -1);
    case "@path":
      return targetUrl(message, name).pathname || "/";
    case "@query":
      return targetUrl(message, name).search || "?";
    case "@query-param": {
      const wanted = (params.get("name") as { value: string }).value;
      const search = targetUrl(message, name).search;
      const values: string[] = [];
      for (const [k, v] of new URLSearchParams(search)) {
        if (formEncode(k) === wanted) values.push(v);
      }
      if (values.length !== 1) {
        throw new SignatureBaseError(
          `Query parameter '${wanted}' occurs ${values.length} times; it must occur exactly once`,
        );
      }
      return formEncode(values[0]);
    }
    case "@status": {
      const status = message.status;
      if (status === undefined) {
        throw new SignatureBaseError("@status is only defined for a response");
      }
      if (!Number.isInteger(status) || status < 100 || status > 999) {
        throw new SignatureBaseError(`Status is not 3 digits: ${status}`);
      }
      return String(status);
    }
  }
  throw new SignatureBaseError(`Unknown derived component '${name}'`);
}

function fieldValue(
  message: SignatureMessage,
  name: string,
  params: Parameters,
  sfTypes: Readonly<Record<string, FieldType>>,
): string {
  let lines = message.fields;
  if (params.has("tr")) {
    if (message.trailers === undefined) {
      throw new SignatureBaseError(
        `Trailer '${name}' is covered but the message has no trailers`,
      );
    }
    lines = message.trailers;
  }
  const instances = fieldMap(lines).get(name);
  if (instances === undefined) {
    throw new SignatureBaseError(`Field '${name}' is covered but missing`);
  }
  const values = instances.map((v) =>
    v.replace(/\r?\n[ \t]+/g, " ").replace(/^[ \t]+|[ \t]+$/g, "")
  );
  if (params.has("bs")) {
    return values.map((v) => {
      if ([...v].some((c) => c.charCodeAt(0) > 0xff)) {
        throw new SignatureBaseError(`Field '${name}' is not bytes`);
      }
      const bytes = Uint8Array.from(v, (c) => c.charCodeAt(0));
      return serializeItem(item({ type: "bytes", value: bytes }));
    }).join(", ");
  }
  const joined = values.join(", ");
  try {
    const key = params.get("key");
    if (key !== undefined) {
      const dict = parseDictionary(joined);
      const member = dict.get((key as { value: string }).value);
      if (member === undefined) {
        throw new SignatureBaseError(
          `Field '${name}' has no dictionary key '${
            (key as { value: string }).value
          }'`,
        );
      }
      return serializeMember(member);
    }
    if (params.has("sf")) {
      const type = sfTypes[name];
      if (type === undefined) {
        throw new SignatureBaseError(
          `Field '${name}' has no known structured type for ';sf'`,
        );
      }
      return serializeField(parseField(joined, type), type);
    }
  } catch (err) {
    if (err instanceof SignatureBaseError) throw err;
    throw new SignatureBaseError(
      `Field '${name}' is not a valid structured field: ${
        (err as Error).message
      }`,
      { cause: err },
    );
  }
  return joined;
}

function componentValue(
  message: SignatureMessage,
  component: Item,
  sfTypes: Readonly<Record<string, FieldType>>,
): string {
  const name = component.value.value as string;
  let target = message;
  if (component.params.has("req")) {
    if (message.status === undefined) {
      throw new SignatureBaseError(
        `${name};req is only defined when signing a response`,
      );
    }
    if (message.request === undefined) {
      throw new SignatureBaseError(
        `${name};req is covered but the request is not available`,
      );
    }
    target = message.request;
  }
  const value = name.startsWith("@")
    ? derivedValue(target, name, component.params)
    : fieldValue(target, name, component.params, sfTypes);
  if (!/^[\t\x20-\x7e]*$/.test(value)) {
    throw new SignatureBaseError(
      `Component ${
        serializeItem(component)
      } has characters outside visible ASCII`,
    );
  }
  return value;
}

/** Options for {@linkcode createSignatureBase}. */
export interface SignatureBaseOptions {
  /**
   * Structured types of fields beyond {@linkcode STRUCTURED_FIELD_TYPES},
   * for `;sf`. @default {{}}
   */
  structuredFieldTypes?: Readonly<Record<string, FieldType>>;
}

/**
 * The RFC 9421 §2.5 signature base of `message` for `signatureParams` (the
 * inner list of a `Signature-Input` member, as a string or parsed): one line
 * per covered component, then `"@signature-params"`, with no final LF.
 * Throws {@linkcode SignatureBaseError} when a component is invalid, missing
 * or repeated.
 *
 * @example Usage
 * ```ts
 * import { createSignatureBase, messageFromRequest } from "./mod.ts";
 * const request = new Request("https://example.com/foo", { method: "POST" });
 * createSignatureBase(messageFromRequest(request), '("@method" "@path");created=1');
 * // '"@method": POST\n"@path": /foo\n"@signature-params": ("@method" "@path");created=1'
 * ```
 */
export function createSignatureBase(
  message: SignatureMessage,
  signatureParams: string | InnerList,
  options: SignatureBaseOptions = {},
): string {
  let params: InnerList;
  try {
    params = typeof signatureParams === "string"
      ? parseInnerList(signatureParams, { rejectDuplicates: true })
      : signatureParams;
  } catch (err) {
    throw new SignatureBaseError((err as Error).message, { cause: err });
  }
  if (params.items.length > MAX_COMPONENTS) {
    throw new SignatureBaseError(
      `Too many covered components: ${params.items.length} > ${MAX_COMPONENTS}`,
    );
  }
  const sfTypes = {
    ...STRUCTURED_FIELD_TYPES,
    ...options.structuredFieldTypes,
  };
  const seen = new Set<string>();
  const lines: string[] = [];
  for (const component of params.items) {
    checkComponent(component);
    const key = componentKey(component);
    if (seen.has(key)) {
      throw new SignatureBaseError(`Component ${key} is covered twice`);
    }
    seen.add(key);
    lines.push(
      `${serializeItem(component)}: ${
        componentValue(message, component, sfTypes)
      }`,
    );
  }
  lines.push(`"@signature-params": ${serializeInnerList(params)}`);
  return lines.join("\n");
}
