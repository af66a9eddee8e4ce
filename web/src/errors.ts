// Backend errors (docs/PROTOCOL.md, docs/SERVER.md) as sentences a person can act on.
export interface ApiErrorInfo {
  code: string;
  message: string;
}

const explanations: Record<string, string> = {
  overloaded: 'The server is busy: its request queue is full. Try again in a moment.',
  context_length_exceeded: "This is too long for the model's context window. Shorten the prompt, lower max tokens, or start a new conversation.",
  unauthorized: 'The server needs an API key. Enter it in Settings.',
  invalid_api_key: 'The server needs an API key. Enter it in Settings.',
  shutting_down: 'The server is shutting down. The request will work again once it is back.',
  loading: 'The server is still loading its model. Try again in a few seconds.',
  model_not_found: 'The server does not serve that model.',
  invalid_request: 'The server rejected the request.',
  invalid_json: 'The server could not read the request.',
  message_too_big: 'The message is too big for the server (4 MiB at most).',
  disconnected: 'The connection to the server was lost before the answer finished.',
  timeout: "The request ran past the server's time limit.",
  backend_unavailable: 'The back end serving this request went away, and no other could take it. Try again.',
};

export function describeError(e: ApiErrorInfo): { title: string; detail: string } {
  const title = explanations[e.code] ?? 'The server reported an error.';
  return { title, detail: e.message && e.message !== title ? e.message : '' };
}
