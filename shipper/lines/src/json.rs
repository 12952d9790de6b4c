//! JSON in and out: writing the wire record, and reading an application's JSON
//! line as its top-level fields without building values (each value is kept as
//! its validated raw text).

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// For each byte: 0 if it stands for itself in a JSON string, else the letter after the backslash.
static ESCAPES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 0x20 {
        t[c] = b'u';
        c += 1;
    }
    t[b'\n' as usize] = b'n';
    t[b'\r' as usize] = b'r';
    t[b'\t' as usize] = b't';
    t[0x08] = b'b';
    t[0x0c] = b'f';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

/// True if one of the 8 bytes of `w` needs escaping: below 0x20, '"' or '\\'.
#[inline]
fn word_needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_in = |x: u64| x.wrapping_sub(ONES) & !x & HIGH != 0;
    w.wrapping_sub(ONES * 0x20) & !w & HIGH != 0 || zero_in(w ^ (ONES * b'"' as u64)) || zero_in(w ^ (ONES * b'\\' as u64))
}

/// `s` as a JSON string literal.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let b = s.as_bytes();
    out.reserve(b.len() + 2);
    out.push(b'"');
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        // Most text needs no escaping: skip it 8 bytes at a time.
        if i + 8 <= b.len() && !word_needs_escape(u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"))) {
            i += 8;
            continue;
        }
        let c = b[i];
        let e = ESCAPES[c as usize];
        if e != 0 {
            out.extend_from_slice(&b[start..i]);
            if e == b'u' {
                out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[(c >> 4) as usize], HEX[(c & 15) as usize]]);
            } else {
                out.extend_from_slice(&[b'\\', e]);
            }
            start = i + 1;
        }
        i += 1;
    }
    out.extend_from_slice(&b[start..]);
    out.push(b'"');
}

pub fn write_int(out: &mut Vec<u8>, v: i64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut n = v.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&buf[i..]);
}

/// A field value: an application's raw JSON, or a string (logfmt), or JSON made here (an
/// OpenTelemetry AnyValue turned into the plain value it stands for).
#[derive(Clone)]
pub enum Val<'a> {
    Raw(&'a RawValue),
    Str(Cow<'a, str>),
    /// Valid JSON text. Only ever an attribute's value: `as_str` and `raw` (which serve the roles) see nothing.
    Json(String),
}

impl<'a> Val<'a> {
    pub fn write(&self, out: &mut Vec<u8>) {
        match self {
            Val::Raw(r) => out.extend_from_slice(r.get().as_bytes()),
            Val::Str(s) => write_str(out, s),
            Val::Json(j) => out.extend_from_slice(j.as_bytes()),
        }
    }

    /// The raw JSON text, if the value came from JSON (not from logfmt).
    pub fn json(&self) -> Option<&'a str> {
        match self {
            Val::Raw(r) => Some(r.get()),
            _ => None,
        }
    }

    /// The string, if the value is one.
    pub fn as_str(&self) -> Option<Cow<'a, str>> {
        match self {
            Val::Str(s) => Some(s.clone()),
            Val::Json(_) => None,
            Val::Raw(r) => {
                let raw = r.get();
                if !raw.starts_with('"') {
                    None
                } else if !raw.contains('\\') {
                    Some(Cow::Borrowed(&raw[1..raw.len() - 1]))
                } else {
                    serde_json::from_str::<String>(raw).ok().map(Cow::Owned)
                }
            }
        }
    }

    /// The raw JSON text of a non-string value ("null", "42", "{…}").
    pub fn raw(&self) -> Option<&'a str> {
        match self {
            Val::Raw(r) if !r.get().starts_with('"') => Some(r.get()),
            _ => None,
        }
    }
}

pub type Fields<'a> = Vec<(Cow<'a, str>, Val<'a>)>;

/// A JSON text: an object's fields in order, or some other valid JSON value.
pub enum Top<'a> {
    Object(Fields<'a>),
    Other,
}

struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for Top<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Top<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("JSON")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Top<'de>, A::Error> {
                let mut fields = Vec::new();
                while let Some(Key(k)) = map.next_key()? {
                    let v: &'de RawValue = map.next_value()?;
                    fields.push((k, Val::Raw(v)));
                }
                Ok(Top::Object(fields))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Top<'de>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Top::Other)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Top<'de>, E> {
                Ok(Top::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Top<'de>, E> {
                Ok(Top::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Top<'de>, E> {
                Ok(Top::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Top<'de>, E> {
                Ok(Top::Other)
            }
            fn visit_str<E>(self, _: &str) -> Result<Top<'de>, E> {
                Ok(Top::Other)
            }
            fn visit_unit<E>(self) -> Result<Top<'de>, E> {
                Ok(Top::Other)
            }
        }
        d.deserialize_any(V)
    }
}

