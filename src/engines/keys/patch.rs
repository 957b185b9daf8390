//! Request bodies of `POST` and `PATCH /admin/keys`: the config file's key
//! fields, read one by one so an error can name the field (`param`), with
//! JSON merge semantics: an absent field is unchanged, `null` clears it.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::error::FieldError;
use super::{KeySettings, NewKey};
use crate::config::Priority;

/// Longest name, org or tier; model names get `MAX_TEXT` too.
const MAX_TEXT: usize = 256;
/// Most models in one allow-list.
const MAX_MODELS: usize = 1024;

/// What a patch does to one field.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Change<T> {
    #[default]
    Keep,
    /// Back to the default (`null` in the body).
    Clear,
    Set(T),
}

impl<T: Clone> Change<T> {
    fn apply(&self, field: &mut Option<T>) {
        match self {
            Self::Keep => {}
            Self::Clear => *field = None,
            Self::Set(value) => *field = Some(value.clone()),
        }
    }
}

/// Changes to a key. `name` cannot be cleared.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyPatch {
    pub name: Option<String>,
    pub org: Change<String>,
    pub tier: Change<String>,
    pub rpm: Change<u64>,
    pub tpm: Change<u64>,
    pub models: Change<Vec<String>>,
    pub priority: Change<Priority>,
    pub max_priority: Change<Priority>,
    /// Cleared means the default, `true`.
    pub cache: Change<bool>,
    /// Cleared means the default, `false`.
    pub queue_in_maintenance: Change<bool>,
    pub max_input_tokens: Change<u64>,
    pub max_output_tokens: Change<u64>,
    pub budget_daily_usd: Change<f64>,
    pub budget_monthly_usd: Change<f64>,
}

fn change<T: DeserializeOwned>(field: &str, value: Value) -> Result<Change<T>, FieldError> {
    if value.is_null() {
        return Ok(Change::Clear);
    }
    serde_json::from_value(value)
        .map(Change::Set)
        .map_err(|error| FieldError::at(field, format!("Invalid value for '{field}': {error}.")))
}

impl KeyPatch {
    /// Reads a JSON object body; any other field is refused.
    pub fn from_json(body: &[u8]) -> Result<Self, FieldError> {
        let map: Map<String, Value> = serde_json::from_slice(body).map_err(|error| FieldError {
            message: format!("The body must be a JSON object of key fields: {error}."),
            param: None,
        })?;
        let mut patch = Self::default();
        for (field, value) in map {
            let field = field.as_str();
            match field {
                "name" => match change::<String>(field, value)? {
                    Change::Set(name) => patch.name = Some(name),
                    _ => return Err(FieldError::at(field, "'name' cannot be null.".into())),
                },
                "org" => patch.org = change(field, value)?,
                "tier" => patch.tier = change(field, value)?,
                "rpm" => patch.rpm = change(field, value)?,
                "tpm" => patch.tpm = change(field, value)?,
                "models" => patch.models = change(field, value)?,
                "priority" => patch.priority = change(field, value)?,
                "max_priority" => patch.max_priority = change(field, value)?,
                "cache" => patch.cache = change(field, value)?,
                "queue_in_maintenance" => patch.queue_in_maintenance = change(field, value)?,
                "max_input_tokens" => patch.max_input_tokens = change(field, value)?,
                "max_output_tokens" => patch.max_output_tokens = change(field, value)?,
                "budget_daily_usd" => patch.budget_daily_usd = change(field, value)?,
                "budget_monthly_usd" => patch.budget_monthly_usd = change(field, value)?,
                _ => {
                    return Err(FieldError::at(
                        field,
                        format!(
                            "Unrecognized key field: '{}'.",
                            crate::util::text::clip(field)
                        ),
                    ));
                }
            }
        }
        Ok(patch)
    }

    /// The key a `POST` body describes: a name and the fields it sets.
    pub fn into_new_key(self) -> Result<NewKey, FieldError> {
        let Some(name) = self.name.clone() else {
            return Err(FieldError::at(
                "name",
                "Missing required parameter: 'name'.".into(),
            ));
        };
        let mut new = NewKey {
            name,
            settings: KeySettings::default(),
        };
        self.apply(&mut new.name, &mut new.settings);
        check(&new.name, &new.settings)?;
        Ok(new)
    }

