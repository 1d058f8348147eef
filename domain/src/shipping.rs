//! Shipping rates. A zone (`shippingzone-{id}`) serves a set of countries in one currency
//! and offers shipping options: a flat price, a price that drops to nothing above a
//! threshold, or a price by weight band. A country belongs to at most one zone per
//! currency: the currency's index (`shipping-{CUR}`, [`ShippingIndex`]) maps each country to
//! its zone and is changed in the same append as the zone, so a cart's address names
//! exactly one zone. A cart picks an option by id; its price is always the zone's.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::cart::check_text;
use crate::{Currency, Decider, Money, Rejection, ShippingOptionId, ShippingZoneId};

/// Most options one zone may offer.
pub const OPTIONS_MAX: usize = 20;
/// Most countries one zone may serve.
pub const COUNTRIES_MAX: usize = 250;
/// Most weight bands one option may have.
pub const BANDS_MAX: usize = 20;

/// A weight band: carts up to `up_to_grams` (inclusive) pay `price`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightBand {
    pub up_to_grams: u64,
    pub price: Money,
}

/// How an option is priced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ShippingRate {
    Flat {
        price: Money,
    },
    /// `price`, or nothing when the goods (after discounts) come to at least `threshold`.
    FreeAbove {
        price: Money,
        threshold: Money,
    },
    /// The first band (in ascending weight) the cart's weight fits; a heavier cart is not
    /// offered the option.
    ByWeight {
        bands: Vec<WeightBand>,
    },
}

/// An option a zone offers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShippingOption {
    pub id: ShippingOptionId,
    pub name: String,
    pub rate: ShippingRate,
}

impl ShippingOption {
    fn check(&self, currency: Currency) -> Result<(), Rejection> {
        let field = format!("options.{}", self.id);
        check_text(&format!("{field}.name"), &self.name)?;
        let in_currency = |what: &str, m: &Money| -> Result<(), Rejection> {
            crate::money::check_amount(&format!("{field}.{what}"), m.amount, 0)?;
            if m.currency != currency {
                return Err(Rejection::conflict(format!(
                    "{field}.{what}: in {}, but the zone is in {currency}",
                    m.currency
                )));
            }
            Ok(())
        };
        match &self.rate {
            ShippingRate::Flat { price } => in_currency("price", price),
            ShippingRate::FreeAbove { price, threshold } => {
                in_currency("price", price)?;
                in_currency("threshold", threshold)
            }
            ShippingRate::ByWeight { bands } => {
                if bands.is_empty() || bands.len() > BANDS_MAX {
                    return Err(Rejection::invalid(format!("{field}.bands: between 1 and {BANDS_MAX} bands")));
                }
                for (i, band) in bands.iter().enumerate() {
                    in_currency(&format!("bands[{i}].price"), &band.price)?;
                    if i > 0 && band.up_to_grams <= bands[i - 1].up_to_grams {
                        return Err(Rejection::conflict(format!(
                            "{field}.bands: weights must rise ({} g after {} g)",
                            band.up_to_grams,
                            bands[i - 1].up_to_grams
                        )));
                    }
                }
                Ok(())
            }
        }
    }

