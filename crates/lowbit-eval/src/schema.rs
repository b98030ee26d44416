//! A small JSON Schema validator for the subset `report.schema.json` uses: `type` (one or a
//! list), `const`, `required`, `properties`, `items`, `anyOf` and local `$ref`s
//! (`#/$defs/name`). Enough to check that a report has every key with the right type.

use serde_json::Value;

fn type_ok(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        _ => false,
    }
}

fn resolve<'a>(root: &'a Value, r: &str) -> Option<&'a Value> {
    let path = r.strip_prefix("#/")?;
    path.split('/').try_fold(root, |v, k| v.get(k))
}

/// Validates `doc` against `schema`; returns one message per violation (empty: valid).
///
/// ```
/// let schema = serde_json::json!({"type": "object", "required": ["a"],
///                                 "properties": {"a": {"type": "integer"}}});
/// assert!(lowbit_eval::validate_schema(&schema, &serde_json::json!({"a": 1})).is_empty());
/// assert_eq!(lowbit_eval::validate_schema(&schema, &serde_json::json!({"a": "x"})).len(), 1);
/// ```
pub fn validate_schema(schema: &Value, doc: &Value) -> Vec<String> {
    let mut errs = Vec::new();
    check(schema, schema, doc, "$", &mut errs);
    errs
}

fn check(root: &Value, s: &Value, v: &Value, at: &str, errs: &mut Vec<String>) {
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        match resolve(root, r) {
            Some(t) => check(root, t, v, at, errs),
            None => errs.push(format!("{at}: unresolvable $ref {r}")),
        }
        return;
    }
    if let Some(any) = s.get("anyOf").and_then(Value::as_array)
        && !any.iter().any(|alt| {
            let mut e = Vec::new();
            check(root, alt, v, at, &mut e);
            e.is_empty()
        })
    {
        errs.push(format!("{at}: matches no alternative of anyOf"));
    }
    if let Some(t) = s.get("type") {
        let ok = match t {
            Value::String(t) => type_ok(t, v),
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).any(|t| type_ok(t, v)),
            _ => true,
        };
        if !ok {
            errs.push(format!("{at}: expected type {t}, got {v}"));
            return;
        }
    }
    if let Some(c) = s.get("const")
        && c != v
    {
        errs.push(format!("{at}: expected {c}, got {v}"));
    }
    if let Value::Object(map) = v {
        for k in s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !map.contains_key(k) {
                errs.push(format!("{at}: missing required key `{k}`"));
            }
        }
        if let Some(props) = s.get("properties").and_then(Value::as_object) {
            for (k, ps) in props {
                if let Some(x) = map.get(k) {
                    check(root, ps, x, &format!("{at}.{k}"), errs);
                }
            }
        }
    }
    if let (Value::Array(items), Some(is)) = (v, s.get("items")) {
        for (i, x) in items.iter().enumerate() {
            check(root, is, x, &format!("{at}[{i}]"), errs);
        }
    }
}
