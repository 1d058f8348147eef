//! The stored form of events: a stable type name, a schema version and a JSON payload.
//!
//! The type name is the variant's name (`CartCreated`); the payload is the variant's
//! fields as a JSON object. Names and payload shapes are a contract with every log ever
//! written: rename nothing in place; when a type's shape changes, raise its version in
//! [`SCHEMA_VERSIONS`] and add an upcaster from the old version (and a fixture of it).

use serde::Deserialize;

pub use crate::aggregate::{AggregateKind, DomainEvent};

/// The schema version of event types not listed in [`SCHEMA_VERSIONS`].
pub const SCHEMA_VERSION: u32 = 1;

/// Event types whose shape has changed, with the version this build writes. Every older
/// version of these has an upcaster in [`upcast`]; fixtures of each older version are in
/// `domain/tests/fixtures/` and replayed by a test.
pub const SCHEMA_VERSIONS: &[(&str, u32)] = &[
    // v2: `quantity` became `units` (the word every other stock event uses for counted
    // items), and the supplier's delivery reference is recorded (null when not given).
    ("StockReceived", 2),
];

/// The schema version this build writes (and reads natively) for `event_type`.
pub fn schema_version_of(event_type: &str) -> u32 {
    SCHEMA_VERSIONS.iter().find(|(t, _)| *t == event_type).map_or(SCHEMA_VERSION, |(_, v)| *v)
}

/// Why a payload could not be brought up a version.
enum Upcast {
    /// No upcaster from that version exists.
    Missing,
    /// The payload lacks what its version has.
    Payload(String),
}

/// Turns a payload of `event_type` at `version` into the payload of `version + 1`.
fn upcast(
    event_type: &str,
    version: u32,
    payload: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<(), Upcast> {
    match (event_type, version) {
        ("StockReceived", 1) => {
            let quantity = payload
                .remove("quantity")
                .ok_or_else(|| Upcast::Payload("a version 1 StockReceived has no `quantity`".into()))?;
            payload.insert("units".into(), quantity);
            payload.insert("reference".into(), serde_json::Value::Null);
            Ok(())
        }
        _ => Err(Upcast::Missing),
    }
}

/// Stored type names that a later build renamed, with the name it reads them as. The
/// payload of a renamed type is unchanged; a log keeps the name it was written with.
pub const RENAMED_TYPES: &[(&str, &str)] = &[
    // "Commit" is a database word; units leaving stock with a shipment are dispatched.
    ("StockCommitted", "StockDispatched"),
];

/// The name `event_type` is read as by this build.
pub fn current_type_name(event_type: &str) -> &str {
    RENAMED_TYPES.iter().find(|(old, _)| *old == event_type).map_or(event_type, |(_, new)| new)
}

/// The aggregate whose events are stored under `event_type` (as this build names it).
fn kind_of_type(event_type: &str) -> Option<AggregateKind> {
    AggregateKind::ALL.iter().copied().find(|k| k.event_types().contains(&event_type))
}

/// Why a stored event could not be turned back into a domain event.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("unknown event type '{event_type}'")]
    UnknownType { event_type: String },
    #[error("event type '{event_type}' has schema version {found}, newer than the {supported} this build knows")]
    NewerSchema { event_type: String, found: u32, supported: u32 },
    #[error("event type '{event_type}' has schema version {found}, and no upcaster for it exists")]
    OlderSchema { event_type: String, found: u32 },
    #[error("event type '{event_type}': payload does not match its schema: {detail}")]
    Payload { event_type: String, detail: String },
}

impl DomainEvent {
    pub fn schema_version(&self) -> u32 {
        schema_version_of(self.event_type())
    }

    /// The payload: the variant's fields as a JSON object.
    pub fn payload(&self) -> String {
        let tagged = self.to_tagged().expect("domain events always serialize");
        match tagged {
            serde_json::Value::Object(map) if map.len() == 1 => {
                map.into_iter().next().expect("one entry").1.to_string()
            }
            other => unreachable!("externally tagged struct variants serialize as one-key objects, got {other}"),
        }
    }

    /// Turns a stored type, schema version and payload back into an event.
    pub fn decode(event_type: &str, schema_version: u32, payload: &str) -> Result<DomainEvent, DecodeError> {
        let event_type = current_type_name(event_type);
        let Some(kind) = kind_of_type(event_type) else {
            return Err(DecodeError::UnknownType { event_type: event_type.to_string() });
        };
        let current = schema_version_of(event_type);
        if schema_version > current {
            return Err(DecodeError::NewerSchema {
                event_type: event_type.to_string(),
                found: schema_version,
                supported: current,
            });
        }
        if schema_version == 0 {
            return Err(DecodeError::OlderSchema { event_type: event_type.to_string(), found: schema_version });
        }
        if schema_version < current {
            return Self::decode_older(kind, event_type, schema_version, current, payload);
        }
        let payload_err =
            |e: serde_json::Error| DecodeError::Payload { event_type: event_type.to_string(), detail: e.to_string() };
        let mut de = serde_json::Deserializer::from_str(payload);
        let tagged = Tagged { tag: event_type, payload: &mut de };
        let event = DomainEvent::deserialize_as(kind, tagged).map_err(payload_err)?;
        de.end().map_err(payload_err)?;
        Ok(event)
    }

