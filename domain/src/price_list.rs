//! Price lists and the rule that picks a price. A variant has a default price per currency
//! (its product); a price list overrides it for the SKUs it names, in one currency, while
//! it is in force: for a sales channel, from a start and until an end (a weekend sale), at
//! a priority. Each list is a stream (`pricelist-{id}`), and every list of a currency is
//! named in that currency's index stream (`prices-{CUR}`, [`PriceIndex`]), appended to in
//! the same append that creates the list, so whoever prices a line loads exactly the lists
//! that could apply.
//!
//! **Which price wins** ([`quote`]): among the lists of the cart's currency that are in
//! force at the instant of pricing (`starts_at` ≤ t < `ends_at`, either bound open when
//! absent), not archived, whose channel is absent or the cart's, whose customer group is
//! absent or one the customer is in, and that price the SKU:
//! the highest priority; at equal priority the lowest price; at equal price the smallest
//! list id. When no list applies, the variant's default price in that currency; when it has
//! none, the SKU cannot be sold in that currency.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::cart::check_text;
use crate::product::ProductState;
use crate::{Currency, Decider, Money, PriceListId, Rejection, Sku};

/// Most SKUs one price list may price.
pub const PRICE_LIST_SKUS_MAX: usize = 10_000;
/// Most prices one command may set (a request of that many stays well under the API's
/// body limit).
pub const PRICES_PER_COMMAND_MAX: usize = 200;

/// Checks that a window (a price list's, a promotion's) ends after it starts. Each bound is
/// valid alone; together they can contradict each other, which is a 409 (a request the API
/// document's schema cannot tell from a good one).
pub fn check_window(starts_at: Option<DateTime<Utc>>, ends_at: Option<DateTime<Utc>>) -> Result<(), Rejection> {
    match (starts_at, ends_at) {
        (Some(start), Some(end)) if end <= start => {
            Err(Rejection::conflict(format!("ends_at: {end} is not after starts_at {start}")))
        }
        _ => Ok(()),
    }
}

/// When and for whom a price list is in force.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceListRules {
    /// The sales channel it is for; every channel when absent.
    #[serde(default)]
    pub channel: Option<String>,
    /// In force from this instant on (inclusive); from the start when absent.
    #[serde(default)]
    pub starts_at: Option<DateTime<Utc>>,
    /// In force until this instant (exclusive); for good when absent.
    #[serde(default)]
    pub ends_at: Option<DateTime<Utc>>,
    /// The customer group it is for; every customer when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_group: Option<String>,
}

impl PriceListRules {
    fn check(&self) -> Result<(), Rejection> {
        if let Some(channel) = &self.channel {
            check_text("channel", channel)?;
        }
        if let Some(group) = &self.customer_group {
            crate::ids::check_id("customer_group", group)?;
        }
        check_window(self.starts_at, self.ends_at)
    }

