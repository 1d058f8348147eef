//! The Stripe adapter: the PaymentIntents API as Stripe speaks it — form-encoded bodies,
//! the secret key as a bearer token, an `Idempotency-Key` header on every POST, manual
//! capture with `amount_to_capture` and `final_capture`, refunds by payment intent, and
//! Stripe's error object (`{"error": {"type", "code", "message"}}`). Given Stripe's base
//! URL and a real secret key it talks to Stripe; the tests give it the simulator's.

use std::time::Duration;

use async_trait::async_trait;
use orderlog_domain::Money;
use serde_json::Value;

use crate::gateway::{AuthorizeRequest, GatewayError, Intent, PaymentGateway, Refund};

/// Stripe's API.
pub const STRIPE_API: &str = "https://api.stripe.com";
/// How long one call may take before its fate counts as unknown (and it is retried).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

pub struct StripeGateway {
    base: String,
    secret_key: String,
    name: String,
    client: reqwest::Client,
}

impl StripeGateway {
    /// `base`: `https://api.stripe.com` or a simulator's `http://127.0.0.1:PORT`.
    pub fn new(base: &str, secret_key: &str) -> StripeGateway {
        StripeGateway::named(base, secret_key, "stripe", CALL_TIMEOUT)
    }

    pub fn named(base: &str, secret_key: &str, name: &str, timeout: Duration) -> StripeGateway {
        let client = reqwest::Client::builder().timeout(timeout).build().expect("an HTTP client builds");
        StripeGateway {
            base: base.trim_end_matches('/').to_string(),
            secret_key: secret_key.to_string(),
            name: name.to_string(),
            client,
        }
    }

    async fn post(&self, path: &str, key: &str, form: &[(&str, String)]) -> Result<Value, GatewayError> {
        let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.secret_key)
            .header("Idempotency-Key", key)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| GatewayError::Unavailable(format!("POST {path}: {e}")))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| GatewayError::Unavailable(format!("POST {path}: {e}")))?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|_| GatewayError::Unavailable(format!("POST {path}: {status} with a body that is not JSON")))?;
        if status.is_success() {
            return Ok(value);
        }
        let error = &value["error"];
        let code = error["decline_code"]
            .as_str()
            .or(error["code"].as_str())
            .or(error["type"].as_str())
            .unwrap_or("unknown")
            .to_string();
        let message = error["message"].as_str().unwrap_or("no message").to_string();
        // 409: another request under this key is running; 429: rate limited; 5xx: the
        // provider's trouble. The call's fate is unknown, so it is tried again as it was.
        if status.as_u16() == 409 || status.as_u16() == 429 || status.is_server_error() {
            return Err(GatewayError::Unavailable(format!("POST {path}: {status}: {code}: {message}")));
        }
        Err(GatewayError::Refused { code, message })
    }
}

fn intent(value: &Value) -> Result<Intent, GatewayError> {
    let int = |field: &str| value[field].as_i64().unwrap_or(0);
    let provider_ref =
        value["id"].as_str().ok_or_else(|| GatewayError::Unavailable("a payment intent without an id".to_string()))?;
    let capture_before = value["latest_charge"]["payment_method_details"]["card"]["capture_before"].as_i64();
    let next_action = value["next_action"]["type"].as_str().map(str::to_string);
    Ok(Intent {
        provider_ref: provider_ref.to_string(),
        status: value["status"].as_str().unwrap_or("unknown").to_string(),
        amount: int("amount"),
        amount_capturable: int("amount_capturable"),
        amount_received: int("amount_received"),
        capture_before,
        next_action,
    })
}

#[async_trait]
impl PaymentGateway for StripeGateway {
    fn name(&self) -> &str {
        &self.name
    }

    async fn authorize(&self, request: &AuthorizeRequest) -> Result<Intent, GatewayError> {
        let form = [
            ("amount", request.amount.amount.to_string()),
            ("currency", request.amount.currency.code().to_ascii_lowercase()),
            ("payment_method", request.payment_method.clone()),
            ("payment_method_types[]", "card".to_string()),
            ("confirm", "true".to_string()),
            ("capture_method", "manual".to_string()),
            ("expand[]", "latest_charge".to_string()),
            ("metadata[payment_id]", request.payment_id.clone()),
            ("metadata[order_id]", request.order_id.clone()),
        ];
        intent(&self.post("/v1/payment_intents", &request.key, &form).await?)
    }

    async fn capture(
        &self,
        key: &str,
        provider_ref: &str,
        amount: Money,
        final_capture: bool,
    ) -> Result<Intent, GatewayError> {
        let form = [("amount_to_capture", amount.amount.to_string()), ("final_capture", final_capture.to_string())];
        intent(&self.post(&format!("/v1/payment_intents/{provider_ref}/capture"), key, &form).await?)
    }

    async fn cancel(&self, key: &str, provider_ref: &str) -> Result<Intent, GatewayError> {
        let form = [("cancellation_reason", "requested_by_customer".to_string())];
        intent(&self.post(&format!("/v1/payment_intents/{provider_ref}/cancel"), key, &form).await?)
    }

    async fn refund(&self, key: &str, provider_ref: &str, amount: Money) -> Result<Refund, GatewayError> {
        let form = [
            ("payment_intent", provider_ref.to_string()),
            ("amount", amount.amount.to_string()),
            ("metadata[idempotency_key]", key.to_string()),
        ];
        let value = self.post("/v1/refunds", key, &form).await?;
        Ok(Refund {
            refund_ref: value["id"].as_str().unwrap_or_default().to_string(),
            amount: value["amount"].as_i64().unwrap_or(0),
            status: value["status"].as_str().unwrap_or("unknown").to_string(),
        })
    }
}
