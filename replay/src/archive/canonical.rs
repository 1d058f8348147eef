//! The event lines `export` writes, read without the general JSON parser.
//!
//! An export writes every event line in one layout: the fields in a fixed order, no
//! whitespace, strings escaped as `serde_json` escapes them. [`event`] reads a line of
//! exactly that layout directly into the [`LoadEvent`] the import needs, and gives up
//! (`None`) at the first byte that is anything else; the caller then reads the line with
//! `serde_json`, which accepts every valid line and names what is wrong with the others.
//! So this never decides what a line means, only how fast it is read: any line it reads
//! is read to the same event as `serde_json` reads it (a property test checks this on
//! lines made from arbitrary events, and on those lines altered).
//!
//! What it gives up on, besides lines that are not in the layout: strings with escapes
//! other than `\"` and `\\` (a payload that holds a newline, say), `null` for an optional
//! metadata field, and times not in the form `format_time` writes. Because every string it
//! takes is written as `serde_json` would write it, the metadata object's text as it
//! stands in the line is the text the store writes and hashes; so is a time in that form.
//! Both are taken as they are, with no second serialization.

use chrono::{DateTime, Utc};
use orderlog_store::{LoadEvent, Metadata, RecordedEvent};

/// The event of `line` (without its line break), if the line is in the export's layout.
pub(super) fn event(line: &str) -> Option<LoadEvent> {
    let mut r = Reader { text: line, at: 0 };
    r.expect("{\"position\":")?;
    let position = r.number()?;
    r.expect(",\"stream_id\":")?;
    let stream_id = r.string()?;
    r.expect(",\"version\":")?;
    let version = r.number()?;
    r.expect(",\"event_id\":")?;
    let event_id = uuid::Uuid::try_parse(&r.string()?).ok()?;
    r.expect(",\"type\":")?;
    let event_type = r.string()?;
    r.expect(",\"schema_version\":")?;
    let schema_version = u32::try_from(r.number()?).ok()?;
    r.expect(",\"payload\":")?;
    let payload = r.string()?;
    r.expect(",\"metadata\":")?;
    let metadata_start = r.at;
    let metadata = r.metadata()?;
    let metadata_text = line[metadata_start..r.at].to_string();
    r.expect(",\"recorded_at\":")?;
    let recorded_at_text = r.string()?;
    let recorded_at = time(&recorded_at_text)?;
    r.expect(",\"hash\":")?;
    let hash = r.string()?;
    r.expect("}")?;
    if r.at != line.len() {
        return None;
    }
    let event = RecordedEvent {
        position,
        commit: position,
        stream_id,
        version,
        event_id,
        event_type,
        schema_version,
        payload,
        metadata,
        recorded_at,
        hash,
    };
    Some(LoadEvent { event, metadata: metadata_text, recorded_at: recorded_at_text })
}

/// `text` as a time, if it is in the form `format_time` writes (`2026-11-26T19:31:19.132786000Z`),
/// which its text then is already.
fn time(text: &str) -> Option<DateTime<Utc>> {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| b[range].iter().all(u8::is_ascii_digit);
    let shaped = b.len() == 30
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        // Seconds up to 59: a leap second is left to the general path.
        && (b'0'..=b'5').contains(&b[17])
        && b[18].is_ascii_digit()
        && b[19] == b'.'
        && digits(20..29)
        && b[29] == b'Z';
    if !shaped {
        return None;
    }
    DateTime::parse_from_rfc3339(text).ok().map(|t| t.with_timezone(&Utc))
}

struct Reader<'a> {
    text: &'a str,
    at: usize,
}

impl Reader<'_> {
    fn expect(&mut self, literal: &str) -> Option<()> {
        let rest = &self.text.as_bytes()[self.at..];
        rest.starts_with(literal.as_bytes()).then(|| self.at += literal.len())
    }

    /// A non-negative integer as JSON writes it (no sign, no leading zero, no fraction or
    /// exponent: the next byte must end the value).
    fn number(&mut self) -> Option<u64> {
        let bytes = &self.text.as_bytes()[self.at..];
        let len = bytes.iter().position(|b| !b.is_ascii_digit()).unwrap_or(bytes.len());
        if len == 0 || (len > 1 && bytes[0] == b'0') || !matches!(bytes.get(len), Some(b',' | b'}')) {
            return None;
        }
        let mut value = 0u64;
        for &digit in &bytes[..len] {
            value = value.checked_mul(10)?.checked_add(u64::from(digit - b'0'))?;
        }
        self.at += len;
        Some(value)
    }

    /// A string whose only escapes are `\"` and `\\` and which holds no control character
    /// (as `serde_json` writes any string without control characters).
    fn string(&mut self) -> Option<String> {
        self.expect("\"")?;
        let bytes = self.text.as_bytes();
        let mut out = String::new();
        loop {
            let start = self.at;
            let stop = start + special(&bytes[start..])?;
            // Both ends sit on ASCII bytes (or the start of the string), so on char
            // boundaries.
            out.push_str(&self.text[start..stop]);
            match bytes[stop] {
                b'"' => {
                    self.at = stop + 1;
                    return Some(out);
                }
                b'\\' => match bytes.get(stop + 1) {
                    Some(&escaped @ (b'"' | b'\\')) => {
                        out.push(char::from(escaped));
                        self.at = stop + 2;
                    }
                    _ => return None,
                },
                // A control character: JSON requires it escaped.
                _ => return None,
            }
        }
    }

    /// `Metadata` as `serde_json` writes it: its fields in order, the optional ones present
    /// only when set.
    fn metadata(&mut self) -> Option<Metadata> {
        self.expect("{\"actor\":")?;
        let actor = self.string()?;
        self.expect(",\"command_id\":")?;
        let command_id = self.string()?;
        let command_hash = match self.expect(",\"command_hash\":") {
            Some(()) => Some(self.string()?),
            None => None,
        };
        self.expect(",\"correlation_id\":")?;
        let correlation_id = self.string()?;
        let causation_id = match self.expect(",\"causation_id\":") {
            Some(()) => Some(self.string()?),
            None => None,
        };
        self.expect("}")?;
        Some(Metadata { actor, command_id, command_hash, correlation_id, causation_id })
    }
}

