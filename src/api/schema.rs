//! Schema pieces that attributes on a field cannot express.

use schemars::{Schema, SchemaGenerator, json_schema};

/// Longest value of a free-form attribute.
const ATTRIBUTE_VALUE_MAX: u32 = 1024;
/// Most attributes one user may carry.
const ATTRIBUTES_MAX: u32 = 64;

/// `attributes`: at most 64 string values of at most 1 KiB each, keys of at most 63
/// characters in the label-key alphabet.
pub(crate) fn attributes(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "maxProperties": ATTRIBUTES_MAX,
        "additionalProperties": {"type": "string", "maxLength": ATTRIBUTE_VALUE_MAX},
        "x-kubernetes-validations": [{
            "rule": "self.all(k, k.matches('^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$'))",
            "message": "attribute names must be 1-63 letters, digits, '.', '_' or '-', starting and ending with a letter or digit"
        }]
    })
}
