//! The CRDs' admission rules, run outside the cluster: the structural schema (types,
//! lengths, counts, enums, formats, unknown fields) and the CEL rules
//! (`x-kubernetes-validations`) kube-apiserver applies to a new object. `roster import`
//! refuses a row with them before it reaches Git, naming the field and the rule. They are
//! read from the CRD the API server is given ([`super::crds`]), so a rule added to a type is
//! checked here too; an e2e test compares these verdicts with the API server's on Users.
//! Kubernetes' own CEL libraries (`url()`, `isURL`, `duration()` …) are not in the local
//! interpreter: a rule that calls one — none of the User's does — is reported as not
//! evaluable rather than passed.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use serde_json::Value;

/// One rule a new object breaks.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message} (rule: {rule})")]
pub struct Violation {
    /// Where, as the API server names it: `spec.email`, `spec.groups[2]`.
    pub field: String,
    /// The rule: a schema keyword with its value, or a CEL expression.
    pub rule: String,
    /// What is wrong, in the CRD's words where it has some.
    pub message: String,
}

/// Why a CRD's rules cannot be run here.
#[derive(Debug, thiserror::Error)]
pub enum Unusable {
    /// The CRD has no served version with a schema.
    #[error("CRD {0} has no schema")]
    NoSchema(String),
    /// A CEL rule the local interpreter cannot parse.
    #[error("CEL rule {rule:?} at {field} does not parse here: {error}")]
    Rule {
        /// Where it is declared.
        field: String,
        /// The expression.
        rule: String,
        /// The parser's complaint.
        error: String,
    },
}

/// A CRD's admission rules, the CEL ones compiled once.
pub struct Admission {
    schema: JSONSchemaProps,
    env: Arc<cel::Env>,
    programs: HashMap<String, cel::Program>,
}

impl Admission {
    /// The rules of `crd`'s first served version.
    pub fn of(crd: &CustomResourceDefinition) -> Result<Self, Unusable> {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let schema = crd
            .spec
            .versions
            .iter()
            .find(|v| v.served)
            .and_then(|v| v.schema.as_ref()?.open_api_v3_schema.clone())
            .ok_or(Unusable::NoSchema(name))?;
        let env = Arc::new(cel::Env::stdlib());
        let mut programs = HashMap::new();
        compile(&env, &schema, "", &mut programs)?;
        Ok(Self { schema, env, programs })
    }

    /// Every rule `object` (a whole manifest: apiVersion, kind, metadata, spec) breaks on
    /// creation, in document order. Empty when the API server would admit it.
    pub fn check(&self, object: &Value) -> Vec<Violation> {
        let mut found = Vec::new();
        match object.pointer("/metadata/name").map(Value::as_str) {
            Some(Some(name)) if is_dns_subdomain(name) => {}
            None => found.push(Violation {
                field: "metadata.name".into(),
                rule: "required".into(),
                message: "is required".into(),
            }),
            Some(_) => found.push(Violation {
                field: "metadata.name".into(),
                rule: "RFC 1123 subdomain".into(),
                message: "must be lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253 characters".into(),
            }),
        }
        if let Some(namespace) = object.pointer("/metadata/namespace")
            && !namespace
                .as_str()
                .is_some_and(|ns| ns.len() <= 63 && !ns.contains('.') && is_dns_subdomain(ns))
        {
            found.push(Violation {
                field: "metadata.namespace".into(),
                rule: "RFC 1123 label".into(),
                message: "must be lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters".into(),
            });
        }
        self.node(&self.schema, object, "", &mut found);
        found
    }

