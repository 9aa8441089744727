//! The API's one error type. Every error the API answers is an [`ApiError`]: a status, a message, and for a
//! refusal that passes (a busy ledger or market, a full mempool) when to try again. It renders itself as
//! `{"error": "…"}` with its status, and `Retry-After` when it passes. The node's refusals map to it in one place
//! each: the ledger's ([`crate::ledger::Error`]), the market's ([`crate::market::Refused`]) and placing an offer's
//! ([`crate::app::place::PlaceError`]).

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Seconds a client is told to wait (`Retry-After`) after a refusal that passes within about a block's time: the
/// ledger or market busy (its input queue full), the mempool or the barter board full, too many of the author's
/// entries waiting in the mempool. Not after a stopped node or an unreadable store, nor a pool full of offers
/// (which empties only as offers expire or fill).
pub const RETRY_AFTER_S: u32 = 1;

/// An error the API answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    /// Set for refusals that pass: the client may send the same request again after this many seconds.
    retry_after_s: Option<u32>,
    /// The id of what the error is about, when the client may not know it (an entry already waiting or on the
    /// ledger: `{"error": …, "id": …}`, so that it can follow that entry).
    id: Option<protocol::Id>,
    /// Why an offer was refused, as a word for programs.
    reason: Option<Reason>,
}

/// Why the node's market refused an offer: the ledger's verdict on its author, named for programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// An override froze the author's trading.
    Frozen,
    /// The author's reputation tier is below the pool's `tier_min`.
    Tier,
    /// The author cannot pay for the offer with its other open offers, or post its collateral.
    InsufficientFunds,
    /// The offer would buy beyond an anti-hoarding limit.
    HoardingLimit,
    /// Another rule of the ledger's settlement.
    Unsettleable,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into(), retry_after_s: None, id: None, reason: None }
    }

    /// The same error, naming what it is about.
    #[must_use]
    pub fn about(self, id: protocol::Id) -> ApiError {
        ApiError { id: Some(id), ..self }
    }

    /// The same error, with the word for why an offer was refused.
    #[must_use]
    pub fn because(self, reason: Reason) -> ApiError {
        ApiError { reason: Some(reason), ..self }
    }

    /// A refusal that passes: answered with `Retry-After`.
    pub fn passing(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { retry_after_s: Some(RETRY_AFTER_S), ..ApiError::new(status, message) }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    /// What was asked existed but this node no longer keeps it (a block it pruned); another node may.
    pub fn gone(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::GONE, message)
    }

    /// The node cannot serve this now, nor says when it will (a part of it stopped, or is missing).
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }

    /// The node failed (its store or its signer), not the request.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// A node started without a genesis file keeps no ledger.
    pub fn no_ledger() -> ApiError {
        ApiError::unavailable("this node keeps no ledger (no genesis file)")
    }

    /// A node without a ledger runs no market.
    pub fn no_market() -> ApiError {
        ApiError::unavailable("this node runs no market (it needs a ledger: a genesis file)")
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            super::doc::ErrorBody { error: self.message, id: self.id.map(|id| id.to_hex()), reason: self.reason };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after_s {
            response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
        }
        response
    }
}

impl From<&crate::ledger::Error> for ApiError {
    /// The ledger's refusals: the request's fault (400), a conflict with what the ledger holds (409), too many of
    /// the author's entries waiting (429), the ledger stopped, busy, full or its store unreadable (503).
    fn from(refused: &crate::ledger::Error) -> ApiError {
        use crate::ledger::Error;
        use crate::ledger::Rejected;
        let message = refused.to_string();
        match refused {
            // A store that cannot be read is the operator's problem, not a refusal that passes.
            Error::Stopped | Error::Unreadable(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message),
            Error::Busy | Error::Syncing => ApiError::passing(StatusCode::SERVICE_UNAVAILABLE, message),
            Error::Refused(rejected) => match rejected {
                Rejected::Invalid(_) | Rejected::NotAnEntry(_) => ApiError::bad_request(message),
                Rejected::Duplicate | Rejected::Included | Rejected::CannotPay { .. } => {
                    ApiError::new(StatusCode::CONFLICT, message)
                }
                Rejected::AuthorFull(_) => ApiError::passing(StatusCode::TOO_MANY_REQUESTS, message),
                Rejected::Full => ApiError::passing(StatusCode::SERVICE_UNAVAILABLE, message),
            },
        }
    }
}

impl From<crate::ledger::Error> for ApiError {
    fn from(refused: crate::ledger::Error) -> ApiError {
        ApiError::from(&refused)
    }
}

impl From<crate::app::place::PlaceError> for ApiError {
    fn from(problem: crate::app::place::PlaceError) -> ApiError {
        ApiError::from(&problem)
    }
}

/// A JSON answer with 202 Accepted: what a write answers when the node took it (it is not on the ledger yet).
pub struct Accepted<T>(pub T);

impl<T: serde::Serialize> IntoResponse for Accepted<T> {
    fn into_response(self) -> Response {
        (StatusCode::ACCEPTED, Json(self.0)).into_response()
    }
}

