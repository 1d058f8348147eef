//! Taxes: regions with a rate per tax class, and the arithmetic that turns a rate into
//! tax lines. A region is a country (`DE`) or a country's subdivision (`US-CA`); each is a
//! stream (`taxregion-{id}`) whose events are every rate it ever had, so an order's tax
//! can be explained from the log as of the instant it was placed.
//!
//! **Which rate applies** ([`RateTable`], the built-in [`TaxProvider`]): the region of the
//! address's subdivision when one is defined, else the region of its country; in it, the
//! rate of the line's tax class, else the rate of the region's default class (shipping is
//! always taxed at the default class). A customer in one of the region's exempt groups pays
//! a rate of 0, and the tax line says so. No region for the address: the checkout is
//! refused, naming the address's country.
//!
//! **Rounding**: per line, half to even, in the currency's minor units. A tax-exclusive
//! amount `a` at `r` basis points carries `round(a·r/10 000)` of tax on top; a
//! tax-inclusive amount `g` is split into `net = round(g·10 000/(10 000 + r))` and
//! `tax = g − net`, so net and tax always add up to the gross exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::cart::{check_text, Address};
use crate::{Decider, Money, Rejection};

/// Highest rate, in basis points (100 %).
pub const TAX_RATE_BPS_MAX: u32 = 10_000;
/// Most tax classes one region may rate.
pub const TAX_CLASSES_MAX: usize = 50;
/// Most customer groups one region may exempt.
pub const EXEMPT_GROUPS_MAX: usize = 50;

/// `numerator / denominator` rounded half to even (`denominator` > 0).
pub fn div_half_even(numerator: i128, denominator: i128) -> i128 {
    debug_assert!(denominator > 0);
    let quotient = numerator.div_euclid(denominator);
    let remainder = numerator.rem_euclid(denominator);
    match (2 * remainder).cmp(&denominator) {
        std::cmp::Ordering::Less => quotient,
        std::cmp::Ordering::Greater => quotient + 1,
        std::cmp::Ordering::Equal => quotient + (quotient & 1),
    }
}

/// A tax region's id: an ISO 3166-1 alpha-2 country code, optionally followed by `-` and
/// an ISO 3166-2 subdivision code (`DE`, `US-CA`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct TaxRegionId(String);

/// The grammar of a tax region id, as the OpenAPI document states it.
pub const TAX_REGION_PATTERN: &str = "^[A-Z]{2}(-[A-Z0-9]{1,3})?$";

impl TaxRegionId {
    pub fn parse(value: impl Into<String>) -> Result<TaxRegionId, Rejection> {
        let value = value.into();
        let (country, subdivision) = match value.split_once('-') {
            Some((c, s)) => (c, Some(s)),
            None => (value.as_str(), None),
        };
        let country_ok = country.len() == 2 && country.chars().all(|c| c.is_ascii_uppercase());
        let subdivision_ok = subdivision.is_none_or(|s| {
            (1..=3).contains(&s.len()) && s.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        });
        if !country_ok || !subdivision_ok {
            return Err(Rejection::invalid(format!(
                "region_id: '{value}' is not a country code ('DE') or a country and subdivision ('US-CA')"
            )));
        }
        Ok(TaxRegionId(value))
    }

    /// The region of a country.
    pub fn country(address: &Address) -> Option<TaxRegionId> {
        TaxRegionId::parse(address.country.clone()).ok()
    }