    fn node(&self, schema: &JSONSchemaProps, value: &Value, path: &str, found: &mut Vec<Violation>) {
        let mut violate = |rule: String, message: String| {
            found.push(Violation { field: display(path), rule, message });
        };
        // The API server prunes a null it may not hold before validating: as if absent.
        if value.is_null() {
            return;
        }
        if let Some(expected) = schema.type_.as_deref()
            && schema.x_kubernetes_int_or_string != Some(true)
            && !has_type(value, expected)
        {
            violate(format!("type: {expected}"), format!("must be of type {expected}"));
            return;
        }
        if let Some(allowed) = &schema.enum_
            && !allowed.iter().any(|a| a.0 == *value)
        {
            let names: Vec<String> = allowed.iter().map(|a| plain(&a.0)).collect();
            violate(format!("enum: {}", names.join(", ")), format!("must be one of {}", names.join(", ")));
        }
        match value {
            Value::String(text) => {
                let length = text.chars().count() as i64;
                if let Some(max) = schema.max_length.filter(|max| length > *max) {
                    violate(format!("maxLength: {max}"), format!("must be at most {max} characters"));
                }
                if let Some(min) = schema.min_length.filter(|min| length < *min) {
                    violate(format!("minLength: {min}"), format!("must be at least {min} characters"));
                }
                if schema.format.as_deref() == Some("date-time")
                    && text.parse::<k8s_openapi::jiff::Timestamp>().is_err()
                {
                    violate(
                        "format: date-time".into(),
                        "must be an RFC 3339 time such as 2027-03-31T18:00:00Z".into(),
                    );
                }
            }
            Value::Array(items) => {
                let count = items.len() as i64;
                if let Some(max) = schema.max_items.filter(|max| count > *max) {
                    violate(format!("maxItems: {max}"), format!("must have at most {max} items"));
                }
                if let Some(min) = schema.min_items.filter(|min| count < *min) {
                    violate(format!("minItems: {min}"), format!("must have at least {min} items"));
                }
                if schema.x_kubernetes_list_type.as_deref() == Some("set")
                    && let Some(at) = (1..items.len()).find(|&i| items[..i].contains(&items[i]))
                {
                    violate(
                        "x-kubernetes-list-type: set".into(),
                        format!("holds {} twice: each value may appear once", plain(&items[at])),
                    );
                }
                if let Some(JSONSchemaPropsOrArray::Schema(item)) = &schema.items {
                    for (i, element) in items.iter().enumerate() {
                        self.node(item, element, &format!("{path}[{i}]"), found);
                    }
                }
            }
            Value::Object(fields) => {
                let count = fields.len() as i64;
                if let Some(max) = schema.max_properties.filter(|max| count > *max) {
                    violate(format!("maxProperties: {max}"), format!("must have at most {max} entries"));
                }
                for required in schema.required.iter().flatten() {
                    if fields.get(required).is_none_or(Value::is_null) {
                        found.push(Violation {
                            field: display(&format!("{path}.{required}")),
                            rule: "required".into(),
                            message: "is required".into(),
                        });
                    }
                }
                for (key, field) in fields {
                    let declared = schema.properties.as_ref().and_then(|p| p.get(key));
                    match (declared, &schema.additional_properties) {
                        (Some(declared), _) => self.node(declared, field, &format!("{path}.{key}"), found),
                        (None, Some(JSONSchemaPropsOrBool::Schema(each))) => {
                            self.node(each, field, &format!("{path}[{key}]"), found)
                        }
                        (None, Some(JSONSchemaPropsOrBool::Bool(true))) => {}
                        // metadata is the API server's own; an object's top-level type fields too.
                        _ if path.is_empty()
                            && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") => {}
                        _ if schema.x_kubernetes_preserve_unknown_fields == Some(true) => {}
                        _ => found.push(Violation {
                            field: display(&format!("{path}.{key}")),
                            rule: "unknown field".into(),
                            message: format!(
                                "is not a field of {}",
                                if path.is_empty() { "the object" } else { &path[1..] }
                            ),
                        }),
                    }
                }
            }
            Value::Number(number) => {
                let n = number.as_f64().unwrap_or_default();
                if let Some(min) = schema.minimum.filter(|min| n < *min) {
                    violate(format!("minimum: {min}"), format!("must be at least {min}"));
                }
                if let Some(max) = schema.maximum.filter(|max| n > *max) {
                    violate(format!("maximum: {max}"), format!("must be at most {max}"));
                }
            }
            _ => {}
        }
        self.rules(schema, value, path, found);
    }

    /// The CEL rules declared at this node, with `self` the value. Transition rules (those
    /// reading `oldSelf`) apply only to updates and are skipped.
    fn rules(&self, schema: &JSONSchemaProps, value: &Value, path: &str, found: &mut Vec<Violation>) {
        for rule in schema.x_kubernetes_validations.iter().flatten() {
            let Some(program) = self.programs.get(&rule.rule) else { continue };
            let field = match &rule.field_path {
                Some(relative) => display(&format!("{path}{relative}")),
                None => display(path),
            };
            let mut context = cel::Context::with_env(self.env.clone());
            context.add_variable_from_value("self", cel_value(value));
            let verdict = program.execute(&context).map_err(|e| e.to_string());
            let message = match verdict {
                Ok(cel::Value::Bool(true)) => continue,
                Ok(_) => rule.message.clone().unwrap_or_else(|| format!("failed rule: {}", rule.rule)),
                Err(error) => format!("the rule could not be evaluated: {error}"),
            };
            found.push(Violation { field, rule: rule.rule.clone(), message });
        }
    }
}