/// The offset of the first `"`, `\` or control character in `bytes`, if any. Eight bytes
/// at a time: a word holds one of them when a byte of it is below 0x20, or equal to `"`
/// or `\` (the classic "has a zero byte" test, which never misses one).
fn special(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let mut at = 0;
    while let Some(word) = bytes.get(at..at + 8) {
        let v = u64::from_le_bytes(word.try_into().expect("eight bytes"));
        let found = v.wrapping_sub(ONES * 0x20) & !v & HIGHS
            | has_zero(v ^ (ONES * u64::from(b'"')))
            | has_zero(v ^ (ONES * u64::from(b'\\')));
        if found != 0 {
            break;
        }
        at += 8;
    }
    bytes[at..].iter().position(|&b| b < 0x20 || b == b'"' || b == b'\\').map(|i| at + i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::{line_of, parse_line, EventLine, Parsed};
    use proptest::prelude::*;

    /// What the general path (serde_json) makes of `text`, as the parts compared.
    fn general(text: &str) -> Option<LoadEvent> {
        match parse_line(1, text) {
            Ok(Parsed::Event(load)) => Some(load),
            _ => None,
        }
    }

    fn same(a: &LoadEvent, b: &LoadEvent) -> bool {
        a.event == b.event && a.metadata == b.metadata && a.recorded_at == b.recorded_at
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9-]{0,12}",
            // Quotes, backslashes, control characters, non-ASCII, JSON inside JSON.
            "[a-z\"\\\\{}:,\n\t\u{1}\u{7f}é€😀 ]{0,40}",
            Just("{\"order\":{\"lines\":[{\"sku\":\"s1\",\"quantity\":2}]}}".to_string()),
        ]
    }

    prop_compose! {
        fn recorded()(
            position in 0u64..=u64::MAX,
            stream_id in text(),
            version in 0u64..=u64::MAX,
            id in any::<u128>(),
            event_type in text(),
            schema_version in any::<u32>(),
            payload in text(),
            actor in text(),
            command_id in text(),
            command_hash in proptest::option::of(text()),
            correlation_id in text(),
            causation_id in proptest::option::of(text()),
            // Years 0001–9999 (and leap days), to the nanosecond.
            seconds in -62_135_596_800i64..253_402_300_799i64,
            nanos in 0u32..1_000_000_000,
            hash in "[0-9a-f]{64}",
        ) -> RecordedEvent {
            RecordedEvent {
                position,
                commit: position,
                stream_id,
                version,
                event_id: uuid::Uuid::from_u128(id),
                event_type,
                schema_version,
                payload,
                metadata: Metadata { actor, command_id, command_hash, correlation_id, causation_id },
                recorded_at: DateTime::from_timestamp(seconds, nanos).unwrap(),
                hash,
            }
        }
    }

    fn line(e: &RecordedEvent) -> String {
        serde_json::to_string(&line_of(e)).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

        /// Every line export writes is read as the general path reads it; it is read at all
        /// unless one of its strings needs an escape other than `\"` and `\\`.
        #[test]
        fn an_exported_line_is_read_as_serde_json_reads_it(e in recorded()) {
            let text = line(&e);
            let general = general(&text).expect("an exported line parses");
            let plain = |s: &str| !s.chars().any(|c| c < ' ');
            let m = &e.metadata;
            let readable = [&e.stream_id, &e.event_type, &e.payload, &m.actor, &m.command_id, &m.correlation_id]
                .into_iter()
                .chain(m.command_hash.as_ref())
                .chain(m.causation_id.as_ref())
                .all(|s| plain(s));
            match event(&text) {
                Some(fast) => prop_assert!(same(&fast, &general), "{text}"),
                None => prop_assert!(!readable, "not read: {text}"),
            }
        }

        /// A line altered anywhere (a byte range replaced by arbitrary text) is either given
        /// up on, or read as the general path reads it — never read otherwise, never read
        /// when the general path refuses it.
        #[test]
        fn an_altered_line_is_read_as_serde_json_reads_it_or_not_at_all(
            e in recorded(),
            cut in any::<proptest::sample::Index>(),
            len in 0usize..6,
            insert in "[0-9a-z\"\\\\{}:,. \n\\x00-]{0,4}",
        ) {
            let text = line(&e);
            let chars: Vec<char> = text.chars().collect();
            let from = cut.index(chars.len());
            let to = (from + len).min(chars.len());
            let altered: String = chars[..from].iter().chain(insert.chars().collect::<Vec<_>>().iter()).chain(&chars[to..]).collect();
            if let Some(fast) = event(&altered) {
                let general = general(&altered);
                prop_assert!(general.as_ref().is_some_and(|g| same(&fast, g)), "read otherwise: {altered}");
            }
        }
    }

    #[test]
    fn the_exports_own_layout_is_read_and_other_layouts_are_left_to_serde_json() {
        let e = RecordedEvent {
            position: 7,
            commit: 7,
            stream_id: "order-o1".into(),
            version: 2,
            event_id: uuid::Uuid::from_u128(42),
            event_type: "OrderPlaced".into(),
            schema_version: 1,
            payload: "{\"note\":\"a \\\"quoted\\\" word\"}".into(),
            metadata: Metadata {
                actor: "ann".into(),
                command_id: "c1".into(),
                command_hash: Some("h".into()),
                correlation_id: "k".into(),
                causation_id: None,
            },
            recorded_at: DateTime::parse_from_rfc3339("2026-11-26T19:31:19.132786000Z").unwrap().with_timezone(&Utc),
            hash: "ab".repeat(32),
        };
        let text = line(&e);
        let fast = event(&text).expect("read");
        assert!(same(&fast, &general(&text).unwrap()));
        assert_eq!(fast.metadata, r#"{"actor":"ann","command_id":"c1","command_hash":"h","correlation_id":"k"}"#);
        assert_eq!(fast.recorded_at, "2026-11-26T19:31:19.132786000Z");
        // Valid lines in other layouts: the general path reads them, this one does not.
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        for other in [
            serde_json::to_string_pretty(&value).unwrap(),
            text.replace("\"metadata\":{", "\"metadata\": {"),
            text.replace("\"position\":7,", "").replace("\"version\":2,", "\"version\":2,\"position\":7,"),
            text.replace("\"command_hash\":\"h\"", "\"command_hash\":null"),
            text.replace("19.132786000Z", "19.132786Z"),
            text.replace("a \\\\\\\"quoted", "a \\\\\\u0022quoted"),
        ] {
            assert!(event(&other).is_none(), "{other}");
            assert!(general(&other).is_some(), "{other}");
        }
        // Without the optional field it is still the export's layout.
        let plain = text.replace("\"command_hash\":\"h\",", "");
        assert!(same(&event(&plain).expect("read"), &general(&plain).unwrap()));
        // An unknown field is refused by the general path, and not read here either.
        let extra = text.replacen('{', "{\"extra\":1,", 1);
        assert!(event(&extra).is_none() && general(&extra).is_none());
        let _: EventLine = serde_json::from_str(&text).unwrap();
    }

    #[test]
    fn only_plain_integers_are_read_as_numbers() {
        let e = RecordedEvent {
            position: 7,
            commit: 7,
            stream_id: "s".into(),
            version: 2,
            event_id: uuid::Uuid::from_u128(1),
            event_type: "T".into(),
            schema_version: 1,
            payload: "{}".into(),
            metadata: Metadata::default(),
            recorded_at: DateTime::from_timestamp(0, 0).unwrap(),
            hash: "0".repeat(64),
        };
        let text = line(&e);
        for (number, general_reads) in [
            ("07", false),
            ("-7", false),
            ("7.0", false),
            ("7e0", false),
            ("18446744073709551616", false),
            (" 7", true),
        ] {
            let other = text.replace("\"position\":7", &format!("\"position\":{number}"));
            assert!(event(&other).is_none(), "{other}");
            assert_eq!(general(&other).is_some(), general_reads, "{other}");
        }
        let max = text.replace("\"position\":7", &format!("\"position\":{}", u64::MAX));
        assert_eq!(event(&max).unwrap().event.position, u64::MAX);
        let schema = text.replace("\"schema_version\":1", &format!("\"schema_version\":{}", u64::from(u32::MAX) + 1));
        assert!(event(&schema).is_none() && general(&schema).is_none());
    }

    #[test]
    fn special_finds_the_first_quote_backslash_or_control_character() {
        for len in 0..40 {
            for at in 0..len {
                for b in [b'"', b'\\', 0u8, 0x1f] {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = b;
                    assert_eq!(special(&bytes), Some(at), "{len} {at} {b}");
                }
            }
            let mut plain = vec![b'~'; len];
            plain.extend([0x20, 0x7f, 0xc3, 0xa9]);
            assert_eq!(special(&plain), None);
        }
    }
}
