//! `${VAR}` (and `${VAR:-default}`) substitution in string values, so secrets
//! come from the environment instead of the file. `$$` writes a literal `$`.

use toml::Value;

/// Replaces variables in every string of the tree. `path` names the value in
/// errors, e.g. `deployments[1].api_key`.
pub fn expand_tree(
    value: &mut Value,
    path: &mut String,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), String> {
    match value {
        Value::String(text) if text.contains('$') => {
            *text = expand_str(text, lookup).map_err(|e| format!("{path}: {e}"))?;
        }
        Value::Array(items) => {
            for (index, item) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{index}]"));
                expand_tree(item, path, lookup)?;
                path.truncate(len);
            }
        }
        Value::Table(table) => {
            for (key, item) in table.iter_mut() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                expand_tree(item, path, lookup)?;
                path.truncate(len);
            }
        }
        _ => {}
    }
    Ok(())
}

fn expand_str(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        rest = &rest[pos..];
        if let Some(after) = rest.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some(after) = rest.strip_prefix("${") {
            let end = after
                .find('}')
                .ok_or_else(|| "unterminated `${` in value".to_owned())?;
            let spec = &after[..end];
            let (name, default) = match spec.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (spec, None),
            };
            if name.is_empty() {
                return Err("empty variable name in `${}`".to_owned());
            }
            match (lookup(name), default) {
                (Some(value), _) => out.push_str(&value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => {
                    return Err(format!("environment variable `{name}` is not set"));
                }
            }
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "KEY").then(|| "secret".to_owned())
    }

    #[test]
    fn substitutes_defaults_and_escapes() {
        assert_eq!(expand_str("a-${KEY}-b", &env).unwrap(), "a-secret-b");
        assert_eq!(expand_str("${NOPE:-x}", &env).unwrap(), "x");
        assert_eq!(expand_str("$$5 $x", &env).unwrap(), "$5 $x");
    }

    #[test]
    fn missing_variable_names_path_and_variable() {
        let mut tree: Value = toml::from_str("[[deployments]]\napi_key = \"${MISSING}\"").unwrap();
        let err = expand_tree(&mut tree, &mut String::new(), &env).unwrap_err();
        assert_eq!(
            err,
            "deployments[0].api_key: environment variable `MISSING` is not set"
        );
    }
}
