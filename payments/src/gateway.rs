//! What orderlog asks of a payment provider, in its own terms: authorize an amount (create
//! and confirm an intent with manual capture), capture some or all of it, cancel it,
//! refund. Every call carries the idempotency key of the *requested* event it answers, so
//! the same call after a crash is the same call to the provider.

use async_trait::async_trait;
use orderlog_domain::Money;

/// An authorization to ask for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorizeRequest {
    pub key: String,
    pub amount: Money,
    pub payment_method: String,
    /// orderlog's ids, sent as metadata so that webhooks name the payment they are about.
    pub payment_id: String,
    pub order_id: String,
}

/// The provider's view of an intent after a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Intent {
    pub provider_ref: String,
    /// `requires_capture`, `requires_action`, `succeeded`, `canceled`, `requires_payment_method`…
    pub status: String,
    pub amount: i64,
    pub amount_capturable: i64,
    pub amount_received: i64,
    /// Unix seconds after which the authorization can no longer be captured.
    pub capture_before: Option<i64>,
    /// What the shopper must do, when the status is `requires_action`.
    pub next_action: Option<String>,
}

/// A refund the provider made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refund {
    pub refund_ref: String,
    pub amount: i64,
    pub status: String,
}

/// Why a call did not do what it asked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// The provider decided no (a card declined, an amount too large to capture): final,
    /// recorded as the operation's failure.
    #[error("{code}: {message}")]
    Refused { code: String, message: String },
    /// The call's fate is unknown or the provider is unwell (a timeout, a 5xx, a dropped
    /// connection, a concurrent request under the same key): try again with the same key.
    #[error("provider unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait PaymentGateway: Send + Sync + 'static {
    /// The provider's name as webhooks and payments record it (`stripe`, `sim`).
    fn name(&self) -> &str;
    async fn authorize(&self, request: &AuthorizeRequest) -> Result<Intent, GatewayError>;
    async fn capture(
        &self,
        key: &str,
        provider_ref: &str,
        amount: Money,
        final_capture: bool,
    ) -> Result<Intent, GatewayError>;
    async fn cancel(&self, key: &str, provider_ref: &str) -> Result<Intent, GatewayError>;
    async fn refund(&self, key: &str, provider_ref: &str, amount: Money) -> Result<Refund, GatewayError>;
}
