/**
 * The known names closest to a misspelled one: within two edits, or starting with what was
 * typed (`--heartbeat` -> `--heartbeat-ms`), nearest first, at most three. Pure; the names are
 * short, so the quadratic edit distance costs nothing.
 */
export function didYouMean(typed: string, known: Iterable<string>): string[] {
  const scored: Array<[string, number]> = [];
  for (const name of known) {
    const distance = editDistance(typed, name);
    if (distance <= 2 || (typed.length > 0 && name.startsWith(typed))) scored.push([name, distance]);
  }
  return scored
    .sort((a, b) => a[1] - b[1])
    .slice(0, 3)
    .map(([name]) => name);
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length]!;
}