    /// The region of the address's subdivision, when it names one.
    pub fn subdivision(address: &Address) -> Option<TaxRegionId> {
        let subdivision = address.subdivision.as_ref()?;
        TaxRegionId::parse(format!("{}-{subdivision}", address.country)).ok()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TaxRegionId {
    type Error = Rejection;
    fn try_from(value: String) -> Result<Self, Rejection> {
        TaxRegionId::parse(value)
    }
}

impl Serialize for TaxRegionId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl fmt::Display for TaxRegionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TaxRegionState {
    pub defined: bool,
    pub name: String,
    /// Rate per tax class, in basis points.
    pub rates: BTreeMap<String, u32>,
    /// The class whose rate applies to a class the region does not name, and to shipping.
    pub default_class: String,
    /// Customer groups that pay no tax here.
    pub exempt_groups: BTreeSet<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum TaxRegionCommand {
    /// Defines the region, or replaces its rates from now on.
    Define {
        name: String,
        rates: BTreeMap<String, u32>,
        default_class: String,
        #[serde(default)]
        exempt_groups: BTreeSet<String>,
    },
}

events! {
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaxRegionEvent {
    TaxRegionDefined {
        name: String,
        rates: BTreeMap<String, u32>,
        default_class: String,
        exempt_groups: BTreeSet<String>
    },
}
}

pub struct TaxRegion;

impl Decider for TaxRegion {
    type Command = TaxRegionCommand;
    type Event = TaxRegionEvent;
    type State = TaxRegionState;

    fn decide(command: &TaxRegionCommand, state: &TaxRegionState) -> Result<Vec<TaxRegionEvent>, Rejection> {
        let TaxRegionCommand::Define { name, rates, default_class, exempt_groups } = command;
        check_text("name", name)?;
        check_text("default_class", default_class)?;
        if rates.is_empty() || rates.len() > TAX_CLASSES_MAX {
            return Err(Rejection::invalid(format!("rates: between 1 and {TAX_CLASSES_MAX} tax classes")));
        }
        for (class, rate) in rates {
            check_text("rates (class)", class)?;
            if *rate > TAX_RATE_BPS_MAX {
                return Err(Rejection::invalid(format!(
                    "rates.{class}: {rate} basis points exceeds {TAX_RATE_BPS_MAX} (100 %)"
                )));
            }
        }
        if !rates.contains_key(default_class) {
            // Two valid values that contradict each other.
            return Err(Rejection::conflict(format!("default_class: '{default_class}' has no rate in `rates`")));
        }
        if exempt_groups.len() > EXEMPT_GROUPS_MAX {
            return Err(Rejection::invalid(format!("exempt_groups: more than {EXEMPT_GROUPS_MAX} groups")));
        }
        for group in exempt_groups {
            crate::ids::check_id("exempt_groups", group)?;
        }
        let same = state.defined
            && state.name == *name
            && state.rates == *rates
            && state.default_class == *default_class
            && state.exempt_groups == *exempt_groups;
        if same {
            return Ok(vec![]);
        }
        Ok(vec![TaxRegionEvent::TaxRegionDefined {
            name: name.clone(),
            rates: rates.clone(),
            default_class: default_class.clone(),
            exempt_groups: exempt_groups.clone(),
        }])
    }

    fn evolve(mut state: TaxRegionState, event: &TaxRegionEvent) -> TaxRegionState {
        let TaxRegionEvent::TaxRegionDefined { name, rates, default_class, exempt_groups } = event;
        state.defined = true;
        state.name = name.clone();
        state.rates = rates.clone();
        state.default_class = default_class.clone();
        state.exempt_groups = exempt_groups.clone();
        state
    }
}

/// The rate one amount is taxed at, and where it comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaxRate {
    /// The region (or the provider's name for it) the rate is from.
    pub region: String,
    /// The class whose rate it is.
    pub tax_class: String,
    pub rate_bps: u32,
    /// The customer's group is exempt here: the rate is 0.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exempt: bool,
}

/// Who computes tax rates. The built-in provider is [`RateTable`], over the tax regions in
/// the log; another (a tax service) implements this trait and is given to the command
/// service, which records the rates it answered in the order, so replaying the log never
/// asks it again.
pub trait TaxProvider: Send + Sync {
    /// The rate for `tax_class` (the default class when `None`, as for shipping) at
    /// `address`, for a customer in `groups`; refused, naming the address, when no rate is
    /// known there.
    fn rate(&self, address: &Address, tax_class: Option<&str>, groups: &BTreeSet<String>)
        -> Result<TaxRate, Rejection>;
}

/// The built-in [`TaxProvider`]: the tax regions defined in the log (see the module
/// documentation for the rule).
pub struct RateTable<'a> {
    pub regions: BTreeMap<TaxRegionId, &'a TaxRegionState>,
}

impl TaxProvider for RateTable<'_> {
    fn rate(
        &self,
        address: &Address,
        tax_class: Option<&str>,
        groups: &BTreeSet<String>,
    ) -> Result<TaxRate, Rejection> {
        let defined = |id: Option<TaxRegionId>| {
            let id = id?;
            self.regions.get(&id).filter(|r| r.defined).map(|r| (id, *r))
        };
        let (id, region) = defined(TaxRegionId::subdivision(address))
            .or_else(|| defined(TaxRegionId::country(address)))
            .ok_or_else(|| {
                let place = match &address.subdivision {
                    Some(s) => format!("{}-{s} or {}", address.country, address.country),
                    None => address.country.clone(),
                };
                Rejection::conflict(format!("tax: no tax region is defined for {place}"))
            })?;
        let class = tax_class.filter(|c| region.rates.contains_key(*c)).unwrap_or(&region.default_class);
        let exempt = groups.iter().any(|g| region.exempt_groups.contains(g));
        let rate_bps = if exempt { 0 } else { region.rates.get(class).copied().unwrap_or(0) };
        Ok(TaxRate { region: id.to_string(), tax_class: class.to_string(), rate_bps, exempt })
    }
}

/// The tax on one amount: what it was taxed on (net), the tax, and whether the tax was
/// already inside the amount.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaxLine {
    #[serde(flatten)]
    pub rate: TaxRate,
    /// The amount without tax.
    pub net: Money,
    pub tax: Money,
    /// The tax was part of the price (a tax-inclusive price), not added on top.
    pub included: bool,
}