    /// Whether the list is in force at `at` for `channel` and a customer in `groups`.
    pub fn applies(&self, at: DateTime<Utc>, channel: Option<&str>, groups: &BTreeSet<String>) -> bool {
        self.starts_at.is_none_or(|s| s <= at)
            && self.ends_at.is_none_or(|e| at < e)
            && self.channel.as_deref().is_none_or(|c| Some(c) == channel)
            && self.customer_group.as_ref().is_none_or(|g| groups.contains(g))
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PriceListState {
    pub created: bool,
    pub name: String,
    pub currency: Option<Currency>,
    /// Higher wins.
    pub priority: u32,
    /// Whether its prices include tax.
    pub tax_inclusive: bool,
    pub rules: PriceListRules,
    pub archived: bool,
    pub prices: BTreeMap<Sku, Money>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PriceListCommand {
    Create {
        name: String,
        currency: Currency,
        #[serde(default)]
        priority: u32,
        #[serde(default)]
        tax_inclusive: bool,
        #[serde(default)]
        rules: PriceListRules,
    },
    /// Sets the prices of these SKUs (others stay).
    SetPrices {
        prices: BTreeMap<Sku, Money>,
    },
    RemovePrices {
        skus: BTreeSet<Sku>,
    },
    /// Ends the list for good: it prices nothing from then on.
    Archive {},
}

events! {
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PriceListEvent {
    PriceListCreated { name: String, currency: Currency, priority: u32, tax_inclusive: bool, rules: PriceListRules },
    ListPricesSet { prices: BTreeMap<Sku, Money> },
    ListPricesRemoved { skus: BTreeSet<Sku> },
    PriceListArchived {},
}
}

pub struct PriceList;

impl Decider for PriceList {
    type Command = PriceListCommand;
    type Event = PriceListEvent;
    type State = PriceListState;

    fn decide(command: &PriceListCommand, state: &PriceListState) -> Result<Vec<PriceListEvent>, Rejection> {
        use PriceListCommand as C;
        use PriceListEvent as E;
        if let C::Create { name, currency, priority, tax_inclusive, rules } = command {
            if state.created {
                return Err(Rejection::conflict("price list: already exists"));
            }
            check_text("name", name)?;
            rules.check()?;
            return Ok(vec![E::PriceListCreated {
                name: name.clone(),
                currency: *currency,
                priority: *priority,
                tax_inclusive: *tax_inclusive,
                rules: rules.clone(),
            }]);
        }
        let currency = match (state.created, state.currency) {
            (true, Some(currency)) => currency,
            _ => return Err(Rejection::not_found("price list: does not exist")),
        };
        if state.archived {
            return Err(Rejection::conflict("price list: archived; it can no longer change"));
        }
        let events = match command {
            C::Create { .. } => unreachable!("handled above"),
            C::SetPrices { prices } => {
                if prices.is_empty() || prices.len() > PRICES_PER_COMMAND_MAX {
                    return Err(Rejection::invalid(format!("prices: between 1 and {PRICES_PER_COMMAND_MAX} SKUs")));
                }
                for (sku, price) in prices {
                    crate::money::check_amount(&format!("prices.{sku}"), price.amount, 0)?;
                    if price.currency != currency {
                        // A valid price that the list's own currency contradicts.
                        return Err(Rejection::conflict(format!(
                            "prices.{sku}: in {}, but the price list is in {currency}",
                            price.currency
                        )));
                    }
                }
                let new = prices.keys().filter(|s| !state.prices.contains_key(*s)).count();
                if state.prices.len() + new > PRICE_LIST_SKUS_MAX {
                    return Err(Rejection::conflict(format!(
                        "price list: would price more than {PRICE_LIST_SKUS_MAX} SKUs"
                    )));
                }
                let changed: BTreeMap<Sku, Money> = prices
                    .iter()
                    .filter(|(s, p)| state.prices.get(*s) != Some(*p))
                    .map(|(s, p)| (s.clone(), *p))
                    .collect();
                if changed.is_empty() {
                    return Ok(vec![]);
                }
                vec![E::ListPricesSet { prices: changed }]
            }
            C::RemovePrices { skus } => {
                let present: BTreeSet<Sku> = skus.iter().filter(|s| state.prices.contains_key(*s)).cloned().collect();
                if present.is_empty() {
                    return Ok(vec![]);
                }
                vec![E::ListPricesRemoved { skus: present }]
            }
            C::Archive {} => vec![E::PriceListArchived {}],
        };
        Ok(events)
    }

    fn evolve(mut state: PriceListState, event: &PriceListEvent) -> PriceListState {
        use PriceListEvent as E;
        match event {
            E::PriceListCreated { name, currency, priority, tax_inclusive, rules } => {
                state.created = true;
                state.name = name.clone();
                state.currency = Some(*currency);
                state.priority = *priority;
                state.tax_inclusive = *tax_inclusive;
                state.rules = rules.clone();
            }
            E::ListPricesSet { prices } => state.prices.extend(prices.iter().map(|(s, p)| (s.clone(), *p))),
            E::ListPricesRemoved { skus } => state.prices.retain(|s, _| !skus.contains(s)),
            E::PriceListArchived {} => state.archived = true,
        }
        state
    }
}

/// The price lists of one currency: its stream is `prices-{CUR}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PriceIndexState {
    pub lists: BTreeSet<PriceListId>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PriceIndexCommand {
    List { price_list_id: PriceListId },
}

events! {
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PriceIndexEvent {
    PriceListListed { price_list_id: PriceListId },
}
}

pub struct PriceIndex;

impl Decider for PriceIndex {
    type Command = PriceIndexCommand;
    type Event = PriceIndexEvent;
    type State = PriceIndexState;

    fn decide(command: &PriceIndexCommand, state: &PriceIndexState) -> Result<Vec<PriceIndexEvent>, Rejection> {
        let PriceIndexCommand::List { price_list_id } = command;
        match state.lists.contains(price_list_id) {
            true => Ok(vec![]),
            false => Ok(vec![PriceIndexEvent::PriceListListed { price_list_id: price_list_id.clone() }]),
        }
    }

    fn evolve(mut state: PriceIndexState, event: &PriceIndexEvent) -> PriceIndexState {
        let PriceIndexEvent::PriceListListed { price_list_id } = event;
        state.lists.insert(price_list_id.clone());
        state
    }
}

/// Where a line's price came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PriceSource {
    /// The variant's default price.
    Default,
    PriceList {
        price_list_id: PriceListId,
    },
}

/// The price a SKU gets in a context, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    pub sku: Sku,
    pub title: String,
    pub unit_price: Money,
    pub tax_inclusive: bool,
    pub tax_class: String,
    pub source: PriceSource,
    /// The variant's weight.
    #[serde(default)]
    pub weight_grams: u32,
    /// Whether the variant is shipped.
    #[serde(default = "crate::cart::ships")]
    pub requires_shipping: bool,
}

/// Who is buying, in what, when: what a price depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PriceContext<'a> {
    pub currency: Currency,
    pub at: DateTime<Utc>,
    pub channel: Option<&'a str>,
    /// The customer's groups (a guest is in none).
    pub groups: &'a BTreeSet<String>,
}

