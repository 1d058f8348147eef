//! Payments through a provider: [`gateway::PaymentGateway`] (what orderlog asks of one),
//! [`stripe::StripeGateway`] (Stripe's PaymentIntents API), [`sim::Simulator`] (a provider
//! speaking the same protocol that misbehaves on request), [`signature`] (Stripe's webhook
//! signatures), [`webhook`] (a provider's webhook turned into a payment command) and
//! [`process::PaymentProcess`] (the reactor that makes the calls the log asks for).

pub mod gateway;
pub mod process;
pub mod signature;
pub mod sim;
pub mod stripe;
pub mod webhook;