/// Compiles every creation rule under `schema` into `programs`, keyed by its expression.
fn compile(
    env: &cel::Env,
    schema: &JSONSchemaProps,
    path: &str,
    programs: &mut HashMap<String, cel::Program>,
) -> Result<(), Unusable> {
    for rule in schema.x_kubernetes_validations.iter().flatten() {
        if rule.rule.contains("oldSelf") || programs.contains_key(&rule.rule) {
            continue;
        }
        let program = env.compile(&rule.rule).map_err(|error| Unusable::Rule {
            field: display(path),
            rule: rule.rule.clone(),
            error: error.to_string(),
        })?;
        programs.insert(rule.rule.clone(), program);
    }
    for (key, property) in schema.properties.iter().flatten() {
        compile(env, property, &format!("{path}.{key}"), programs)?;
    }
    if let Some(JSONSchemaPropsOrArray::Schema(item)) = &schema.items {
        compile(env, item, &format!("{path}[]"), programs)?;
    }
    if let Some(JSONSchemaPropsOrBool::Schema(each)) = &schema.additional_properties {
        compile(env, each, &format!("{path}[]"), programs)?;
    }
    Ok(())
}

/// A JSON value as Kubernetes' CEL sees it: whole numbers are `int` (not `uint`), objects
/// maps with string keys.
fn cel_value(value: &Value) -> cel::Value {
    match value {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => cel::Value::Int(i),
            (None, Some(f)) => cel::Value::Float(f),
            (None, None) => cel::Value::Null,
        },
        Value::String(s) => cel::Value::String(std::sync::Arc::new(s.clone())),
        Value::Array(items) => cel::Value::List(std::sync::Arc::new(items.iter().map(cel_value).collect())),
        Value::Object(fields) => {
            let map: HashMap<cel::objects::Key, cel::Value> = fields
                .iter()
                .map(|(k, v)| (cel::objects::Key::String(std::sync::Arc::new(k.clone())), cel_value(v)))
                .collect();
            cel::Value::Map(cel::objects::Map { map: std::sync::Arc::new(map) })
        }
    }
}

/// A path as people read it: `spec.email`, or `(the object)` for the root.
fn display(path: &str) -> String {
    match path.strip_prefix('.') {
        Some(rest) => rest.to_owned(),
        None if path.is_empty() => "(the object)".to_owned(),
        None => path.to_owned(),
    }
}

/// A JSON value as a message shows it: strings without quotes.
fn plain(value: &Value) -> String {
    value.as_str().map_or_else(|| value.to_string(), str::to_owned)
}

fn has_type(value: &Value, expected: &str) -> bool {
    match expected {
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        _ => true,
    }
}