/// The price `sku` gets from its product and the price lists of the context's currency,
/// by the rule in this module's documentation; refused when the variant cannot be sold or
/// has no price in that currency.
pub fn quote(
    sku: &Sku,
    product: &ProductState,
    lists: &[(&PriceListId, &PriceListState)],
    context: &PriceContext,
) -> Result<Quote, Rejection> {
    let variant = product.sellable(sku)?;
    let best = lists
        .iter()
        .filter(|(_, l)| {
            !l.archived
                && l.currency == Some(context.currency)
                && l.rules.applies(context.at, context.channel, context.groups)
        })
        .filter_map(|(id, l)| l.prices.get(sku).map(|p| (*id, *l, *p)))
        .min_by(|(a_id, a, a_price), (b_id, b, b_price)| {
            b.priority.cmp(&a.priority).then(a_price.amount.cmp(&b_price.amount)).then(a_id.cmp(b_id))
        });
    let (unit_price, tax_inclusive, source) = match best {
        Some((id, list, price)) => (price, list.tax_inclusive, PriceSource::PriceList { price_list_id: id.clone() }),
        None => {
            let price = product
                .default_price(sku, context.currency)
                .ok_or_else(|| Rejection::conflict(format!("sku {sku}: has no price in {}", context.currency)))?;
            (price, product.prices_include_tax, PriceSource::Default)
        }
    };
    Ok(Quote {
        sku: sku.clone(),
        title: variant.title.clone(),
        unit_price,
        tax_inclusive,
        tax_class: product.tax_class.clone(),
        source,
        weight_grams: variant.weight_grams,
        requires_shipping: variant.requires_shipping,
    })
}
