//! `[admin] keys_store`: where runtime keys (made through `/admin/keys`)
//! are kept, read off its config text.

use std::path::PathBuf;

use super::Config;

/// A keys store to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeysStoreSpec {
    /// A SQLite file; other processes on the host see its writes by polling.
    Sqlite(PathBuf),
    /// A PostgreSQL URL; replicas see each other's writes by NOTIFY and polling.
    Postgres(String),
}

impl KeysStoreSpec {
    /// The store `config` asks for, or `None` when it is off. The bare
    /// default `"sqlite"` opens only with an admin token: without one nothing
    /// could write keys into it, and a gateway (or test) without an admin API
    /// should not create files. A store named explicitly (a path or a URL)
    /// opens either way, so replicas without an admin API can still read the
    /// keys their fleet shares.
    pub fn from_config(config: &Config) -> Result<Option<Self>, String> {
        let admin = &config.admin;
        if admin.keys_store == "sqlite" && admin.token.is_none() {
            return Ok(None);
        }
        Self::parse(&admin.keys_store, &config.usage.data_dir)
    }

    /// Parses `none`, `sqlite` (in `data_dir`), `sqlite:PATH`, a path ending
    /// in `.sqlite` or `.db`, or a `postgres://`/`postgresql://` URL.
    pub fn parse(text: &str, data_dir: &str) -> Result<Option<Self>, String> {
        Self::parse_named(text, data_dir, "keys.sqlite")
    }

    /// As `parse`, with `file` as the name of the bare `sqlite` form's file.
    /// `[batch] store` is read this way too (its file is `jobs.sqlite`).
    pub fn parse_named(text: &str, data_dir: &str, file: &str) -> Result<Option<Self>, String> {
        let text = text.trim();
        if text == "none" {
            return Ok(None);
        }
        if text == "sqlite" {
            return Ok(Some(Self::Sqlite(PathBuf::from(data_dir).join(file))));
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return match text.parse::<tokio_postgres::Config>() {
                Ok(_) => Ok(Some(Self::Postgres(text.to_owned()))),
                // Not echoed: the URL may hold a password.
                Err(_) => Err("not a valid postgres:// URL".to_owned()),
            };
        }
        let path = text.strip_prefix("sqlite:").unwrap_or(text);
        let named_sqlite =
            text.starts_with("sqlite:") || path.ends_with(".sqlite") || path.ends_with(".db");
        if named_sqlite && !path.is_empty() && !path.ends_with('/') {
            return Ok(Some(Self::Sqlite(PathBuf::from(path))));
        }
        Err(format!(
            "`{}` is not \"sqlite\", \"sqlite:PATH\", a .sqlite/.db path, a postgres:// URL or \"none\"",
            crate::util::text::clip(text)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_form() {
        let parse = |text| KeysStoreSpec::parse(text, "data");
        assert_eq!(parse("none"), Ok(None));
        assert_eq!(
            parse("sqlite"),
            Ok(Some(KeysStoreSpec::Sqlite("data/keys.sqlite".into())))
        );
        assert_eq!(
            parse("sqlite:/var/lib/sluice/k.file"),
            Ok(Some(KeysStoreSpec::Sqlite("/var/lib/sluice/k.file".into())))
        );
        assert_eq!(
            parse("/tmp/keys.db"),
            Ok(Some(KeysStoreSpec::Sqlite("/tmp/keys.db".into())))
        );
        assert_eq!(
            parse("postgresql://u@db/x"),
            Ok(Some(KeysStoreSpec::Postgres("postgresql://u@db/x".into())))
        );
        for bad in [
            "",
            "sqlite:",
            "redis://x",
            "keys.txt",
            "postgres://u@h:notaport/x",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_default_opens_only_with_an_admin_token() {
        let mut config: Config = crate::config::load_from_str(
            "[[deployments]]\nname = \"d\"\nprovider = \"mock\"\nmodels = [\"m\"]\n",
            "test",
            &Default::default(),
        )
        .unwrap();
        assert_eq!(KeysStoreSpec::from_config(&config), Ok(None));
        config.admin.token = Some("0123456789abcdef".into());
        assert!(matches!(
            KeysStoreSpec::from_config(&config),
            Ok(Some(KeysStoreSpec::Sqlite(_)))
        ));
        config.admin.token = None;
        config.admin.keys_store = "/tmp/shared-keys.sqlite".into();
        assert!(matches!(
            KeysStoreSpec::from_config(&config),
            Ok(Some(KeysStoreSpec::Sqlite(_)))
        ));
    }
}