/// The tax line of `amount` at `rate`: for a tax-inclusive amount, its split into net and
/// tax (net + tax = amount exactly); otherwise the tax added on top.
pub fn tax_line(amount: Money, inclusive: bool, rate: TaxRate) -> TaxLine {
    let a = i128::from(amount.amount);
    let r = i128::from(rate.rate_bps);
    let (net, tax) = if inclusive {
        let net = div_half_even(a * 10_000, 10_000 + r);
        (net, a - net)
    } else {
        (a, div_half_even(a * r, 10_000))
    };
    // Both are between 0 and `amount` (or amount × 2 at 100 %), which fits an i64 for any
    // amount a cart may hold.
    let money = |v: i128| Money::new(i64::try_from(v).expect("a share of an amount fits"), amount.currency);
    TaxLine { rate, net: money(net), tax: money(tax), included: inclusive }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Currency;

    fn eur(amount: i64) -> Money {
        Money::new(amount, Currency::parse("EUR").unwrap())
    }
    fn rate(bps: u32) -> TaxRate {
        TaxRate { region: "DE".into(), tax_class: "standard".into(), rate_bps: bps, exempt: false }
    }

    #[test]
    fn half_to_even() {
        assert_eq!(div_half_even(25, 10), 2);
        assert_eq!(div_half_even(35, 10), 4);
        assert_eq!(div_half_even(26, 10), 3);
        assert_eq!(div_half_even(-25, 10), -2);
        assert_eq!(div_half_even(24, 10), 2);
    }

    #[test]
    fn exclusive_and_inclusive_lines() {
        // 10.50 at 10 %: 1.05 exactly; 0.25 at 10 %: 0.025 → 0.02 (to even).
        assert_eq!(tax_line(eur(1_050), false, rate(1_000)).tax.amount, 105);
        assert_eq!(tax_line(eur(25), false, rate(1_000)).tax.amount, 2);
        assert_eq!(tax_line(eur(35), false, rate(1_000)).tax.amount, 4);
        // 119.00 with 19 % inside: 100.00 net, 19.00 tax.
        let line = tax_line(eur(11_900), true, rate(1_900));
        assert_eq!((line.net.amount, line.tax.amount), (10_000, 1_900));
    }

    #[test]
    fn region_ids() {
        assert!(TaxRegionId::parse("DE").is_ok());
        assert!(TaxRegionId::parse("US-CA").is_ok());
        for bad in ["de", "DEU", "US-", "US-CALI", "U1"] {
            assert!(TaxRegionId::parse(bad).unwrap_err().reason.contains("region_id"), "{bad}");
        }
    }

    #[test]
    fn the_subdivision_wins_then_the_country_then_nothing() {
        let define = |rate: u32| {
            TaxRegion::fold(
                &TaxRegion::decide(
                    &TaxRegionCommand::Define {
                        name: "r".into(),
                        rates: BTreeMap::from([("standard".into(), rate), ("reduced".into(), 700)]),
                        default_class: "standard".into(),
                        exempt_groups: BTreeSet::from(["diplomats".into()]),
                    },
                    &TaxRegionState::default(),
                )
                .unwrap(),
            )
        };
        let (us, ca) = (define(0), define(725));
        let table = RateTable {
            regions: BTreeMap::from([
                (TaxRegionId::parse("US").unwrap(), &us),
                (TaxRegionId::parse("US-CA").unwrap(), &ca),
            ]),
        };
        let mut address = crate::testing::address();
        address.country = "US".into();
        let none = BTreeSet::new();
        assert_eq!(table.rate(&address, Some("standard"), &none).unwrap().rate_bps, 0);
        address.subdivision = Some("CA".into());
        let rate = table.rate(&address, Some("books"), &none).unwrap();
        assert_eq!((rate.region.as_str(), rate.tax_class.as_str(), rate.rate_bps), ("US-CA", "standard", 725));
        assert_eq!(table.rate(&address, Some("reduced"), &none).unwrap().rate_bps, 700);
        let exempt = table.rate(&address, None, &BTreeSet::from(["diplomats".to_string()])).unwrap();
        assert!(exempt.exempt && exempt.rate_bps == 0);
        address.country = "FR".into();
        let err = table.rate(&address, None, &none).unwrap_err();
        assert!(err.reason.contains("no tax region is defined for FR-CA or FR"), "{}", err.reason);
    }

    #[test]
    fn a_default_class_needs_a_rate() {
        let define = TaxRegionCommand::Define {
            name: "Germany".into(),
            rates: BTreeMap::from([("standard".into(), 1_900)]),
            default_class: "reduced".into(),
            exempt_groups: BTreeSet::new(),
        };
        let err = TaxRegion::decide(&define, &TaxRegionState::default()).unwrap_err();
        assert!(err.reason.contains("default_class"), "{}", err.reason);
    }
}
