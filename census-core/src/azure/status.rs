//! What an answer of the ingestion endpoint means for the batch it answers: one pure function,
//! [`policy`], from the answer (or the failure to get one) to a [`Verdict`]. Counting, warning,
//! storing and sending again are the transport's; following a redirect is the delivery's.

use std::time::Duration;

/// Statuses of a whole batch that are worth sending it again for. (401 and 403 too: with
/// Entra ID authentication a token may have just expired, and the reference exporters retry
/// them.)
const RETRYABLE: &[u16] = &[401, 403, 408, 429, 500, 502, 503, 504];
/// Per-item statuses of a 206 that are worth sending the item again for.
const RETRYABLE_ITEM: &[u16] = &[408, 429, 500, 502, 503, 504];

/// The answer to one POST, as far as the policy needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// The endpoint answered.
    Status {
        /// The HTTP status.
        status: u16,
        /// `Retry-After`, when it was there and readable.
        retry_after: Option<Duration>,
        /// `Location`, when it was there.
        location: Option<String>,
        /// The body of a 206 (empty for other statuses).
        body: Vec<u8>,
    },
    /// No answer: the connection was refused or cut, the request timed out, TLS failed.
    Failed(String),
}

/// Why envelopes were dropped for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dropped {
    /// A 413 for a batch of one: it cannot be made smaller.
    TooLarge,
    /// The endpoint refused them with this status (400, 402, 404, 439, other 4xx, a redirect
    /// that cannot be followed).
    Rejected(u16),
}

/// What to do with a batch after an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Every envelope was accepted.
    Done,
    /// Send every envelope again, not before `after` when the service said so.
    Retry {
        /// `Retry-After`, when given.
        after: Option<Duration>,
        /// What went wrong, for the warning.
        reason: String,
    },
    /// Too large (413): send each half on its own.
    Split,
    /// Drop every envelope, and count them.
    Drop(Dropped),
    /// Send the same body to `location` (307, 308).
    Redirect {
        /// The redirect's status.
        status: u16,
        /// Where to.
        location: String,
    },
    /// Some envelopes were accepted (206): those at `retry` are sent again, the `rejected`
    /// others are dropped.
    Partial {
        /// How many were accepted.
        accepted: usize,
        /// How many were refused for good.
        rejected: usize,
        /// The indexes (into the batch) of those worth sending again, in order.
        retry: Vec<usize>,
        /// `Retry-After`, when given.
        after: Option<Duration>,
    },
}

/// What `answer` means for a batch of `items` envelopes.
pub(crate) fn policy(answer: &Answer, items: usize) -> Verdict {
    let (status, retry_after, location, body) = match answer {
        Answer::Status {
            status,
            retry_after,
            location,
            body,
        } => (*status, *retry_after, location, body),
        Answer::Failed(reason) => {
            return Verdict::Retry {
                after: None,
                reason: reason.clone(),
            };
        }
    };
    match status {
        200 => Verdict::Done,
        206 => partial(body, items, retry_after),
        307 | 308 => match location {
            Some(location) => Verdict::Redirect {
                status,
                location: location.clone(),
            },
            None => Verdict::Drop(Dropped::Rejected(status)),
        },
        413 if items > 1 => Verdict::Split,
        413 => Verdict::Drop(Dropped::TooLarge),
        _ if RETRYABLE.contains(&status) => Verdict::Retry {
            after: retry_after,
            reason: format!("status {status}"),
        },
        // Another server error: worth trying again, on the transport's own backoff.
        500..=599 => Verdict::Retry {
            after: None,
            reason: format!("status {status}"),
        },
        _ => Verdict::Drop(Dropped::Rejected(status)),
    }
}

/// A 206: the items listed as failed with a retryable status are sent again, the other listed
/// ones are dropped, the rest were accepted. An unreadable body sends every item again (which
/// failed is unknown).
fn partial(body: &[u8], items: usize, after: Option<Duration>) -> Verdict {
    let Some(errors) = parse_errors(body) else {
        return Verdict::Retry {
            after,
            reason: "206 with an unreadable body".to_owned(),
        };
    };
    let mut failed = vec![false; items];
    let mut retry = Vec::new();
    let mut rejected = 0;
    for (index, status) in errors {
        // An index out of range, or listed twice, is ignored.
        let Some(slot) = failed.get_mut(index) else {
            continue;
        };
        if std::mem::replace(slot, true) {
            continue;
        }
        if RETRYABLE_ITEM.contains(&status) {
            retry.push(index);
        } else {
            rejected += 1;
        }
    }
    retry.sort_unstable();
    Verdict::Partial {
        accepted: items - retry.len() - rejected,
        rejected,
        retry,
        after,
    }
}

