/**
 * Bytes held by many owners against one limit (the raw frames every not-yet-ready connection
 * of a gateway holds). Pure bookkeeping: the owners take and give back what they hold.
 */
export class ByteBudget {
  #used = 0;

  constructor(readonly limit: number) {}

  get used(): number {
    return this.#used;
  }

  /** Whether `bytes` more would still fit. */
  hasRoomFor(bytes: number): boolean {
    return this.#used + bytes <= this.limit;
  }

  /** Takes `bytes` if they fit; false (and nothing taken) if not. */
  take(bytes: number): boolean {
    if (!this.hasRoomFor(bytes)) return false;
    this.#used += bytes;
    return true;
  }

  give(bytes: number): void {
    this.#used -= bytes;
  }
}