/// None if `text` is not valid JSON.
///
/// Values are kept as raw text, which serde_json checks for syntax only: an escaped lone surrogate
/// (`"\ud800"`) passes, and stored in `attributes` or `resource` it breaks every JSON query over the
/// lake. A text with a `\u` escape is parsed in full as well, and refused if that fails (it is then
/// kept whole, as a plain-text body).
pub fn read_top(text: &str) -> Option<Top<'_>> {
    let top = serde_json::from_str(text).ok()?;
    if memchr::memmem::find(text.as_bytes(), b"\\u").is_some() && !representable(text) {
        return None;
    }
    Some(top)
}

/// Whether `text` parses in full: no lone surrogate, no number beyond a double (`1e400`, which the
/// aggregator's check of a `resource` refuses).
pub fn representable(text: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(text).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_object(text: &str) -> bool {
        matches!(read_top(text), Some(Top::Object(_)))
    }

    #[test]
    fn refuses_what_cannot_be_stored_as_json() {
        assert!(!is_object(r#"{"a":"\ud800"}"#));          // lone surrogate
        assert!(!is_object(r#"{"a":{"b":"x\uDC00y"}}"#));
        assert!(is_object(r#"{"f":1e400}"#));              // kept raw in attributes (DuckDB reads it)
        assert!(!representable(r#"{"f":-2E+999}"#));        // but never a resource
        assert!(is_object(r#"{"a":"\ud83d\ude00","n":1e300,"e":"1e999 in a string"}"#));
        assert!(is_object(r#"{"a":"\u00e9","word":"e123"}"#));
    }
    fn fields(text: &str) -> Vec<(String, String)> {
        match read_top(text) {
            Some(Top::Object(f)) => f.into_iter().map(|(k, v)| (k.into_owned(), v.json().expect("raw").to_string())).collect(),
            _ => panic!("not an object: {text}"),
        }
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn raw(json: &str) -> Val<'_> {
        Val::Raw(serde_json::from_str(json).expect("test JSON"))
    }

    #[test]
    fn top_level_fields_in_order_as_raw_text() {
        assert_eq!(fields(r#"{"a":1,"b":"x","c":{"d":[1,2]},"e":null,"f":true,"g":-1.5e3}"#),
                   pairs(&[("a", "1"), ("b", r#""x""#), ("c", r#"{"d":[1,2]}"#), ("e", "null"), ("f", "true"), ("g", "-1.5e3")]));
        // the value's own spacing is kept, the space around it is not
        assert_eq!(fields(" { \"c\" :  { \"d\" : [ 1 , 2 ] } , \"s\":\"a\\nb\" }\n"),
                   pairs(&[("c", r#"{ "d" : [ 1 , 2 ] }"#), ("s", r#""a\nb""#)]));
        assert_eq!(fields("{}"), pairs(&[]));
    }

    #[test]
    fn keys_are_decoded_and_duplicates_kept() {
        let f = fields(r#"{"k\u00e9y":1,"a\"b":2,"a":3,"a":4}"#);
        assert_eq!(f, pairs(&[("kéy", "1"), ("a\"b", "2"), ("a", "3"), ("a", "4")]));
        match read_top(r#"{"plain":1,"esc\n":2}"#) {
            Some(Top::Object(f)) => assert!(matches!(f[0].0, Cow::Borrowed(_)) && matches!(f[1].0, Cow::Owned(_))),
            _ => panic!("object"),
        }
    }

    #[test]
    fn other_json_values() {
        for other in ["[1,2]", "[]", r#""s""#, "42", "-0.5", "true", "null", " [ {\"a\":1} ] ", "18446744073709551616"] {
            assert!(matches!(read_top(other), Some(Top::Other)), "{other}");
        }
    }

    #[test]
    fn invalid_json() {
        for bad in ["", " ", "{", "}", r#"{"a":}"#, r#"{"a":1,}"#, r#"{"a":1} x"#, r#"{"a":1}{"b":2}"#, "{a:1}", "{'a':1}",
                    r#"{"a":NaN}"#, r#"{"a":01}"#, r#"{"a":"x"#, r#"{"a":"tab	in string"}"#, r#"{"a":"\x"}"#,
                    r#"{"a":"\u12"}"#, r#"{1:2}"#, "[1,]"] {
            assert!(read_top(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn lone_surrogates_refused_escaped_backslashes_not() {
        for lone in [r#"{"a":"\ud800"}"#, r#"{"a":"\udfff tail"}"#, r#"{"a":"\ud83d\u0041"}"#, r#"{"\ud800":1}"#,
                     r#"["\ud800"]"#, r#"{"a":["x",{"b":"\uDBFF"}]}"#] {
            assert!(read_top(lone).is_none(), "{lone}");
        }
        // "\\ud800" is a backslash and the letters "ud800"
        let f = fields(r#"{"a":"\\ud800"}"#);
        assert_eq!(f, pairs(&[("a", r#""\\ud800""#)]));
        assert_eq!(raw(r#""\\ud800""#).as_str().as_deref(), Some("\\ud800"));
    }

    #[test]
    fn deep_nesting_is_kept_raw_unless_a_full_parse_is_needed() {
        let nested = |depth: usize, leaf: &str| format!(r#"{{"a":{}{leaf}{}}}"#, "[".repeat(depth), "]".repeat(depth));
        // raw values are skipped without recursion: any depth is an object (and no stack overflow)
        assert!(is_object(&nested(126, "1")) && is_object(&nested(200, "1")) && is_object(&nested(100_000, "1")));
        // but a text with a \u escape is parsed in full too, where serde_json stops at 128 levels
        assert!(is_object(&nested(126, r#""\u00e9""#)));
        assert!(!representable(&nested(200, "1")));
        assert!(read_top(&nested(200, r#""\u00e9""#)).is_none());
    }

    #[test]
    fn val_roles() {
        assert_eq!(raw(r#""plain""#).as_str().as_deref(), Some("plain"));
        assert!(matches!(raw(r#""plain""#).as_str(), Some(Cow::Borrowed(_))));
        assert_eq!(raw(r#""a\tb\u00e9""#).as_str().as_deref(), Some("a\tbé"));
        assert_eq!(raw(r#""""#).as_str().as_deref(), Some(""));
        for not_str in ["1", "null", "{}", "[\"a\"]", "true"] {
            assert_eq!(raw(not_str).as_str(), None, "{not_str}");
            assert_eq!(raw(not_str).raw(), Some(not_str));
        }
        assert_eq!(raw(r#""s""#).raw(), None);
        let s = Val::Str(Cow::Borrowed("x\"y"));
        assert_eq!((s.as_str().as_deref(), s.raw(), s.json()), (Some("x\"y"), None, None));
        let j = Val::Json("[1]".to_string());
        assert_eq!((j.as_str(), j.raw(), j.json()), (None, None, None));
        let mut out = Vec::new();
        for v in [raw(r#"{"a": 1}"#), s, j] {
            v.write(&mut out);
            out.push(b' ');
        }
        assert_eq!(out, br#"{"a": 1} "x\"y" [1] "#);
    }

    fn str_json(s: &str) -> String {
        let mut out = Vec::new();
        write_str(&mut out, s);
        String::from_utf8(out).expect("UTF-8")
    }

    #[test]
    fn write_str_escapes() {
        assert_eq!(str_json(""), r#""""#);
        assert_eq!(str_json("a\"b\\c\n\r\t\u{8}\u{c}\u{1}\u{1f}\u{7f}é€😀/"),
                   "\"a\\\"b\\\\c\\n\\r\\t\\b\\f\\u0001\\u001f\u{7f}é€😀/\"");
        assert_eq!(str_json("\0"), r#""\u0000""#);
    }

    #[test]
    fn write_str_matches_serde_json_at_every_position() {
        // the 8-byte skip must never pass over a byte that needs escaping
        let fillers = ["abcdefghijklmnopqrst", "éééééééééé", "€€€€€€€", "😀😀😀😀😀", "\u{7f}\u{7f}\u{7f}\u{7f}\u{7f}\u{7f}\u{7f}\u{7f}\u{7f}\u{7f}\u{7f}\u{7f}\u{7f}\u{7f}\u{7f}\u{7f}\u{7f}"];
        for filler in fillers {
            for c in (0u8..0x80).map(char::from).chain(['é', '\u{2028}', '\u{ffff}', '😀']) {
                for at in filler.char_indices().map(|(i, _)| i).chain([filler.len()]) {
                    let s = format!("{}{c}{}", &filler[..at], &filler[at..]);
                    assert_eq!(str_json(&s), serde_json::to_string(&s).expect("str"), "{s:?}");
                }
            }
        }
        for b in [0x1fu8, 0x20, 0x21, 0x22, 0x5b, 0x5c, 0x5d, 0x7f] {
            let s = String::from_utf8(vec![b; 23]).expect("ASCII");
            assert_eq!(str_json(&s), serde_json::to_string(&s).expect("str"), "{b:#x}");
        }
    }

    #[test]
    fn write_int_whole_range() {
        for v in [0, 7, -7, 10, -10, 1_234_567_890, i64::MAX, i64::MIN, i64::MIN + 1] {
            let mut out = Vec::new();
            write_int(&mut out, v);
            assert_eq!(String::from_utf8(out).expect("ASCII"), v.to_string());
        }
    }

    #[test]
    fn representable_refuses_what_serde_json_values_cannot_hold() {
        assert!(representable(r#"{"a":[1,"x",null],"n":1.7976931348623157e308}"#));
        assert!(!representable("1e309") && !representable(r#""\udc00""#) && !representable("{") && !representable(""));
    }
}