/// The `errors` of a 206 body: `(index, statusCode)` pairs; `None` when unreadable.
fn parse_errors(body: &[u8]) -> Option<Vec<(usize, u16)>> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let errors = value.get("errors")?.as_array()?;
    errors
        .iter()
        .map(|e| {
            let index = usize::try_from(e.get("index")?.as_u64()?).ok()?;
            let status = u16::try_from(e.get("statusCode")?.as_u64()?).ok()?;
            Some((index, status))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16) -> Answer {
        Answer::Status {
            status,
            retry_after: None,
            location: None,
            body: Vec::new(),
        }
    }

    fn retry(after: Option<u64>, reason: &str) -> Verdict {
        Verdict::Retry {
            after: after.map(Duration::from_secs),
            reason: reason.to_owned(),
        }
    }

    fn with_retry_after(answer: Answer, seconds: u64) -> Answer {
        match answer {
            Answer::Status {
                status,
                location,
                body,
                ..
            } => Answer::Status {
                status,
                retry_after: Some(Duration::from_secs(seconds)),
                location,
                body,
            },
            failed => failed,
        }
    }

    fn with_body(answer: Answer, text: &str) -> Answer {
        match answer {
            Answer::Status {
                status,
                retry_after,
                location,
                ..
            } => Answer::Status {
                status,
                retry_after,
                location,
                body: text.as_bytes().to_vec(),
            },
            failed => failed,
        }
    }

    fn redirect(code: u16, location: &str) -> Answer {
        Answer::Status {
            status: code,
            retry_after: None,
            location: Some(location.to_owned()),
            body: Vec::new(),
        }
    }

    const PARTIAL: &str = r#"{"itemsReceived":5,"itemsAccepted":2,"errors":[
        {"index":0,"statusCode":500,"message":"x"},
        {"index":3,"statusCode":400},
        {"index":4,"statusCode":429},
        {"index":4,"statusCode":400},
        {"index":9,"statusCode":500}]}"#;

    /// Every status the transport knows, and what it does with a batch of four (or one).
    #[test]
    fn every_status_and_failure() {
        let table: Vec<(Answer, usize, Verdict)> = vec![
            (status(200), 4, Verdict::Done),
            // Retryable statuses: the service's Retry-After is kept.
            (status(401), 4, retry(None, "status 401")),
            (status(403), 4, retry(None, "status 403")),
            (status(408), 4, retry(None, "status 408")),
            (
                with_retry_after(status(429), 7),
                4,
                retry(Some(7), "status 429"),
            ),
            (status(500), 4, retry(None, "status 500")),
            (status(502), 4, retry(None, "status 502")),
            (
                with_retry_after(status(503), 2),
                4,
                retry(Some(2), "status 503"),
            ),
            (status(504), 4, retry(None, "status 504")),
            // Another 5xx: retried on the transport's own backoff, its Retry-After ignored.
            (
                with_retry_after(status(507), 9),
                4,
                retry(None, "status 507"),
            ),
            // Refused for good.
            (status(400), 4, Verdict::Drop(Dropped::Rejected(400))),
            (status(402), 4, Verdict::Drop(Dropped::Rejected(402))),
            (status(404), 4, Verdict::Drop(Dropped::Rejected(404))),
            (status(439), 4, Verdict::Drop(Dropped::Rejected(439))),
            (status(302), 4, Verdict::Drop(Dropped::Rejected(302))),
            // Too large: split, unless there is one envelope.
            (status(413), 4, Verdict::Split),
            (status(413), 1, Verdict::Drop(Dropped::TooLarge)),
            // Redirects: followed with a Location, refused without one.
            (
                redirect(307, "https://moved.example/"),
                4,
                Verdict::Redirect {
                    status: 307,
                    location: "https://moved.example/".to_owned(),
                },
            ),
            (
                redirect(308, "https://moved.example/"),
                4,
                Verdict::Redirect {
                    status: 308,
                    location: "https://moved.example/".to_owned(),
                },
            ),
            (status(307), 4, Verdict::Drop(Dropped::Rejected(307))),
            (status(308), 4, Verdict::Drop(Dropped::Rejected(308))),
            // Partial success: retryable items again, the others dropped, duplicates and
            // indexes out of range ignored.
            (
                with_retry_after(with_body(status(206), PARTIAL), 3),
                5,
                Verdict::Partial {
                    accepted: 2,
                    rejected: 1,
                    retry: vec![0, 4],
                    after: Some(Duration::from_secs(3)),
                },
            ),
            (
                with_body(status(206), r#"{"errors":[]}"#),
                3,
                Verdict::Partial {
                    accepted: 3,
                    rejected: 0,
                    retry: vec![],
                    after: None,
                },
            ),
            (
                with_body(status(206), "not json"),
                3,
                retry(None, "206 with an unreadable body"),
            ),
            (
                with_body(status(206), r#"{"errors":[{"index":"x"}]}"#),
                3,
                retry(None, "206 with an unreadable body"),
            ),
            // No answer at all.
            (
                Answer::Failed("connection refused".to_owned()),
                4,
                retry(None, "connection refused"),
            ),
        ];
        for (answer, items, expected) in table {
            assert_eq!(
                policy(&answer, items),
                expected,
                "{answer:?}, {items} items"
            );
        }
    }
}
