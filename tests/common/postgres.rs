//! A fresh database per test on one of the local PostgreSQL servers that
//! `scripts/ensure-deps.sh` starts: 5432 (Debian's) and 5433 (with
//! pgvector). Dropped by `drop_database`, forcibly, connections and all.

pub const PLAIN: u16 = 5432;
pub const WITH_PGVECTOR: u16 = 5433;

pub struct TestDatabase {
    admin: tokio_postgres::Client,
    port: u16,
    name: String,
}

impl TestDatabase {
    pub async fn create(port: u16) -> Self {
        let admin = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres");
        let (admin, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|error| {
                panic!("PostgreSQL must run at 127.0.0.1:{port} (scripts/ensure-deps.sh starts it): {error}")
            });
        tokio::spawn(connection);
        let name = format!("sluice_test_{}", fastrand::u32(..));
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        Self { admin, port, name }
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{}", self.port, self.name)
    }

    pub async fn drop_database(self) {
        self.admin
            .batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", self.name))
            .await
            .unwrap();
    }
}
