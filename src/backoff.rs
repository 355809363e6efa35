//! Retry waits: backoff with jitter and Retry-After.
