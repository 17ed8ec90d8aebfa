/**
 * Holds the next call that passes through it until the test lets it go: a step caught between
 * its read and its write, while the test changes what it read.
 */
export class NextCallGate {
  #hold: { arrived: () => void; released: Promise<void> } | null = null;

  /** The next `pass()` waits; `arrived` resolves when it does, and `release` lets it go. */
  holdNext(): { arrived: Promise<void>; release: () => void } {
    let arrived!: () => void;
    let release!: () => void;
    const reached = new Promise<void>((resolve) => (arrived = resolve));
    this.#hold = { arrived, released: new Promise<void>((resolve) => (release = resolve)) };
    return { arrived: reached, release };
  }

  /** Waits here when the gate was armed (once per `holdNext`). */
  async pass(): Promise<void> {
    const hold = this.#hold;
    this.#hold = null;
    if (hold) {
      hold.arrived();
      await hold.released;
    }
  }
}
