// One check for "this parsed JSON value is an object", used where files' fields are validated.

/** A parsed JSON value that is an object (not null, not an array). */
export function isJsonObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
