//! Identifiers and the stream ids built from them.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Rejection;

/// Longest id accepted anywhere, in bytes.
pub const ID_BYTES_MAX: usize = 128;

/// The grammar of every id, as the OpenAPI document states it: a letter or digit, then
/// letters, digits, `-`, `_`, `.` or `:`. An id starts with a letter or digit so that no id
/// is a dot segment (`.`, `..`) that a client normalising a URL path would rewrite.
pub const ID_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$";

/// Checks a value against the id grammar ([`ID_PATTERN`]), naming `kind` when it fails.
pub fn check_id(kind: &str, value: &str) -> Result<(), Rejection> {
    if value.is_empty() {
        return Err(Rejection::invalid(format!("{kind}: must not be empty")));
    }
    if !value.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(Rejection::invalid(format!("{kind}: '{value}' must start with a letter or a digit")));
    }
    if value.len() > ID_BYTES_MAX {
        return Err(Rejection::invalid(format!("{kind}: longer than {ID_BYTES_MAX} bytes")));
    }
    if let Some(c) = value.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))) {
        return Err(Rejection::invalid(format!(
            "{kind}: '{value}' contains '{c}'; use letters, digits, '-', '_', '.' or ':'"
        )));
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        /// Checked when deserialized, as by `parse`.
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
        #[serde(try_from = "String")]
        pub struct $name(String);

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = Rejection;
            fn try_from(value: String) -> Result<Self, Rejection> {
                $name::parse(value)
            }
        }


        impl $name {
            /// Checks the id's characters and length.
            pub fn parse(value: impl Into<String>) -> Result<Self, Rejection> {
                let value = value.into();
                check_id($kind, &value)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// A cart's id; its stream is `cart-{id}`.
    CartId,
    "cart_id"
);
id_type!(
    /// An order's id; its stream is `order-{id}`.
    OrderId,
    "order_id"
);
id_type!(
    /// A shipment's id; its stream is `shipment-{id}`.
    ShipmentId,
    "shipment_id"
);
id_type!(
    /// A stock keeping unit.
    Sku,
    "sku"
);
id_type!(
    /// A stock location (warehouse, store).
    LocationId,
    "location"
);
id_type!(
    /// A registered customer.
    CustomerId,
    "customer_id"
);
id_type!(
    /// A product's id; its stream is `product-{id}`.
    ProductId,
    "product_id"
);
id_type!(
    /// A price list's id; its stream is `pricelist-{id}`.
    PriceListId,
    "price_list_id"
);
id_type!(
    /// A promotion's code; its stream is `promotion-{code}`.
    PromotionCode,
    "code"
);
id_type!(
    /// A shipping zone's id; its stream is `shippingzone-{id}`.
    ShippingZoneId,
    "zone_id"
);
id_type!(
    /// A shipping option of a zone, as a cart picks it.
    ShippingOptionId,
    "option_id"
);
id_type!(
    /// A payment intent's id; its stream is `payment-{id}`.
    PaymentId,
    "payment_id"
);
id_type!(
    /// A return (RMA) within an order.
    ReturnId,
    "return_id"
);

/// One stock item: a SKU at a location; its stream is `stock-{sku}@{location}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StockKey {
    pub sku: Sku,
    pub location: LocationId,
}

impl StockKey {
    pub fn new(sku: Sku, location: LocationId) -> StockKey {
        StockKey { sku, location }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_refuse_empty_long_and_odd_characters() {
        assert!(Sku::parse("").unwrap_err().reason.contains("sku"));
        assert!(Sku::parse("a".repeat(200)).is_err());
        let err = Sku::parse("a@b").unwrap_err();
        assert!(err.reason.contains('@'), "{}", err.reason);
        assert!(Sku::parse("TSHIRT-RED_XL.2").is_ok());
    }
}
