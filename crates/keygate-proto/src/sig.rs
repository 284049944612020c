//! Signatures on the wire: base64url, or a Node.js `Buffer` as JSON.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A signature as a client sends it: base64url of the 64 bytes (the documented
/// form), or a Node.js `Buffer` as JSON, `{"type":"Buffer","data":[…]}` with
/// exactly 64 integers 0..=255 (what `@textile/crypto` clients send). Either way
/// it reads as the base64url string, which `keygate_core::challenge::decode_signature` then checks.
/// Anything else is refused without quoting the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireSignature(pub String);

impl<'de> serde::Deserialize<'de> for WireSignature {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(WireSignatureVisitor).map(WireSignature)
    }
}

struct WireSignatureVisitor;

impl<'de> serde::de::Visitor<'de> for WireSignatureVisitor {
    type Value = String;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a base64url string or a Buffer of 64 bytes")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<String, A::Error> {
        use serde::de::Error;
        let mut buffer = false;
        let mut data: Option<Vec<u8>> = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                "type" if !buffer => {
                    if map.next_value::<std::borrow::Cow<'de, str>>()? != "Buffer" {
                        return Err(A::Error::custom("a signature object must be a Buffer"));
                    }
                    buffer = true;
                }
                // u8 refuses negatives, fractions and anything above 255.
                "data" if data.is_none() => data = Some(map.next_value()?),
                _ => return Err(A::Error::custom("unexpected field in a signature")),
            }
        }
        match data {
            Some(bytes) if buffer && bytes.len() == 64 => Ok(URL_SAFE_NO_PAD.encode(bytes)),
            _ => Err(A::Error::custom(
                "a signature Buffer holds exactly 64 bytes",
            )),
        }
    }
}

/// `deserialize_with` for a required signature field ([`WireSignature`]).
pub fn de_signature<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    <WireSignature as serde::Deserialize>::deserialize(d).map(|w| w.0)
}

/// `deserialize_with` for an optional signature field ([`WireSignature`]).
pub fn de_optional_signature<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    <Option<WireSignature> as serde::Deserialize>::deserialize(d).map(|w| w.map(|w| w.0))
}

/// The OpenAPI schema of a signature field: the base64url string, or the
/// `Buffer` object of exactly 64 integers 0..=255.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for WireSignature {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Type};
        let text = ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("base64url (no padding) of the 64 signature bytes"));
        let byte = ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(0))
            .maximum(Some(255));
        let buffer = ObjectBuilder::new()
            .description(Some("a Node.js Buffer as JSON"))
            .property(
                "type",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["Buffer"])),
            )
            .property(
                "data",
                ArrayBuilder::new()
                    .items(byte)
                    .min_items(Some(64))
                    .max_items(Some(64)),
            )
            .required("type")
            .required("data")
            .additional_properties(Some(
                utoipa::openapi::schema::AdditionalProperties::FreeForm(false),
            ));
        OneOfBuilder::new().item(text).item(buffer).into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for WireSignature {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("WireSignature")
    }
}
