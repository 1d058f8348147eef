//! Money: an integer amount of minor units and an ISO-4217 currency.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Rejection;

/// An ISO-4217 currency, known to this build, with its minor-unit exponent.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency(iso_currency::Currency);

impl Currency {
    /// Parses a three-letter ISO-4217 code ("EUR"). Unknown codes and codes without a
    /// minor unit (gold, SDR, …) are refused.
    pub fn parse(code: &str) -> Result<Currency, Rejection> {
        let currency = iso_currency::Currency::from_code(code)
            .ok_or_else(|| Rejection::invalid(format!("currency: '{code}' is not an ISO-4217 currency code")))?;
        if currency.exponent().is_none() {
            return Err(Rejection::invalid(format!("currency: '{code}' has no minor unit and cannot price goods")));
        }
        Ok(Currency(currency))
    }

    /// Every currency this build accepts (those with a minor unit), by code.
    pub fn all() -> Vec<Currency> {
        use iso_currency::IntoEnumIterator;
        let mut all: Vec<Currency> =
            iso_currency::Currency::iter().filter(|c| c.exponent().is_some()).map(Currency).collect();
        all.sort_by_key(|c| c.code());
        all
    }

    /// The ISO-4217 alphabetic code.
    pub fn code(&self) -> &'static str {
        self.0.code()
    }

    /// Digits after the decimal point: JPY 0, EUR 2, KWD 3.
    pub fn exponent(&self) -> u32 {
        u32::from(self.0.exponent().unwrap_or(0))
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Currency {
    type Err = Rejection;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Currency::parse(s)
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = String::deserialize(deserializer)?;
        Currency::parse(&code).map_err(|r| serde::de::Error::custom(r.reason))
    }
}

/// The largest amount a command may name, in minor units (10¹²: ten billion euros). With
/// at most 100 lines of 10 000 units, no cart's totals can then pass what an `i64` holds.
pub const AMOUNT_MAX: i64 = 1_000_000_000_000;

/// Checks that an amount in a command is from `min` to [`AMOUNT_MAX`].
pub fn check_amount(field: &str, amount: i64, min: i64) -> Result<(), Rejection> {
    if amount < min {
        let rule = if min > 0 { "must be positive" } else { "must not be negative" };
        return Err(Rejection::invalid(format!("{field}: {rule} (got {amount})")));
    }
    if amount > AMOUNT_MAX {
        return Err(Rejection::invalid(format!(
            "{field}: {amount} is more than the {AMOUNT_MAX} minor units an amount may be"
        )));
    }
    Ok(())
}

/// An amount of minor units (cents, yen, fils) in one currency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Money {
    pub amount: i64,
    pub currency: Currency,
}

impl Money {
    pub fn new(amount: i64, currency: Currency) -> Money {
        Money { amount, currency }
    }

    pub fn zero(currency: Currency) -> Money {
        Money::new(0, currency)
    }

    /// Adds two amounts of the same currency; mixing currencies or overflowing is refused.
    pub fn checked_add(self, other: Money) -> Result<Money, Rejection> {
        self.same_currency(other)?;
        let amount = self.amount.checked_add(other.amount).ok_or_else(|| {
            Rejection::invalid(format!("amount: {self} plus {other} is beyond what an amount can hold"))
        })?;
        Ok(Money::new(amount, self.currency))
    }

    pub fn checked_sub(self, other: Money) -> Result<Money, Rejection> {
        self.same_currency(other)?;
        let amount = self.amount.checked_sub(other.amount).ok_or_else(|| {
            Rejection::invalid(format!("amount: {self} minus {other} is beyond what an amount can hold"))
        })?;
        Ok(Money::new(amount, self.currency))
    }

    /// Multiplies by a quantity, refusing overflow.
    pub fn checked_mul(self, quantity: u32) -> Result<Money, Rejection> {
        let amount = self.amount.checked_mul(i64::from(quantity)).ok_or_else(|| {
            Rejection::invalid(format!("amount: {self} times {quantity} is beyond what an amount can hold"))
        })?;
        Ok(Money::new(amount, self.currency))
    }

    /// The share `basis_points / 10_000` of this amount, rounded half away from zero.
    pub fn share_bps(self, basis_points: u32) -> Result<Money, Rejection> {
        let product = i128::from(self.amount) * i128::from(basis_points);
        let rounded = (product + 5_000 * product.signum()) / 10_000;
        let amount = i64::try_from(rounded).map_err(|_| Rejection::invalid("amount: share overflows".to_string()))?;
        Ok(Money::new(amount, self.currency))
    }

    pub fn same_currency(self, other: Money) -> Result<(), Rejection> {
        if self.currency != other.currency {
            return Err(Rejection::invalid(format!(
                "currency: {} cannot be combined with {}",
                other.currency, self.currency
            )));
        }
        Ok(())
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exponent = self.currency.exponent();
        if exponent == 0 {
            return write!(f, "{} {}", self.amount, self.currency);
        }
        let scale = 10_i64.pow(exponent);
        let sign = if self.amount < 0 { "-" } else { "" };
        let abs = self.amount.unsigned_abs();
        write!(
            f,
            "{sign}{}.{:0width$} {}",
            abs / scale as u64,
            abs % scale as u64,
            self.currency,
            width = exponent as usize
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponents_follow_iso_4217() {
        assert_eq!(Currency::parse("JPY").unwrap().exponent(), 0);
        assert_eq!(Currency::parse("EUR").unwrap().exponent(), 2);
        assert_eq!(Currency::parse("KWD").unwrap().exponent(), 3);
    }

    #[test]
    fn unknown_currency_names_the_code() {
        let err = Currency::parse("XYZ").unwrap_err();
        assert!(err.reason.contains("'XYZ'"), "{}", err.reason);
        assert!(Currency::parse("eur").is_err());
    }

    #[test]
    fn currencies_never_mix() {
        let eur = Money::new(100, Currency::parse("EUR").unwrap());
        let usd = Money::new(100, Currency::parse("USD").unwrap());
        assert!(eur.checked_add(usd).is_err());
        assert_eq!(eur.checked_add(eur).unwrap().amount, 200);
    }

    #[test]
    fn display_uses_the_exponent() {
        let kwd = Currency::parse("KWD").unwrap();
        assert_eq!(Money::new(1_234, kwd).to_string(), "1.234 KWD");
        assert_eq!(Money::new(-5, Currency::parse("EUR").unwrap()).to_string(), "-0.05 EUR");
        assert_eq!(Money::new(500, Currency::parse("JPY").unwrap()).to_string(), "500 JPY");
    }

    #[test]
    fn shares_round_half_away_from_zero() {
        let eur = Currency::parse("EUR").unwrap();
        assert_eq!(Money::new(1_005, eur).share_bps(1_000).unwrap().amount, 101);
        assert_eq!(Money::new(1_004, eur).share_bps(1_000).unwrap().amount, 100);
    }
}
