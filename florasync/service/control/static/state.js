// What the control page's modules share: the API's prefix and the last snapshot with what the
// user started from it.

export const API = "/api/v1";

export const page = {
  snapshot: null, // the last `snapshot` event of the stream
  retrying: new Map(), // path -> when its retry was accepted: the button stays "Queued"
  allFailures: null, // every failure, fetched page by page once the user asks for them
  allFailuresFor: null, // the failure count they were fetched for
  fetchingFailures: false,
};
