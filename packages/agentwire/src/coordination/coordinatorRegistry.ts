import type { EventEngine } from '../engine/types.js';
import { UserCoordinator, type CoordinatorOptions } from './userCoordinator.js';

/**
 * Hands out the single coordinator of each user. The same instance is returned while any of
 * the user's connections is admitted; it removes itself when its last connection is torn down.
 */
export class CoordinatorRegistry {
  readonly #byUser = new Map<string, UserCoordinator>();

  readonly #engine: EventEngine;
  readonly #options: CoordinatorOptions;

  constructor(engine: EventEngine, options: CoordinatorOptions) {
    this.#engine = engine;
    this.#options = options;
  }

  getOrCreate(userId: string): UserCoordinator {
    let coordinator = this.#byUser.get(userId);
    if (!coordinator) {
      coordinator = new UserCoordinator(userId, this.#engine, this.#options, (idle) => {
        if (this.#byUser.get(idle.userId) === idle) this.#byUser.delete(idle.userId);
      });
      this.#byUser.set(userId, coordinator);
    }
    return coordinator;
  }

  get(userId: string): UserCoordinator | undefined {
    return this.#byUser.get(userId);
  }

  get size(): number {
    return this.#byUser.size;
  }

  values(): IterableIterator<UserCoordinator> {
    return this.#byUser.values();
  }
}