    /// Applies the changes to a key's name and settings.
    pub fn apply(&self, name: &mut String, settings: &mut KeySettings) {
        if let Some(new_name) = &self.name {
            name.clone_from(new_name);
        }
        self.org.apply(&mut settings.org);
        self.tier.apply(&mut settings.tier);
        self.rpm.apply(&mut settings.rpm);
        self.tpm.apply(&mut settings.tpm);
        self.models.apply(&mut settings.models);
        self.priority.apply(&mut settings.priority);
        self.max_priority.apply(&mut settings.max_priority);
        let mut cache = Some(settings.cache);
        self.cache.apply(&mut cache);
        settings.cache = cache.unwrap_or(true);
        let mut queue = Some(settings.queue_in_maintenance);
        self.queue_in_maintenance.apply(&mut queue);
        settings.queue_in_maintenance = queue.unwrap_or(false);
        self.max_input_tokens
            .apply(&mut settings.budget.max_input_tokens);
        self.max_output_tokens
            .apply(&mut settings.budget.max_output_tokens);
        self.budget_daily_usd
            .apply(&mut settings.spend.budget_daily_usd);
        self.budget_monthly_usd
            .apply(&mut settings.spend.budget_monthly_usd);
    }
}

/// The checks that need no other keys or config: sizes, zero limits,
/// budgets. The gateway's validator checks the rest (tiers exist, models
/// are served).
pub fn check(name: &str, settings: &KeySettings) -> Result<(), FieldError> {
    let text_ok = |text: &str| {
        !text.trim().is_empty() && text.len() <= MAX_TEXT && !text.chars().any(char::is_control)
    };
    if !text_ok(name) {
        return Err(FieldError::at(
            "name",
            format!("'name' must be 1 to {MAX_TEXT} printable characters."),
        ));
    }
    for (field, value) in [("org", &settings.org), ("tier", &settings.tier)] {
        if value.as_deref().is_some_and(|text| !text_ok(text)) {
            return Err(FieldError::at(
                field,
                format!("'{field}' must be 1 to {MAX_TEXT} printable characters, or null."),
            ));
        }
    }
    if let Some(models) = &settings.models
        && (models.len() > MAX_MODELS || !models.iter().all(|m| text_ok(m)))
    {
        return Err(FieldError::at(
            "models",
            format!(
                "'models' must list at most {MAX_MODELS} model names, or be null for every model."
            ),
        ));
    }
    let counts = [
        ("rpm", settings.rpm),
        ("tpm", settings.tpm),
        ("max_input_tokens", settings.budget.max_input_tokens),
        ("max_output_tokens", settings.budget.max_output_tokens),
    ];
    for (field, value) in counts {
        if value == Some(0) {
            return Err(FieldError::at(
                field,
                format!("'{field}' must be at least 1 (null for no limit)."),
            ));
        }
    }
    let amounts = [
        ("budget_daily_usd", settings.spend.budget_daily_usd),
        ("budget_monthly_usd", settings.spend.budget_monthly_usd),
    ];
    for (field, value) in amounts {
        if value.is_some_and(|v| !(v > 0.0 && v.is_finite())) {
            return Err(FieldError::at(
                field,
                format!("'{field}' must be a positive amount (null for no budget)."),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_keeps_null_clears_and_values_set() {
        let mut name = "a".to_owned();
        let mut settings = KeySettings {
            rpm: Some(10),
            tpm: Some(100),
            cache: false,
            ..KeySettings::default()
        };
        let patch = KeyPatch::from_json(br#"{"rpm": null, "org": "eng", "cache": null}"#).unwrap();
        patch.apply(&mut name, &mut settings);
        assert_eq!(settings.rpm, None);
        assert_eq!(settings.tpm, Some(100));
        assert_eq!(settings.org.as_deref(), Some("eng"));
        assert!(settings.cache);
        assert_eq!(name, "a");
    }

    #[test]
    fn errors_name_the_field() {
        let param = |body: &[u8]| KeyPatch::from_json(body).unwrap_err().param;
        assert_eq!(param(br#"{"rpm": "ten"}"#).as_deref(), Some("rpm"));
        assert_eq!(param(br#"{"secret": 1}"#).as_deref(), Some("secret"));
        assert_eq!(param(br#"{"name": null}"#).as_deref(), Some("name"));
        assert_eq!(
            param(br#"{"priority": "urgent"}"#).as_deref(),
            Some("priority")
        );
        assert_eq!(param(b"[1]"), None);
        let new = |body: &[u8]| KeyPatch::from_json(body).unwrap().into_new_key();
        assert_eq!(
            new(br#"{"rpm": 1}"#).unwrap_err().param.as_deref(),
            Some("name")
        );
        assert_eq!(
            new(br#"{"name": "a", "tpm": 0}"#)
                .unwrap_err()
                .param
                .as_deref(),
            Some("tpm")
        );
        assert_eq!(
            new(br#"{"name": "a", "budget_daily_usd": -1}"#)
                .unwrap_err()
                .param
                .as_deref(),
            Some("budget_daily_usd")
        );
        assert_eq!(
            new(br#"{"name": " "}"#).unwrap_err().param.as_deref(),
            Some("name")
        );
        assert!(new(br#"{"name": "a", "models": ["gpt-4o"]}"#).is_ok());
    }
}
