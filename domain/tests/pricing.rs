//! The price rule: for any catalog, any price lists (any currencies, channels, windows,
//! priorities, archived or not) and any instant, `quote` picks the price the documented
//! rule picks, computed here another way (every candidate written out, sorted, the first
//! taken); the catalog built by commands folds back to the same state from its events; and
//! a product or list refuses a price in another currency, naming it.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use orderlog_domain::price_list::{
    quote, PriceContext, PriceList, PriceListCommand, PriceListRules, PriceListState, PriceSource,
};
use orderlog_domain::product::{Product, ProductCommand, ProductState, Variant};
use orderlog_domain::{Currency, Decider, Money, PriceListId, RejectionKind, Sku};
use proptest::prelude::*;

fn currency(i: u8) -> Currency {
    Currency::parse(["EUR", "USD"][i as usize % 2]).unwrap()
}
fn sku(i: u8) -> Sku {
    Sku::parse(["mug", "tea", "pot"][i as usize % 3]).unwrap()
}
fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 0, 0, 0).unwrap()
}
fn channel(i: u8) -> Option<String> {
    [None, Some("web".to_string()), Some("app".to_string())][i as usize % 3].clone()
}

/// A product with the three SKUs, default prices in EUR only for some.
fn product(status: u8, default_prices: [Option<i64>; 3], archived: [bool; 3]) -> ProductState {
    let variants = (0..3u8)
        .map(|i| Variant {
            sku: sku(i),
            title: format!("variant {i}"),
            options: BTreeMap::new(),
            weight_grams: 100,
            prices: default_prices[i as usize].map(|a| Money::new(a, currency(0))).into_iter().collect(),
        })
        .collect();
    let create = ProductCommand::Create {
        title: "Tea set".into(),
        tax_class: "standard".into(),
        prices_include_tax: true,
        variants,
    };
    let mut state = Product::fold(&Product::decide(&create, &ProductState::default()).unwrap());
    for (i, archived) in archived.iter().enumerate() {
        if *archived {
            let events = Product::decide(&ProductCommand::ArchiveVariant { sku: sku(i as u8) }, &state).unwrap();
            state = events.iter().fold(state, Product::evolve);
        }
    }
    let step = match status % 3 {
        0 => vec![],
        1 => vec![ProductCommand::Publish {}],
        _ => vec![ProductCommand::Publish {}, ProductCommand::Archive {}],
    };
    for command in step {
        if let Ok(events) = Product::decide(&command, &state) {
            state = events.iter().fold(state, Product::evolve);
        }
    }
    state
}

#[derive(Clone, Debug)]
struct ListSpec {
    currency: u8,
    priority: u8,
    channel: u8,
    window: Option<(i64, i64)>,
    archived: bool,
    prices: Vec<(u8, i64)>,
}

fn list_spec() -> impl Strategy<Value = ListSpec> {
    (
        0..2u8,
        0..3u8,
        0..3u8,
        proptest::option::weighted(0.5, (-48..48i64, 1..96i64)),
        proptest::bool::weighted(0.1),
        proptest::collection::vec((0..3u8, 0..5i64), 0..4),
    )
        .prop_map(|(currency, priority, channel, window, archived, prices)| ListSpec {
            currency,
            priority,
            channel,
            window,
            archived,
            prices: prices.into_iter().map(|(s, a)| (s, 500 + a * 100)).collect(),
        })
}