    /// The price of shipping goods worth `goods` weighing `grams`; `None` when the option
    /// does not take them (too heavy).
    pub fn price(&self, goods: Money, grams: u64) -> Option<Money> {
        match &self.rate {
            ShippingRate::Flat { price } => Some(*price),
            ShippingRate::FreeAbove { price, threshold } => {
                Some(if goods.amount >= threshold.amount { Money::zero(price.currency) } else { *price })
            }
            ShippingRate::ByWeight { bands } => bands.iter().find(|b| grams <= b.up_to_grams).map(|b| b.price),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ShippingZoneState {
    pub defined: bool,
    pub name: String,
    pub currency: Option<Currency>,
    pub countries: BTreeSet<String>,
    /// Whether its prices include tax.
    pub prices_include_tax: bool,
    pub options: Vec<ShippingOption>,
}

impl ShippingZoneState {
    pub fn option(&self, id: &ShippingOptionId) -> Option<&ShippingOption> {
        self.options.iter().find(|o| o.id == *id)
    }

    /// The options that take goods worth `goods` weighing `grams`, with their prices.
    pub fn offered(&self, goods: Money, grams: u64) -> Vec<(&ShippingOption, Money)> {
        self.options.iter().filter_map(|o| o.price(goods, grams).map(|p| (o, p))).collect()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ShippingZoneCommand {
    /// Defines the zone, or replaces its countries and options from now on.
    Define {
        name: String,
        currency: Currency,
        countries: BTreeSet<String>,
        #[serde(default)]
        prices_include_tax: bool,
        options: Vec<ShippingOption>,
    },
}

events! {
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShippingZoneEvent {
    ShippingZoneDefined {
        name: String,
        currency: Currency,
        countries: BTreeSet<String>,
        prices_include_tax: bool,
        options: Vec<ShippingOption>
    },
}
}

pub struct ShippingZone;

impl Decider for ShippingZone {
    type Command = ShippingZoneCommand;
    type Event = ShippingZoneEvent;
    type State = ShippingZoneState;

    fn decide(command: &ShippingZoneCommand, state: &ShippingZoneState) -> Result<Vec<ShippingZoneEvent>, Rejection> {
        let ShippingZoneCommand::Define { name, currency, countries, prices_include_tax, options } = command;
        check_text("name", name)?;
        if let Some(old) = state.currency.filter(|c| c != currency) {
            return Err(Rejection::conflict(format!("currency: the zone is in {old}; it cannot change to {currency}")));
        }
        if countries.is_empty() || countries.len() > COUNTRIES_MAX {
            return Err(Rejection::invalid(format!("countries: between 1 and {COUNTRIES_MAX} countries")));
        }
        for country in countries {
            if country.len() != 2 || !country.chars().all(|c| c.is_ascii_uppercase()) {
                return Err(Rejection::invalid(format!(
                    "countries: '{country}' is not an ISO 3166-1 alpha-2 code such as 'DE'"
                )));
            }
        }
        if options.is_empty() || options.len() > OPTIONS_MAX {
            return Err(Rejection::invalid(format!("options: between 1 and {OPTIONS_MAX} options")));
        }
        let mut ids = BTreeSet::new();
        for option in options {
            if !ids.insert(&option.id) {
                return Err(Rejection::conflict(format!("options: '{}' is named twice", option.id)));
            }
            option.check(*currency)?;
        }
        let same = state.defined
            && state.name == *name
            && state.countries == *countries
            && state.prices_include_tax == *prices_include_tax
            && state.options == *options;
        if same {
            return Ok(vec![]);
        }
        Ok(vec![ShippingZoneEvent::ShippingZoneDefined {
            name: name.clone(),
            currency: *currency,
            countries: countries.clone(),
            prices_include_tax: *prices_include_tax,
            options: options.clone(),
        }])
    }

    fn evolve(mut state: ShippingZoneState, event: &ShippingZoneEvent) -> ShippingZoneState {
        let ShippingZoneEvent::ShippingZoneDefined { name, currency, countries, prices_include_tax, options } = event;
        state.defined = true;
        state.name = name.clone();
        state.currency = Some(*currency);
        state.countries = countries.clone();
        state.prices_include_tax = *prices_include_tax;
        state.options = options.clone();
        state
    }
}

/// Which zone serves each country, in one currency: its stream is `shipping-{CUR}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ShippingIndexState {
    pub countries: BTreeMap<String, ShippingZoneId>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ShippingIndexCommand {
    /// The zone now serves exactly `countries`.
    Assign { zone_id: ShippingZoneId, countries: BTreeSet<String> },
}

events! {
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShippingIndexEvent {
    ShippingCountriesAssigned { zone_id: ShippingZoneId, countries: BTreeSet<String> },
    ShippingCountriesReleased { zone_id: ShippingZoneId, countries: BTreeSet<String> },
}
}

pub struct ShippingIndex;

impl Decider for ShippingIndex {
    type Command = ShippingIndexCommand;
    type Event = ShippingIndexEvent;
    type State = ShippingIndexState;

    fn decide(
        command: &ShippingIndexCommand,
        state: &ShippingIndexState,
    ) -> Result<Vec<ShippingIndexEvent>, Rejection> {
        let ShippingIndexCommand::Assign { zone_id, countries } = command;
        let taken: Vec<String> = countries
            .iter()
            .filter_map(|c| state.countries.get(c).filter(|z| *z != zone_id).map(|z| format!("{c} (zone {z})")))
            .collect();
        if !taken.is_empty() {
            return Err(Rejection::conflict(format!(
                "countries: already served by another zone in this currency: {}",
                taken.join(", ")
            )));
        }
        let new: BTreeSet<String> = countries.iter().filter(|c| !state.countries.contains_key(*c)).cloned().collect();
        let gone: BTreeSet<String> = state
            .countries
            .iter()
            .filter(|(c, z)| *z == zone_id && !countries.contains(*c))
            .map(|(c, _)| c.clone())
            .collect();
        let mut events = Vec::new();
        if !gone.is_empty() {
            events.push(ShippingIndexEvent::ShippingCountriesReleased { zone_id: zone_id.clone(), countries: gone });
        }
        if !new.is_empty() {
            events.push(ShippingIndexEvent::ShippingCountriesAssigned { zone_id: zone_id.clone(), countries: new });
        }
        Ok(events)
    }

    fn evolve(mut state: ShippingIndexState, event: &ShippingIndexEvent) -> ShippingIndexState {
        match event {
            ShippingIndexEvent::ShippingCountriesAssigned { zone_id, countries } => {
                state.countries.extend(countries.iter().map(|c| (c.clone(), zone_id.clone())));
            }
            ShippingIndexEvent::ShippingCountriesReleased { countries, .. } => {
                state.countries.retain(|c, _| !countries.contains(c));
            }
        }
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eur(amount: i64) -> Money {
        Money::new(amount, Currency::parse("EUR").unwrap())
    }
    fn option(id: &str, rate: ShippingRate) -> ShippingOption {
        ShippingOption { id: ShippingOptionId::parse(id).unwrap(), name: id.into(), rate }
    }

    #[test]
    fn rates_flat_free_above_and_by_weight() {
        let flat = option("std", ShippingRate::Flat { price: eur(490) });
        assert_eq!(flat.price(eur(10), 99_999), Some(eur(490)));
        let free = option("free", ShippingRate::FreeAbove { price: eur(490), threshold: eur(5_000) });
        assert_eq!(free.price(eur(4_999), 1), Some(eur(490)));
        assert_eq!(free.price(eur(5_000), 1), Some(eur(0)));
        let bands = vec![
            WeightBand { up_to_grams: 1_000, price: eur(400) },
            WeightBand { up_to_grams: 5_000, price: eur(900) },
        ];
        let heavy = option("heavy", ShippingRate::ByWeight { bands });
        assert_eq!(heavy.price(eur(1), 1_000), Some(eur(400)));
        assert_eq!(heavy.price(eur(1), 1_001), Some(eur(900)));
        assert_eq!(heavy.price(eur(1), 5_001), None);
    }

    #[test]
    fn a_country_has_one_zone_per_currency() {
        let eu = ShippingZoneId::parse("eu").unwrap();
        let de = ShippingZoneId::parse("de").unwrap();
        let assign = |zone: &ShippingZoneId, countries: &[&str]| ShippingIndexCommand::Assign {
            zone_id: zone.clone(),
            countries: countries.iter().map(|c| c.to_string()).collect(),
        };
        let index =
            ShippingIndex::fold(&ShippingIndex::decide(&assign(&eu, &["DE", "FR"]), &Default::default()).unwrap());
        let err = ShippingIndex::decide(&assign(&de, &["DE"]), &index).unwrap_err();
        assert!(err.reason.contains("DE (zone eu)"), "{}", err.reason);
        let events = ShippingIndex::decide(&assign(&eu, &["FR", "AT"]), &index).unwrap();
        let index = events.iter().fold(index, ShippingIndex::evolve);
        assert_eq!(index.countries.keys().collect::<Vec<_>>(), ["AT", "FR"]);
        assert!(ShippingIndex::decide(&assign(&de, &["DE"]), &index).is_ok());
    }

    #[test]
    fn options_are_checked() {
        let define = |options: Vec<ShippingOption>| ShippingZoneCommand::Define {
            name: "EU".into(),
            currency: Currency::parse("EUR").unwrap(),
            countries: BTreeSet::from(["DE".into()]),
            prices_include_tax: true,
            options,
        };
        let usd = Money::new(1, Currency::parse("USD").unwrap());
        let err =
            ShippingZone::decide(&define(vec![option("x", ShippingRate::Flat { price: usd })]), &Default::default())
                .unwrap_err();
        assert!(err.reason.contains("USD"), "{}", err.reason);
        let falling = ShippingRate::ByWeight {
            bands: vec![WeightBand { up_to_grams: 5, price: eur(1) }, WeightBand { up_to_grams: 5, price: eur(2) }],
        };
        assert!(ShippingZone::decide(&define(vec![option("x", falling)]), &Default::default())
            .unwrap_err()
            .reason
            .contains("rise"));
        let twice =
            vec![option("x", ShippingRate::Flat { price: eur(1) }), option("x", ShippingRate::Flat { price: eur(2) })];
        assert!(ShippingZone::decide(&define(twice), &Default::default()).unwrap_err().reason.contains("twice"));
    }
}