    /// The slow path, for events written by an older build: the payload is parsed, brought
    /// up to the current version one upcaster at a time, then read.
    fn decode_older(
        kind: AggregateKind,
        event_type: &str,
        found: u32,
        current: u32,
        payload: &str,
    ) -> Result<DomainEvent, DecodeError> {
        let payload_err = |detail: String| DecodeError::Payload { event_type: event_type.to_string(), detail };
        let value: serde_json::Value = serde_json::from_str(payload).map_err(|e| payload_err(e.to_string()))?;
        let serde_json::Value::Object(mut fields) = value else {
            return Err(payload_err(format!("a version {found} payload is not a JSON object")));
        };
        for version in found..current {
            upcast(event_type, version, &mut fields).map_err(|e| match e {
                Upcast::Missing => DecodeError::OlderSchema { event_type: event_type.to_string(), found },
                Upcast::Payload(detail) => payload_err(detail),
            })?;
        }
        let tagged = serde_json::Value::Object(serde_json::Map::from_iter([(event_type.to_string(), fields.into())]));
        let read = |e: serde_json::Error| payload_err(e.to_string());
        DomainEvent::deserialize_as(kind, tagged).map_err(read)
    }
}

/// An externally tagged enum read from its variant name and, separately, the variant's
/// payload — the stored form — in one pass over the payload, without building the
/// `{"Type": payload}` object first.
struct Tagged<'a, 'de> {
    tag: &'a str,
    payload: &'a mut serde_json::Deserializer<serde_json::de::StrRead<'de>>,
}

impl<'de> serde::Deserializer<'de> for Tagged<'_, 'de> {
    type Error = serde_json::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(serde::de::Error::custom("an event is read as an enum"))
    }

    fn deserialize_enum<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_enum(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}

impl<'de> serde::de::EnumAccess<'de> for Tagged<'_, 'de> {
    type Error = serde_json::Error;
    type Variant = Self;

    fn variant_seed<V: serde::de::DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), Self::Error> {
        use serde::de::IntoDeserializer;
        let variant = seed.deserialize(self.tag.into_deserializer())?;
        Ok((variant, self))
    }
}

impl<'de> serde::de::VariantAccess<'de> for Tagged<'_, 'de> {
    type Error = serde_json::Error;

    fn unit_variant(self) -> Result<(), Self::Error> {
        <()>::deserialize(&mut *self.payload)
    }

    fn newtype_variant_seed<T: serde::de::DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Self::Error> {
        seed.deserialize(&mut *self.payload)
    }

    fn tuple_variant<V: serde::de::Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Self::Error> {
        serde::Deserializer::deserialize_seq(&mut *self.payload, visitor)
    }

    fn struct_variant<V: serde::de::Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        // An object only: serde would also take a struct's fields as an array.
        serde::Deserializer::deserialize_map(&mut *self.payload, visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stock::StockEvent;

    #[test]
    fn payload_is_the_fields_only() {
        let event = DomainEvent::Stock(StockEvent::StockReceived { units: 3, reference: None });
        assert_eq!(event.event_type(), "StockReceived");
        assert_eq!(event.payload(), r#"{"reference":null,"units":3}"#);
        assert_eq!(DomainEvent::decode("StockReceived", 2, &event.payload()).unwrap(), event);
        assert_eq!(DomainEvent::decode("StockReceived", 1, r#"{"quantity":3}"#).unwrap(), event, "upcast from v1");
    }

    #[test]
    fn decode_errors_name_the_problem() {
        assert_eq!(
            DomainEvent::decode("Teleported", 1, "{}").unwrap_err().to_string(),
            "unknown event type 'Teleported'"
        );
        assert!(DomainEvent::decode("StockReceived", 7, "{}").unwrap_err().to_string().contains("newer"));
        assert!(matches!(
            DomainEvent::decode("StockReceived", 2, r#"{"units":-1,"reference":null}"#),
            Err(DecodeError::Payload { .. })
        ));
        for bad in [
            r#"{"units":3,"reference":null} {}"#,
            r#"{"units":3"#,
            "",
            "null",
            "[3]",
            r#"{"units":"3","reference":null}"#,
        ] {
            let error = DomainEvent::decode("StockReceived", 2, bad).unwrap_err();
            assert!(matches!(error, DecodeError::Payload { .. }), "{bad:?}: {error}");
            assert!(error.to_string().contains("StockReceived"), "{error}");
        }
    }

    #[test]
    fn every_event_of_a_placed_order_round_trips() {
        use crate::order::OrderEvent;
        for event in [
            DomainEvent::Order(OrderEvent::OrderConfirmed {}),
            DomainEvent::Order(OrderEvent::OrderExpired {}),
            DomainEvent::Stock(StockEvent::StockReceived { units: 9, reference: Some("PO-7".into()) }),
            DomainEvent::Stock(StockEvent::SafetyStockSet { quantity: 2 }),
        ] {
            assert_eq!(
                DomainEvent::decode(event.event_type(), event.schema_version(), &event.payload()).unwrap(),
                event
            );
        }
    }

    #[test]
    fn a_renamed_type_is_read_under_its_new_name() {
        let payload = r#"{"order_id":"o1","shipment_id":"s1","quantity":2}"#;
        let event = DomainEvent::decode("StockCommitted", 1, payload).unwrap();
        assert_eq!(event.event_type(), "StockDispatched");
        assert_eq!(event, DomainEvent::decode("StockDispatched", 1, payload).unwrap());
    }
}