/// Builds the list through its commands (so only what the decider accepts is there).
fn build(spec: &ListSpec) -> PriceListState {
    let rules = PriceListRules {
        channel: channel(spec.channel),
        starts_at: spec.window.map(|(start, _)| t0() + Duration::hours(start)),
        ends_at: spec.window.map(|(start, len)| t0() + Duration::hours(start + len)),
        customer_group: None,
    };
    let create = PriceListCommand::Create {
        name: "list".into(),
        currency: currency(spec.currency),
        priority: spec.priority as u32,
        tax_inclusive: spec.priority.is_multiple_of(2),
        rules,
    };
    let mut events = PriceList::decide(&create, &PriceListState::default()).unwrap();
    let mut state = PriceList::fold(&events);
    let prices: BTreeMap<Sku, Money> =
        spec.prices.iter().map(|(s, a)| (sku(*s), Money::new(*a, currency(spec.currency)))).collect();
    if !prices.is_empty() {
        let more = PriceList::decide(&PriceListCommand::SetPrices { prices }, &state).unwrap();
        state = more.iter().fold(state, PriceList::evolve);
        events.extend(more);
    }
    if spec.archived {
        let more = PriceList::decide(&PriceListCommand::Archive {}, &state).unwrap();
        state = more.iter().fold(state, PriceList::evolve);
        events.extend(more);
    }
    assert_eq!(PriceList::fold(&events), state, "the list's events fold back to its state");
    state
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn the_rule_picks_the_price(
        // Mostly an active product, so that most cases reach the lists.
        status in prop_oneof![Just(1u8), Just(1), Just(1), Just(0), Just(2)],
        defaults in proptest::array::uniform3(proptest::option::of(100..900i64)),
        archived in proptest::array::uniform3(proptest::bool::weighted(0.1)),
        specs in proptest::collection::vec(list_spec(), 0..8),
        at_hours in -60..60i64,
        wanted_currency in 0..2u8,
        wanted_channel in 0..3u8,
        asked in 0..3u8,
    ) {
        let product = product(status, defaults, archived);
        let ids: Vec<PriceListId> = (0..specs.len()).map(|i| PriceListId::parse(format!("pl{i}")).unwrap()).collect();
        let lists: Vec<PriceListState> = specs.iter().map(build).collect();
        let pairs: Vec<(&PriceListId, &PriceListState)> = ids.iter().zip(lists.iter()).collect();
        let at = t0() + Duration::hours(at_hours);
        let wanted_channel = channel(wanted_channel);
        let groups = Default::default();
        let context = PriceContext { currency: currency(wanted_currency), at, channel: wanted_channel.as_deref(), groups: &groups };
        let sku = sku(asked);
        let got = quote(&sku, &product, &pairs, &context);

        // The rule, written out: every list that could apply, as (priority, price, id).
        let sellable = status % 3 == 1 && !archived[asked as usize];
        let mut candidates: Vec<(u32, i64, &PriceListId, bool)> = specs
            .iter()
            .zip(ids.iter())
            .filter(|(spec, _)| !spec.archived && currency(spec.currency) == context.currency)
            .filter(|(spec, _)| match spec.window {
                None => true,
                Some((start, len)) => start <= at_hours && at_hours < start + len,
            })
            .filter(|(spec, _)| channel(spec.channel).is_none() || channel(spec.channel) == wanted_channel)
            .filter_map(|(spec, id)| {
                // The last price set for the SKU in the spec is the one the list holds.
                let price = spec.prices.iter().rev().find(|(s, _)| sku_of(*s) == sku_of(asked)).map(|(_, a)| *a)?;
                Some((spec.priority as u32, price, id, spec.priority.is_multiple_of(2)))
            })
            .collect();
        candidates.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(b.2)));
        match (sellable, candidates.first(), got) {
            (false, _, Err(rejection)) => {
                prop_assert!(matches!(rejection.kind, RejectionKind::Conflict));
                prop_assert!(rejection.reason.contains(sku.as_str()), "{}", rejection.reason);
            }
            (false, _, Ok(q)) => prop_assert!(false, "an unsellable variant was priced: {q:?}"),
            (true, Some((_, price, id, inclusive)), Ok(q)) => {
                prop_assert_eq!(q.unit_price, Money::new(*price, context.currency));
                prop_assert_eq!(q.source, PriceSource::PriceList { price_list_id: (*id).clone() });
                prop_assert_eq!(q.tax_inclusive, *inclusive);
            }
            (true, None, got) => match (defaults[asked as usize], context.currency == currency(0)) {
                (Some(amount), true) => {
                    let q = got.unwrap();
                    prop_assert_eq!(q.unit_price, Money::new(amount, context.currency));
                    prop_assert_eq!(q.source, PriceSource::Default);
                    prop_assert!(q.tax_inclusive);
                }
                _ => {
                    let rejection = got.unwrap_err();
                    prop_assert!(rejection.reason.contains("has no price in"), "{}", rejection.reason);
                }
            },
            (true, Some(_), Err(rejection)) => prop_assert!(false, "refused: {}", rejection.reason),
        }
    }
}

fn sku_of(i: u8) -> u8 {
    i % 3
}

