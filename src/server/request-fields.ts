/**
 * Typed reads of a JSON request body's fields. Each says which field is wrong, what it must be and
 * what it got. As in OpenAI's API, JSON null stands for an absent optional field and fields the
 * server does not know are ignored.
 */
import { invalidField } from "./api-error.js";

export type Body = Record<string, unknown>;

function describe(value: unknown): string {
  if (Array.isArray(value)) return "an array";
  if (value === null) return "null";
  if (typeof value === "string")
    return `the string ${JSON.stringify(value.length > 40 ? value.slice(0, 40) + "…" : value)}`;
  if (typeof value === "object") return "an object";
  return String(value);
}

export function wrongType(param: string, expected: string, value: unknown): Error {
  return invalidField(
    param,
    `Invalid type for '${param}': expected ${expected}, got ${describe(value)}.`,
    "invalid_type",
  );
}

export function asBody(value: unknown, param = "body"): Body {
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw invalidField(
      param,
      `the request ${param === "body" ? "body" : `'${param}'`} must be a JSON object, got ${describe(value)}`,
      "invalid_type",
    );
  }
  return value as Body;
}

function present(body: Body, name: string): unknown {
  const v = body[name];
  return v === null ? undefined : v;
}

export function requiredString(body: Body, name: string): string {
  const v = present(body, name);
  if (v === undefined)
    throw invalidField(name, `Missing required parameter: '${name}'.`, "missing_required_parameter");
  if (typeof v !== "string") throw wrongType(name, "a string", v);
  return v;
}

export function optionalBoolean(body: Body, name: string): boolean | undefined {
  const v = present(body, name);
  if (v === undefined) return undefined;
  if (typeof v !== "boolean") throw wrongType(name, "a boolean", v);
  return v;
}

export interface NumberRange {
  min?: number;
  max?: number;
  /** The minimum itself is not allowed. */
  minExclusive?: boolean;
  integer?: boolean;
}

export function optionalNumber(body: Body, name: string, range: NumberRange = {}): number | undefined {
  const v = present(body, name);
  if (v === undefined) return undefined;
  const kind = range.integer ? "an integer" : "a number";
  if (typeof v !== "number" || !Number.isFinite(v)) throw wrongType(name, kind, v);
  if (range.integer && !Number.isSafeInteger(v)) throw wrongType(name, kind, v);
  const { min, max } = range;
  const low = min === undefined || (range.minExclusive ? v > min : v >= min);
  const high = max === undefined || v <= max;
  if (!low || !high) {
    const bounds =
      min !== undefined && max !== undefined
        ? `in ${range.minExclusive ? "(" : "["}${min}, ${max}]`
        : min !== undefined
          ? `${range.minExclusive ? ">" : ">="} ${min}`
          : `<= ${max}`;
    throw invalidField(name, `Invalid '${name}': expected ${kind} ${bounds}, got ${v}.`);
  }
  return v;
}

/** A string or a list of strings, as `stop` is given. */
export function optionalStrings(body: Body, name: string, maxCount: number): string[] | undefined {
  const v = present(body, name);
  if (v === undefined) return undefined;
  const list = typeof v === "string" ? [v] : v;
  if (!Array.isArray(list) || list.some((s) => typeof s !== "string")) {
    throw wrongType(name, "a string or an array of strings", v);
  }
  if (list.length > maxCount)
    throw invalidField(name, `Invalid '${name}': at most ${maxCount} strings, got ${list.length}.`);
  if (list.some((s) => s === ""))
    throw invalidField(name, `Invalid '${name}': the strings must not be empty.`);
  return list as string[];
}
