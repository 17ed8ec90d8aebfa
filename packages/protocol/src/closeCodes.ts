/** Close codes of the contract (PROTOCOL.md section 9). */
export const CloseCode = {
  NORMAL: 1000,
  POLICY_VIOLATION: 1008,
  MESSAGE_TOO_BIG: 1009,
  SERVER_FAULT: 1011,
  SERVICE_RESTART: 1012,
  TRY_AGAIN_LATER: 1013,
  SLOW_CONSUMER: 4008,
  UNAUTHORIZED: 4401,
  FORBIDDEN: 4403,
  AUTH_TIMEOUT: 4408,
  TOO_MANY_CONNECTIONS: 4429,
} as const;

export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode];