#[test]
fn prices_in_another_currency_are_refused_by_name() {
    let create = PriceListCommand::Create {
        name: "Black Friday".into(),
        currency: currency(0),
        priority: 10,
        tax_inclusive: true,
        rules: PriceListRules::default(),
    };
    let state = PriceList::fold(&PriceList::decide(&create, &PriceListState::default()).unwrap());
    let prices = BTreeMap::from([(sku(0), Money::new(900, currency(1)))]);
    let err = PriceList::decide(&PriceListCommand::SetPrices { prices }, &state).unwrap_err();
    assert_eq!(err.kind, RejectionKind::Conflict);
    assert!(err.reason.contains("prices.mug") && err.reason.contains("USD") && err.reason.contains("EUR"), "{err}");

    let bad_window = PriceListCommand::Create {
        name: "never".into(),
        currency: currency(0),
        priority: 0,
        tax_inclusive: false,
        rules: PriceListRules { channel: None, starts_at: Some(t0()), ends_at: Some(t0()), customer_group: None },
    };
    let err = PriceList::decide(&bad_window, &PriceListState::default()).unwrap_err();
    assert!(err.reason.contains("ends_at"), "{err}");
}

#[test]
fn a_variant_is_sold_only_while_its_product_is_active_and_it_is_not_archived() {
    let draft = product(0, [Some(500); 3], [false; 3]);
    assert!(draft.sellable(&sku(0)).unwrap_err().reason.contains("draft"));
    let active = product(1, [Some(500); 3], [false, true, false]);
    assert!(active.sellable(&sku(0)).is_ok());
    assert!(active.sellable(&sku(1)).unwrap_err().reason.contains("archived"));
    let gone = product(2, [Some(500); 3], [false; 3]);
    assert!(gone.sellable(&sku(0)).unwrap_err().reason.contains("archived"));
    assert!(active.sellable(&Sku::parse("cup").unwrap()).unwrap_err().reason.contains("unknown"));
    let two_in_eur = ProductCommand::SetPrices {
        sku: sku(0),
        prices: vec![Money::new(100, currency(0)), Money::new(200, currency(0))],
    };
    assert!(Product::decide(&two_in_eur, &active).unwrap_err().reason.contains("two prices in EUR"));
}

proptest! {
    /// However redemptions arrive (orders, customers, repeats, in any order), a promotion's
    /// uses never pass its total limit nor one customer's, and an order uses it once.
    #[test]
    fn promotion_usage_never_exceeds_its_limits(
        usage_limit in proptest::option::of(1..6u32),
        per_customer_limit in proptest::option::of(1..3u32),
        redemptions in proptest::collection::vec((0..12u8, 0..4u8), 0..40),
    ) {
        use orderlog_domain::promotion::{Promotion, PromotionAction, PromotionCommand, PromotionKind, PromotionState};
        let create = PromotionCommand::Create {
            kind: PromotionKind::Percentage { basis_points: 1_000 },
            conditions: Default::default(),
            usage_limit,
            per_customer_limit,
            automatic: false,
        };
        let mut state = Promotion::fold(&Promotion::decide(&create.into(), &PromotionState::default()).unwrap());
        let mut events = Vec::new();
        for (order, customer) in redemptions {
            let redeem = PromotionAction::Redeem {
                code: "TEN".into(),
                order_id: orderlog_domain::OrderId::parse(format!("o{order}")).unwrap(),
                customer: format!("c{customer}"),
                cart: Box::new(orderlog_domain::promotion::Eligibility {
                    subtotal: Money::new(10_000, currency(0)),
                    at: t0(),
                    lines: vec![],
                    groups: Default::default(),
                    orders_before: None,
                }),
            };
            if let Ok(new) = Promotion::decide(&redeem, &state) {
                state = new.iter().fold(state, Promotion::evolve);
                events.extend(new);
            }
            prop_assert!(usage_limit.is_none_or(|l| state.uses <= l), "{} uses of {usage_limit:?}", state.uses);
            for (customer, uses) in &state.uses_by_customer {
                prop_assert!(per_customer_limit.is_none_or(|l| *uses <= l), "{customer}: {uses}");
            }
            prop_assert_eq!(state.uses as usize, state.orders.len(), "an order uses it once");
        }
        prop_assert_eq!(Promotion::fold(&events).uses, state.uses, "the redemptions fold back to the uses");
    }
}
