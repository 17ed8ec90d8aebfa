/** What the server puts in the page's `<script type="application/json" id="agentwire-config">`. */
export interface ChatPageConfig {
  /** WebSocket URL, absolute (`wss://…`) or a path resolved against the page (`/ws`). */
  readonly wsUrl: string;
  /** A token the server chose to give this page (dev mode), or null. */
  readonly token: string | null;
}