/// What a handler answers: its JSON, or an error.
pub type Answer<T> = Result<Json<T>, ApiError>;

/// What a write answers: 202 with its JSON, or an error.
pub type Taken<T> = Result<Accepted<T>, ApiError>;

impl From<&crate::market::Refused> for ApiError {
    /// The market's refusals: the request's fault (400), the account's standing (403), a conflict (409), too many
    /// open offers of the author (429), the market stopped, busy or full, the ledger unreadable or not current (503).
    fn from(refused: &crate::market::Refused) -> ApiError {
        use crate::market::{Refusal as Trader, Refused};
        use ::market::pools::Refusal;
        let message = refused.to_string();
        match refused {
            Refused::Stopped | Refused::Ledger(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message),
            Refused::Busy | Refused::Behind => ApiError::passing(StatusCode::SERVICE_UNAVAILABLE, message),
            Refused::Trader(Trader::UnknownToken(_)) => ApiError::bad_request(message),
            Refused::Trader(Trader::Frozen { .. }) => {
                ApiError::new(StatusCode::FORBIDDEN, message).because(Reason::Frozen)
            }
            Refused::Trader(Trader::Unsettleable(problem)) => {
                use ::ledger::state::EntryError;
                let (status, reason) = match problem {
                    EntryError::InsufficientFunds { .. } => (StatusCode::PAYMENT_REQUIRED, Reason::InsufficientFunds),
                    EntryError::Tier { .. } => (StatusCode::FORBIDDEN, Reason::Tier),
                    EntryError::HoardingLimit { .. } => (StatusCode::FORBIDDEN, Reason::HoardingLimit),
                    EntryError::Frozen { .. } => (StatusCode::FORBIDDEN, Reason::Frozen),
                    _ => (StatusCode::CONFLICT, Reason::Unsettleable),
                };
                ApiError::new(status, message).because(reason)
            }
            Refused::Trader(Trader::Barter(reason)) => match reason {
                ::market::barter::Refusal::Duplicate => ApiError::new(StatusCode::CONFLICT, message),
                ::market::barter::Refusal::Full => ApiError::passing(StatusCode::SERVICE_UNAVAILABLE, message),
                _ => ApiError::bad_request(message),
            },
            Refused::Trader(Trader::Market(reason)) => match reason {
                Refusal::NotAnOffer | Refusal::Expired | Refusal::BelowFee | Refusal::Delivery(_) => {
                    ApiError::bad_request(message)
                }
                Refusal::Duplicate | Refusal::GateClosed | Refusal::Settled => {
                    ApiError::new(StatusCode::CONFLICT, message)
                }
                // Full pools and books empty only as their offers expire or fill: no promise of a time to retry.
                Refusal::OwnerFull => ApiError::new(StatusCode::TOO_MANY_REQUESTS, message),
                Refusal::PoolFull | Refusal::TooManyPools => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message),
            },
        }
    }
}

impl From<&crate::app::place::PlaceError> for ApiError {
    /// An offer of the node that was not placed: its signer failed (500), it is invalid (400), or the market
    /// refused it (as above).
    fn from(problem: &crate::app::place::PlaceError) -> ApiError {
        use crate::app::place::PlaceError;
        match problem {
            PlaceError::Sign(_) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, problem.to_string()),
            PlaceError::Invalid { .. } => ApiError::bad_request(problem.to_string()),
            PlaceError::Refused(refused) => ApiError::from(refused),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Error;
    use crate::ledger::Rejected;

    fn retry_after(error: ApiError) -> Option<String> {
        let response = error.into_response();
        let json = response.headers().get(header::CONTENT_TYPE).is_some_and(|value| value == "application/json");
        assert!(json, "every error is JSON");
        response.headers().get(header::RETRY_AFTER).map(|value| value.to_str().unwrap().to_owned())
    }

    /// A refusal that passes tells the client when to try again; one that does not, does not.
    #[test]
    fn a_refusal_that_passes_says_when_to_try_again() {
        for passing in [Error::Busy, Error::Refused(Rejected::Full), Error::Refused(Rejected::AuthorFull(64))] {
            let error = ApiError::from(&passing);
            assert!(matches!(error.status().as_u16(), 429 | 503), "{passing}");
            assert_eq!(retry_after(error), Some(RETRY_AFTER_S.to_string()), "{passing}");
        }
        let unreadable = Error::Unreadable(anyhow::anyhow!("a disk error"));
        for lasting in
            [Error::Stopped, unreadable, Error::Refused(Rejected::Duplicate), Error::Refused(Rejected::Included)]
        {
            assert_eq!(retry_after(ApiError::from(&lasting)), None, "{lasting}");
        }
        assert_eq!(retry_after(ApiError::from(&crate::market::Refused::Busy)), Some("1".to_owned()));
        let frozen = crate::market::Refused::Trader(crate::market::Refusal::Frozen {
            by: protocol::Id([1; 32]),
            until_height: 5,
        });
        let error = ApiError::from(&frozen);
        assert_eq!(error.status(), StatusCode::FORBIDDEN);
        assert_eq!(retry_after(error), None);
    }
}
