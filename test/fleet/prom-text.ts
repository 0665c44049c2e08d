// A small strict parser of the Prometheus text exposition format (0.0.4) for the fleet
// tests (not a test file; prom-client only writes the format). It throws on anything a
// Prometheus server would reject or that hints at a broken exporter: bad names, labels
// or values, samples without a TYPE, duplicate series, non-cumulative histograms.

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}
export interface Family {
  name: string;
  type: "counter" | "gauge" | "histogram" | "summary" | "untyped";
  help: string;
  samples: Sample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

function parseValue(s: string, line: number): number {
  if (s === "+Inf") return Infinity;
  if (s === "-Inf") return -Infinity;
  if (s === "NaN") return NaN;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(s)) throw new Error(`line ${line}: bad value ${JSON.stringify(s)}`);
  return Number(s);
}

function parseLabels(s: string, line: number): Record<string, string> {
  const out: Record<string, string> = {};
  let i = 0;
  while (i < s.length) {
    const eq = s.indexOf("=", i);
    const name = s.slice(i, eq);
    if (eq < 0 || !LABEL.test(name)) throw new Error(`line ${line}: bad label name ${JSON.stringify(name)}`);
    if (name in out) throw new Error(`line ${line}: label ${name} twice`);
    if (s[eq + 1] !== '"') throw new Error(`line ${line}: label ${name} value is not quoted`);
    let v = "";
    let j = eq + 2;
    for (; j < s.length && s[j] !== '"'; j++) {
      if (s[j] === "\\") {
        const n = s[++j];
        if (n === "n") v += "\n";
        else if (n === "\\" || n === '"') v += n;
        else throw new Error(`line ${line}: bad escape \\${n} in label ${name}`);
      } else v += s[j];
    }
    if (j >= s.length) throw new Error(`line ${line}: unterminated value of label ${name}`);
    out[name] = v;
    i = j + 1;
    if (i < s.length) {
      if (s[i] !== ",") throw new Error(`line ${line}: expected , after label ${name}`);
      i++;
    }
  }
  return out;
}

/** The family a sample name belongs to (histogram/summary series carry suffixes). */
function familyOf(families: Map<string, Family>, name: string): Family | undefined {
  if (families.has(name)) return families.get(name);
  const m = /^(.*)_(bucket|sum|count)$/.exec(name);
  const f = m ? families.get(m[1]) : undefined;
  if (f && (f.type === "histogram" || (f.type === "summary" && m![2] !== "bucket"))) return f;
  return undefined;
}

export function parsePrometheusText(text: string): Map<string, Family> {
  if (text.length && !text.endsWith("\n")) throw new Error("exposition does not end with a newline");
  const families = new Map<string, Family>();
  const series = new Set<string>();
  const lines = text.split("\n").slice(0, -1);
  lines.forEach((raw, idx) => {
    const line = idx + 1;
    if (raw === "") return; // the format allows empty lines (prom-client separates families with them)
    if (raw.startsWith("#")) {
      const m = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(raw);
      if (!m) return; // other comments are allowed
      const [, kind, name, rest] = m;
      if (!NAME.test(name)) throw new Error(`line ${line}: bad metric name ${name}`);
      const f = families.get(name) ?? { name, type: "untyped" as const, help: "", samples: [] };
      if (kind === "TYPE") {
        if (!["counter", "gauge", "histogram", "summary", "untyped"].includes(rest)) throw new Error(`line ${line}: bad type ${rest}`);
        if (f.samples.length) throw new Error(`line ${line}: TYPE of ${name} after its samples`);
        f.type = rest as Family["type"];
      } else f.help = rest;
      families.set(name, f);
      return;
    }
    const m = /^([^\s{]+)(?:\{(.*)\})? (\S+)(?: (-?\d+))?$/.exec(raw);
    if (!m) throw new Error(`line ${line}: not a sample: ${JSON.stringify(raw)}`);
    const [, name, labelText, value] = m;
    if (!NAME.test(name)) throw new Error(`line ${line}: bad metric name ${name}`);
    const f = familyOf(families, name);
    if (!f) throw new Error(`line ${line}: sample ${name} has no TYPE`);
    const labels = parseLabels(labelText ?? "", line);
    const key = `${name}{${Object.entries(labels).sort().map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(",")}}`;
    if (series.has(key)) throw new Error(`line ${line}: duplicate series ${key}`);
    series.add(key);
    f.samples.push({ name, labels, value: parseValue(value, line) });
  });
  for (const f of families.values()) if (f.type === "histogram") checkHistogram(f);
  return families;
}

/** Buckets cumulative, ending at le="+Inf" equal to _count, per label set. */
function checkHistogram(f: Family): void {
  const groups = new Map<string, Sample[]>();
  for (const s of f.samples) {
    const { le, ...rest } = s.labels;
    const k = JSON.stringify(Object.entries(rest).sort());
    if (s.name === `${f.name}_bucket` && le === undefined) throw new Error(`${f.name}: bucket without le`);
    groups.set(k, [...(groups.get(k) ?? []), s]);
  }
  for (const [k, samples] of groups) {
    const buckets = samples.filter((s) => s.name === `${f.name}_bucket`);
    const count = samples.find((s) => s.name === `${f.name}_count`);
    let prev = -Infinity;
    let prevValue = 0;
    for (const b of buckets) {
      const le = parseValue(b.labels.le, 0);
      if (le <= prev || b.value < prevValue) throw new Error(`${f.name}${k}: buckets not increasing/cumulative`);
      prev = le;
      prevValue = b.value;
    }
    if (prev !== Infinity || !count || count.value !== prevValue) throw new Error(`${f.name}${k}: +Inf bucket missing or not equal to _count`);
  }
}

/** The value of the series `name` whose labels include `labels` (exactly one), else undefined. */
export function value(families: Map<string, Family>, name: string, labels: Record<string, string> = {}): number | undefined {
  const f = familyOf(families, name);
  const hits = f?.samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)) ?? [];
  if (hits.length > 1) throw new Error(`${name} ${JSON.stringify(labels)}: ${hits.length} series match`);
  return hits[0]?.value;
}
