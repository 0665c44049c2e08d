/**
 * kill -9 at random points against the built daemon (mock-mode specs), mixed with
 * creates, cancels, re-creates, reads and session appends; after each restart every
 * acknowledged reply is checked. Prints one line per figure (goal 0 for every loss and
 * for outcome flips). Needs `npm run build` first.
 *
 *   npx tsx bench/crash-cycles.ts [CYCLES=24] [SEED]
 */
import { runCrashCycles } from "../test/reliability/crash-cycles.js";

const cycles = Math.max(20, Number(process.argv[2] ?? 24));
const seed = Number(process.argv[3] ?? Date.now() % 2 ** 31);
const r = await runCrashCycles({ cycles, seed, sessions: true, burst: { minMs: 200, spreadMs: 1500 } });

console.log(`crash cycles (kill -9):            ${r.cycles} (seed ${r.seed}, ${r.requests} requests, in flight at kill: min ${Math.min(...r.inflightAtKill)} max ${Math.max(...r.inflightAtKill)})`);
console.log(`acknowledged runs:                 ${r.ackedRuns}`);
console.log(`acknowledged runs lost:            ${r.runsLost} (goal 0)`);
console.log(`acknowledged terminal states:      ${r.ackedTerminal}`);
console.log(`terminal states lost:              ${r.terminalLost} (goal 0)`);
console.log(`acknowledged session messages:     ${r.ackedMessages}`);
console.log(`session messages lost:             ${r.messagesLost} (goal 0)`);
console.log(`outcome flips:                     ${r.outcomeFlips} (goal 0)`);
console.log(`terminal events adopted on restart: ${r.adopted}`);
console.log(`files quarantined:                 ${r.quarantined}`);
console.log(`other problems:                    ${r.problems.length}`);
for (const p of r.problems.slice(0, 20)) console.log(`  ${p}`);
process.exitCode = r.runsLost + r.terminalLost + r.messagesLost + r.outcomeFlips > 0 ? 1 : 0;
