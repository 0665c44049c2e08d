#!/usr/bin/env node
// `make lint`: every document a comment or test name cites must be in the repo.
// Fails on (1) a `*.md` file named in a comment that the repo does not hold, and
// (2) a tag whose list is not in the repo: "defect N" and "Section N" (lists kept
// elsewhere, never here), and the Prism-mock relaxations "R1".."R9" unless
// test/contract/README.md defines that tag. Say the fact instead of the tag.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";

const ROOTS = ["src", "test", "bench", "guest", "scripts"];
const TEXT = /\.(ts|mts|js|mjs|cjs|sh|c|h|py|ya?ml)$|(^|\/)(init|[^./]+)$/;
const RELAXATIONS = "test/contract/README.md";
const SELF = "scripts/check-citations.mjs";

const repo = execFileSync("git", ["rev-parse", "--show-toplevel"], { encoding: "utf8" }).trim();
const tracked = execFileSync("git", ["ls-files", "-z", "--cached", "--others", "--exclude-standard", ...ROOTS], { cwd: repo, encoding: "utf8" })
  .split("\0")
  .filter((f) => f && TEXT.test(f) && fs.existsSync(path.join(repo, f)));
const allFiles = execFileSync("git", ["ls-files", "-z", "--cached", "--others", "--exclude-standard"], { cwd: repo, encoding: "utf8" }).split("\0").filter(Boolean);
const names = new Set(allFiles.flatMap((f) => [f, path.basename(f)]));

const relaxationList = fs.existsSync(path.join(repo, RELAXATIONS)) ? fs.readFileSync(path.join(repo, RELAXATIONS), "utf8") : "";
const definedRelaxation = (n) => new RegExp(`^\\W*R${n}\\b`, "m").test(relaxationList);

/** The comment part of a line (`//`, `#`, or a block comment's line), else null. */
function commentOf(line, inBlock) {
  const t = line.trim();
  if (inBlock || t.startsWith("*") || t.startsWith("/*") || t.startsWith("#")) return t;
  const i = line.indexOf("//");
  return i >= 0 && !/:\/\/$/.test(line.slice(0, i + 2)) ? line.slice(i) : null;
}

const problems = [];
for (const file of tracked) {
  const text = fs.readFileSync(path.join(repo, file), "utf8");
  if (text.includes("\0")) continue;
  let inBlock = false;
  text.split("\n").forEach((line, i) => {
    const where = `${file}:${i + 1}`;
    const comment = commentOf(line, inBlock);
    if (line.includes("/*")) inBlock = !line.includes("*/", line.indexOf("/*"));
    else if (inBlock && line.includes("*/")) inBlock = false;
    // Tags may sit in test names too ("... (defect 8)"), so those are checked on the whole line.
    if (file === SELF) return;
    // A public standard's section (RFC 9110 section 8.3) is a citation anyone can follow.
    const standard = /\bRFC \d+/.test(line);
    for (const m of line.matchAll(/\b(defects? \d+|[Ss]ection \d+(?:\.\d+)?(?:[–-]\d+)?)\b/g)) {
      if (standard && /^[Ss]ection/.test(m[1])) continue;
      problems.push(`${where}: cites "${m[1]}" from a list that is not in the repo: say the fact instead`);
    }
    for (const m of line.matchAll(/\bR(\d+)\b(?:[–-]R(\d+))?/g)) {
      const from = Number(m[1]);
      const to = m[2] ? Number(m[2]) : from;
      for (let n = from; n <= to; n++) if (!definedRelaxation(n)) problems.push(`${where}: cites relaxation R${n}, which ${RELAXATIONS} does not define`);
    }
    if (comment === null) return;
    for (const m of comment.matchAll(/([\w./-]*[\w-]\.md)\b/g)) {
      const ref = m[1].replace(/^\.\//, "");
      const resolved = path.normalize(path.join(path.dirname(file), ref));
      if (!names.has(ref) && !names.has(resolved) && !names.has(path.basename(ref))) problems.push(`${where}: cites ${ref}, which is not in the repo`);
    }
  });
}

if (problems.length > 0) {
  console.error(problems.join("\n"));
  console.error(`${problems.length} citation(s) of documents that are not in the repo`);
  process.exit(1);
}
console.log(`citations: ${tracked.length} files checked, every cited document is in the repo`);