/// Whether `name` is a DNS subdomain (RFC 1123), as the API server requires of a custom
/// resource's name.
pub fn is_dns_subdomain(name: &str) -> bool {
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            let bytes = label.as_bytes();
            !bytes.is_empty()
                && alnum(bytes[0])
                && alnum(bytes[bytes.len() - 1])
                && bytes.iter().all(|&c| alnum(c) || c == b'-')
        })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::User;
    use kube::CustomResourceExt;

    fn user(spec: Value) -> Value {
        json!({"apiVersion": "roster.dev/v1alpha1", "kind": "User", "metadata": {"name": "jane"}, "spec": spec})
    }

    fn fields(found: &[Violation]) -> Vec<(&str, &str)> {
        found.iter().map(|v| (v.field.as_str(), v.rule.as_str())).collect()
    }

    #[test]
    fn every_creation_rule_of_every_crd_parses_here() {
        for crd in crate::api::crds() {
            Admission::of(&crd).unwrap();
        }
    }

    #[test]
    fn a_sound_user_breaks_no_rule() {
        let admission = Admission::of(&User::crd()).unwrap();
        let found = admission.check(&user(json!({
            "email": "jürgen.o'brien+ops@example.co.uk", "username": "jurgen", "givenName": "Jürgen",
            "phone": "+15551234567", "locale": "pt-BR", "timezone": "America/Sao_Paulo",
            "groups": ["sre", "admins"], "attributes": {"orgUnit": "Platform", "cost-center": "4711"},
            "state": "Inactive", "expiresAt": "2027-03-31T18:00:00Z", "mfa": {"required": false},
            "invite": {"policy": "Manual"},
        })));
        assert_eq!(found, vec![]);
    }

    #[test]
    fn each_broken_rule_is_named_with_its_field_and_message() {
        let admission = Admission::of(&User::crd()).unwrap();
        let long = "x".repeat(129);
        let found = admission.check(&json!({
            "apiVersion": "roster.dev/v1alpha1", "kind": "User",
            "metadata": {"name": "Jane_Doe-with-a-name-far-longer-than-fifty-six-characters-x"},
            "spec": {
                "email": "not an address", "username": "-jane", "givenName": long, "phone": "5551234567",
                "locale": "english", "timezone": "Europe/ Berlin", "groups": ["sre", "sre", ""],
                "attributes": {"Cost Center": "1"}, "state": "Paused", "expiresAt": "tomorrow",
                "mfa": {"required": "yes"}, "colour": "blue",
            },
        }));
        let fields = fields(&found);
        for expected in [
            ("metadata.name", "RFC 1123 subdomain"),
            ("spec.email", crate::api::user::EMAIL_RULE),
            ("spec.givenName", "maxLength: 128"),
            ("spec.groups", "x-kubernetes-list-type: set"),
            ("spec.groups[2]", "minLength: 1"),
            ("spec.state", "enum: Active, Inactive"),
            ("spec.expiresAt", "format: date-time"),
            ("spec.mfa.required", "type: boolean"),
            ("spec.colour", "unknown field"),
            ("(the object)", "size(self.metadata.name) <= 56"),
        ] {
            assert!(fields.contains(&expected), "{expected:?} missing from {fields:#?}");
        }
        for field in ["spec.username", "spec.phone", "spec.locale", "spec.timezone", "spec.attributes"] {
            let violation =
                found.iter().find(|v| v.field == field).unwrap_or_else(|| panic!("{field}: {found:#?}"));
            assert!(violation.rule.contains("matches("), "{violation}");
            assert!(!violation.message.starts_with("failed rule"), "the CRD's own message: {violation}");
        }
        let email = found.iter().find(|v| v.field == "spec.email").unwrap();
        assert_eq!(email.message, crate::api::user::EMAIL_MESSAGE);
    }

    #[test]
    fn a_missing_required_field_is_named() {
        let admission = Admission::of(&User::crd()).unwrap();
        assert_eq!(
            fields(&admission.check(&user(json!({"username": "jane"})))),
            vec![("spec.email", "required")]
        );
    }

    #[test]
    fn lengths_count_characters_not_bytes() {
        let admission = Admission::of(&User::crd()).unwrap();
        let name = "é".repeat(128);
        assert_eq!(admission.check(&user(json!({"email": "j@example.com", "givenName": name}))), vec![]);
    }

    #[test]
    fn transition_rules_do_not_apply_to_new_objects() {
        let admission = Admission::of(&crate::api::UserInvite::crd()).unwrap();
        let invite = json!({
            "apiVersion": "roster.dev/v1alpha1", "kind": "UserInvite", "metadata": {"name": "i"},
            "spec": {"userRef": {"name": "jane"}, "resend": 3},
        });
        assert_eq!(admission.check(&invite), vec![]);
    }

    #[test]
    fn the_examples_break_no_rule() {
        for (file, crd) in
            [("examples/user.yaml", User::crd()), ("examples/mfareset.yaml", crate::api::MfaReset::crd())]
        {
            let text = std::fs::read_to_string(format!("{}/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
            let admission = Admission::of(&crd).unwrap();
            for document in serde_norway::Deserializer::from_str(&text) {
                let object: Value = serde::Deserialize::deserialize(document).unwrap();
                assert_eq!(admission.check(&object), vec![], "{file}: {object}");
            }
        }
    }

    #[test]
    fn metadata_nulls_and_numbers_are_judged_as_the_api_server_does() {
        let admission = Admission::of(&User::crd()).unwrap();
        let pruned = json!({"metadata": {"name": "jane"}, "spec": {"email": "j@example.com", "phone": null}});
        assert_eq!(admission.check(&pruned), vec![], "a null is pruned, not refused");
        let nameless = json!({"metadata": {"namespace": "Team.A"}, "spec": {"email": null}});
        assert_eq!(
            fields(&admission.check(&nameless)),
            [
                ("metadata.name", "required"),
                ("metadata.namespace", "RFC 1123 label"),
                ("spec.email", "required"),
                ("(the object)", "size(self.metadata.name) <= 56"),
            ]
        );
        let reset = Admission::of(&crate::api::MfaReset::crd()).unwrap();
        let negative = json!({"metadata": {"name": "r"}, "spec": {"userRef": {"name": "jane"}, "reason": "r", "ttlSecondsAfterFinished": -1}});
        assert_eq!(fields(&reset.check(&negative)), [("spec.ttlSecondsAfterFinished", "minimum: 0")]);
    }

    #[test]
    fn dns_subdomains() {
        for good in ["jane", "jane.doe", "j-1", "a", "0"] {
            assert!(is_dns_subdomain(good), "{good}");
        }
        for bad in ["", "Jane", "jane_doe", "-jane", "jane-", "jane..doe", ".jane", "jané"] {
            assert!(!is_dns_subdomain(bad), "{bad}");
        }
    }
}
