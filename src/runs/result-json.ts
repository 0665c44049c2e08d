/**
 * What is wrong with a stage's result.json, if anything. Two questions are asked of it:
 * can it be served (`GET …/output-file`: any valid JSON, as the guest wrote it) and can
 * it be published (a JSON object with a string `status`); both read the answer from here.
 */
export type ResultJsonFault = "missing" | "not_json" | "not_object" | "no_status";

/** The first fault of a result.json (absent: `missing`), or null when it is a JSON object with a string `status`. */
export function resultJsonFault(bytes: Buffer | null | undefined): ResultJsonFault | null {
  if (!bytes) return "missing";
  let doc: unknown;
  try {
    doc = JSON.parse(bytes.toString("utf8"));
  } catch {
    return "not_json";
  }
  if (!doc || typeof doc !== "object" || Array.isArray(doc)) return "not_object";
  return typeof (doc as { status?: unknown }).status === "string" ? null : "no_status";
}

/** The fault in words, for `subject` (e.g. "stage build" or "stage build of run r-1"). */
export function describeResultJsonFault(fault: ResultJsonFault, subject: string): string {
  switch (fault) {
    case "missing":
      return `${subject} wrote no /workspace/result.json`;
    case "not_json":
      return `result.json of ${subject} is not valid JSON`;
    case "not_object":
      return `result.json of ${subject} is not a JSON object`;
    case "no_status":
      return `result.json of ${subject} has no string "status"`;
  }
}
