//! A scratch PostgreSQL database per test, on the server
//! `scripts/postgres.sh` starts (`HODEI_TEST_DATABASE_URL`).

use hodei::store::{JobStore, PgOptions, PgStore};

use super::Host;

/// A scratch database, dropped at the end of the test.
pub struct Database {
    /// The scratch database's URL.
    pub url: String,
    admin: String,
    runtime: tokio::runtime::Runtime,
}

impl Database {
    /// A fresh database named after `prefix`; `None` (skipped) without a
    /// server, except under `CI=true`.
    pub fn create(prefix: &str) -> Option<Self> {
        let admin = match std::env::var("HODEI_TEST_DATABASE_URL") {
            Ok(url) if !url.is_empty() => url,
            _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
                panic!("CI=true but HODEI_TEST_DATABASE_URL is not set: run scripts/postgres.sh")
            }
            _ => {
                eprintln!("skipped: HODEI_TEST_DATABASE_URL is not set (scripts/postgres.sh)");
                return None;
            }
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let url = runtime
            .block_on(PgStore::scratch_database(&admin, prefix))
            .unwrap();
        Some(Self {
            admin,
            url,
            runtime,
        })
    }

    /// A host on this database.
    pub fn host(&self, extra: &[&str]) -> Host {
        let mut args = vec![
            "--storage",
            "postgres",
            "--database-url",
            &self.url,
            "--database-max-connections",
            "8",
        ];
        args.extend_from_slice(extra);
        Host::start_with(&args)
    }

    /// Writes `plugins` (key, bytes) and `settings` (key, value) straight
    /// into this database, as a host of another build might leave them.
    pub fn write_raw(&self, plugins: &[(&str, &[u8])], settings: &[(&str, &str)]) {
        self.runtime.block_on(async {
            let store = PgStore::connect(&PgOptions {
                url: Some(self.url.clone()),
                ..PgOptions::default()
            })
            .await
            .unwrap();
            for (key, bytes) in plugins {
                store.put_plugin(key, bytes.to_vec()).await.unwrap();
            }
            for (key, value) in settings {
                store.put_setting(key, (*value).to_owned()).await.unwrap();
            }
        });
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = self
            .runtime
            .block_on(PgStore::drop_database(&self.admin, &self.url));
    }
}
