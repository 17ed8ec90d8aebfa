/**
 * "Did you mean …?" for mistyped names (command-line flags, subcommands, environment
 * variables). Pure: no I/O.
 */

/** Names longer than this are not compared (the distance costs length × length). */
const MAX_COMPARED_LENGTH = 128;

/**
 * Levenshtein distance with adjacent transpositions (optimal string alignment): insertions,
 * deletions, substitutions and swaps of two neighbours each cost 1, so `chta` is 1 from `chat`.
 */
export function editDistance(a: string, b: string): number {
  // Rows i-2, i-1 and i of the (a.length + 1) x (b.length + 1) table.
  let beforePrevious: number[] = [];
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      let cost = Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) cost = Math.min(cost, beforePrevious[j - 2]! + 1);
      current[j] = cost;
    }
    beforePrevious = previous;
    previous = current;
  }
  return previous[b.length]!;
}

/**
 * The candidate `input` most likely is a typo of, or null when none is close. Letter case is
 * ignored. Close means an edit distance of at most a quarter of the candidate's length (at
 * least 1), or `input` being the start of the candidate (3 characters or more, an abbreviation).
 * The smallest distance wins; among equals, the earliest candidate. An exact match is returned
 * as itself (distance 0).
 */
export function didYouMean(input: string, candidates: Iterable<string>): string | null {
  if (input.length === 0 || input.length > MAX_COMPARED_LENGTH) return null;
  const typed = input.toLowerCase();
  let best: string | null = null;
  let bestDistance = Infinity;
  for (const candidate of candidates) {
    if (candidate.length > MAX_COMPARED_LENGTH) continue;
    const known = candidate.toLowerCase();
    const distance = editDistance(typed, known);
    const isAbbreviation = typed.length >= 3 && known.startsWith(typed);
    if (distance > Math.max(1, Math.floor(known.length / 4)) && !isAbbreviation) continue;
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  return best;
}
